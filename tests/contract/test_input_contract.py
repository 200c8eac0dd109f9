"""What every backend accepts and refuses: the same answer everywhere (issue 11).

Each call here once gave different answers on different backends (the database refused what
the in-memory and cache stores took), so a record stored in one could fail to migrate into
another. :class:`~django_authfw.storage.AuthStorage` now checks every argument once, with
:mod:`django_authfw.validate`, before any backend sees it. A refused call changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync

from django_authfw.exceptions import InvalidInput
from django_authfw.records import AuditEvent, KVEntry, SessionData, utcnow
from django_authfw.storage import AuthStorage

from ..factories import AuthTokenFactory

# kv_set with a number of seconds ------------------------------------------------------------
# Refused everywhere, not read as seconds: the contract's type is timedelta, the facade
# (AuthFramework.kv_set) never took numbers, and code passing 5 worked on the cache backends
# only to fail once the project moved to the database.


@pytest.mark.parametrize("ttl", [5, 2.5, True])
def test_kv_set_refuses_a_number_as_ttl(storage: AuthStorage, ttl: object) -> None:
    with pytest.raises(InvalidInput, match="timedelta"):
        storage.kv_set("k", b"v", ttl)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="timedelta"):
        storage.kv_incr("n", ttl)  # type: ignore[arg-type]
    assert storage.kv_get("k") is None
    assert storage.kv_get("n") is None


def test_async_kv_set_refuses_a_number_as_ttl(storage: AuthStorage) -> None:
    with pytest.raises(InvalidInput, match="timedelta"):
        async_to_sync(storage.akv_set)("k", b"v", 5)  # type: ignore[arg-type]
    assert storage.kv_get("k") is None


# kv_set with a TTL that is already over -----------------------------------------------------


@pytest.mark.parametrize("ttl", [timedelta(seconds=-5), timedelta(0)])
def test_kv_set_refuses_a_ttl_already_over_and_keeps_the_entry(
    storage: AuthStorage, ttl: timedelta
) -> None:
    storage.kv_set("k", b"before")
    with pytest.raises(InvalidInput, match="positive timedelta"):
        storage.kv_set("k", b"after", ttl)
    with pytest.raises(InvalidInput, match="positive timedelta"):
        storage.kv_incr("n", ttl)
    assert storage.kv_get("k") == b"before"
    assert storage.kv_get("n") is None


# A value that is not bytes ------------------------------------------------------------------


@pytest.mark.parametrize("value", [bytearray(b"v"), memoryview(b"v"), "v"])
def test_kv_set_refuses_a_value_that_is_not_bytes(storage: AuthStorage, value: object) -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        storage.kv_set("k", value)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="must be bytes"):
        storage.import_kv([KVEntry(key="k", value=value)])  # type: ignore[arg-type]
    assert storage.kv_get("k") is None


# A session's address ------------------------------------------------------------------------


def test_session_with_a_malformed_address_is_refused(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    session = SessionData(session_id="s1", user_id=make_user(), ip_address="not-an-ip")
    with pytest.raises(InvalidInput, match="ip_address"):
        storage.store_session(session)
    with pytest.raises(InvalidInput, match="ip_address"):
        storage.import_sessions([session])
    assert storage.get_session("s1") is None


def test_session_address_is_stored_in_canonical_form(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    # PostgreSQL's inet returns the canonical spelling; every backend now stores that one.
    user_id = make_user()
    storage.store_session(SessionData(session_id="s1", user_id=user_id, ip_address="2001:DB8::01"))
    stored = storage.get_session("s1")
    assert stored is not None
    assert stored.ip_address == "2001:db8::1"


def test_audit_event_with_a_malformed_address_is_refused(storage: AuthStorage) -> None:
    with pytest.raises(InvalidInput, match="ip_address"):
        storage.append_audit(AuditEvent(action="login", outcome=True, ip_address="999.1.1.1"))
    assert storage.count_audit() == 0


# kv_incr on a value that is not a canonical integer ----------------------------------------


@pytest.mark.parametrize("stored", [b"03", b" 3", b"+3", b"3 ", b"-0", b"1.0", b"three"])
def test_kv_incr_refuses_a_value_that_is_not_a_canonical_integer(
    storage: AuthStorage, stored: bytes
) -> None:
    storage.kv_set("n", stored)
    with pytest.raises(InvalidInput, match="not an integer counter"):
        storage.kv_incr("n")
    assert storage.kv_get("n") == stored


@pytest.mark.parametrize(("stored", "result"), [(b"0", 1), (b"41", 42), (b"-3", -2)])
def test_kv_incr_counts_on_from_a_canonical_integer(
    storage: AuthStorage, stored: bytes, result: int
) -> None:
    storage.kv_set("n", stored)
    assert storage.kv_incr("n") == result
    assert storage.kv_get("n") == str(result).encode()


# Audit filters no event can match ----------------------------------------------------------


def test_query_audit_refuses_an_action_longer_than_any_event_holds(storage: AuthStorage) -> None:
    with pytest.raises(InvalidInput, match="action"):
        storage.query_audit(action="x" * 200)
    with pytest.raises(InvalidInput, match="action"):
        storage.count_audit(action="x" * 101)
    assert storage.query_audit(action="x" * 100) == []
    assert storage.count_audit(action="x" * 100) == 0


def test_audit_event_with_an_action_longer_than_100_is_refused(storage: AuthStorage) -> None:
    with pytest.raises(InvalidInput, match="action"):
        storage.append_audit(AuditEvent(action="x" * 101, outcome=True))
    assert storage.count_audit() == 0


# Tokens: the database's rules, now everyone's ------------------------------------------------


def test_token_with_a_raw_secret_for_a_digest_is_refused(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    token = AuthTokenFactory.build(user_id=make_user(), access_digest="afw_at_raw-secret")
    with pytest.raises(InvalidInput, match="digest"):
        storage.store_token(token)
    assert storage.get_token(token.token_id) is None


def test_lookup_by_a_value_that_cannot_be_a_digest_gives_none(storage: AuthStorage) -> None:
    assert storage.get_token_by_access("") is None
    assert storage.get_token_by_refresh("not a digest") is None
    with pytest.raises(InvalidInput):
        storage.get_token_by_access(None)  # type: ignore[arg-type]


def test_touch_session_refuses_a_naive_time(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    storage.store_session(SessionData(session_id="s1", user_id=make_user()))
    with pytest.raises(InvalidInput, match="timezone-aware"):
        storage.touch_session("s1", at=utcnow().replace(tzinfo=None))
