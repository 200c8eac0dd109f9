"""Security properties of AuthFramework on every backend: bad input changes nothing, equal
hashing work for unknown users, no raw secret stored or logged, unaudited logins refused."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import connection

from django_authfw import AuthFramework
from django_authfw.exceptions import AuthError, InvalidCredentials, InvalidInput, StorageUnavailable
from django_authfw.models import AuditLog, KVEntry, Session, Token
from django_authfw.storage import AuthStorage, CacheStorage, DatabaseStorage, RedisStorage

from .factories import UserFactory
from .framework_support import (  # noqa: F401  (fixtures are used by name)
    CLIENT,
    PASSWORD,
    all_records,
    auth_fixture,
    counting_hasher_fixture,
    db_audit_fixture,
)

User = get_user_model()

BAD_VALUES: list[Any] = ["", "x" * 256, "a\x00b", 42, None, b"bytes"]
BAD_PASSWORDS: list[Any] = ["", "p" * 256, "pass\x00word", 42, None, b"password"]


def dead_storage() -> RedisStorage:
    """A real Redis client pointed at a closed loopback port: every call fails."""
    return RedisStorage(
        url="redis://127.0.0.1:1/0", timeout=0.2, retry_attempts=1, retry_delay=0.01
    )


# Bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [(bad, PASSWORD) for bad in BAD_VALUES] + [("alice", bad) for bad in BAD_PASSWORDS],
    ids=[f"username-{i}" for i in range(len(BAD_VALUES))]
    + [f"password-{i}" for i in range(len(BAD_PASSWORDS))],
)
def test_bad_credentials_input_writes_nothing(
    auth: AuthFramework,
    storage: AuthStorage,
    db_audit: DatabaseStorage,
    counting_hasher: Any,
    username: Any,
    password: Any,
) -> None:
    UserFactory.create(username="alice", password=PASSWORD)
    counting_hasher.reset()
    calls: list[Callable[[], Any]] = [
        lambda: auth.register_user(username, password),
        lambda: auth.authenticate(username, password, request_info=CLIENT),
        lambda: async_to_sync(auth.aregister_user)(username, password),
        lambda: async_to_sync(auth.aauthenticate)(username, password),
    ]
    for call in calls:
        with pytest.raises(InvalidInput) as caught:
            call()
        assert isinstance(caught.value, ValueError)
        message = str(caught.value)
        assert "must" in message  # says what to do
        if isinstance(password, str) and len(password) > 1 and password != PASSWORD:
            assert password not in message
            assert password[:8] not in message
    # Nothing hashed, nothing written: no user, no token, no counter, no audit row.
    assert counting_hasher.calls == 0
    assert list(User.objects.values_list("username", flat=True)) == ["alice"]
    assert all_records(storage) == []
    assert db_audit.count_audit() == 0


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_bad_user_references_are_refused(
    auth: AuthFramework, storage: AuthStorage, bad: Any
) -> None:
    for call in (
        auth.revoke_user_tokens,
        auth.list_sessions,
        auth.end_user_sessions,
        auth.create_session,
    ):
        with pytest.raises(InvalidInput):
            call(bad)
    with pytest.raises(InvalidInput):
        auth.lockout_remaining(bad, None) if bad is not None else auth.reset_lockout(username=bad)
    assert all_records(storage) == []


def test_request_info_validation() -> None:
    from django.test import RequestFactory

    from django_authfw.request_info import MAX_USER_AGENT_LENGTH, RequestInfo

    with pytest.raises(InvalidInput, match="IPv4 or IPv6"):
        RequestInfo(ip_address="localhost")
    assert RequestInfo(ip_address="fe80::1%eth0").ip_address == "fe80::1"
    info = RequestInfo(user_agent="a\x00b" + "x" * 1000)
    assert "\x00" not in info.user_agent
    assert len(info.user_agent) == MAX_USER_AGENT_LENGTH
    request = RequestFactory().get("/", REMOTE_ADDR="not-an-ip", HTTP_USER_AGENT="ua/1")
    assert RequestInfo.from_request(request) == RequestInfo(None, "ua/1")
    request = RequestFactory().get("/", REMOTE_ADDR="2001:db8::5")
    assert RequestInfo.from_request(request).ip_address == "2001:db8::5"


# Equal work -----------------------------------------------------------------------------------


def test_unknown_user_costs_the_same_hashing_as_a_wrong_password(
    auth: AuthFramework, counting_hasher: Any
) -> None:
    auth.register_user("alice", PASSWORD)
    auth.register_user("carol", PASSWORD)
    User.objects.filter(username="carol").update(is_active=False)
    sso = auth.register_user("sso", PASSWORD)
    sso.set_unusable_password()
    sso.save()

    attempts = {
        "wrong_password": ("alice", "wrong password"),
        "unknown_user": ("nobody", "wrong password"),
        "inactive": ("carol", PASSWORD),
        "unusable_password": ("sso", "anything"),
        "success": ("alice", PASSWORD),
    }

    def cost(call: Callable[[str, str], Any], username: str, password: str) -> int:
        counting_hasher.reset()
        with contextlib.suppress(InvalidCredentials):
            call(username, password)
        return int(counting_hasher.calls)

    sync_costs = {name: cost(auth.authenticate, *args) for name, args in attempts.items()}
    async_costs = {
        name: cost(async_to_sync(auth.aauthenticate), *args) for name, args in attempts.items()
    }
    assert sync_costs == dict.fromkeys(attempts, 1)
    assert async_costs == sync_costs


def test_too_long_password_is_refused_before_hashing(
    auth: AuthFramework, counting_hasher: Any
) -> None:
    auth.register_user("alice", PASSWORD)
    counting_hasher.reset()
    with pytest.raises(InvalidInput, match="at most 255 characters"):
        auth.authenticate("alice", "p" * 1_000_000)
    assert counting_hasher.calls == 0


# No raw secrets -------------------------------------------------------------------------------


def _raw_store_dump(storage: AuthStorage) -> str:
    """Everything the backend holds, as its service stores it."""
    if isinstance(storage, DatabaseStorage):
        rows = [
            repr(list(model.objects.values_list())) for model in (Token, Session, KVEntry, AuditLog)
        ]
        return "\n".join(rows)
    if isinstance(storage, CacheStorage) and storage.cache_alias:
        from django.core.cache import caches

        backend = caches[storage.cache_alias]
        if type(backend).__module__.startswith("django_redis"):
            import redis
            from django_redis import get_redis_connection

            client: redis.Redis = get_redis_connection(storage.cache_alias)
            parts = []
            readers: dict[str, Callable[[bytes], object]] = {
                "string": lambda k: client.get(k),
                "set": lambda k: client.smembers(k),
                "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
                "hash": lambda k: client.hgetall(k),
                "list": lambda k: client.lrange(k, 0, -1),
            }
            for key in client.scan_iter(match=f"{storage.key_prefix}*", count=1000):
                kind = client.type(key)  # bytes: the client does not decode replies
                reader = readers.get(kind.decode() if isinstance(kind, bytes) else kind)
                value = reader(key) if reader is not None else b""
                parts.append(f"{key!r} {value!r}")
            assert parts, "the Redis dump found nothing: the scan pattern is wrong"
            return "\n".join(parts)
    return ""


def test_no_raw_secret_is_stored_logged_or_shown(
    auth: AuthFramework,
    storage: AuthStorage,
    db_audit: DatabaseStorage,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    settings.DEBUG = True  # Django then logs every SQL statement with its parameters
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_THRESHOLD": 2}
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")  # "django" is at INFO
    wrong_password = "not the right password at all"
    secrets: list[str] = [PASSWORD, wrong_password]
    messages: list[str] = []

    def expect_error(call: Callable[[], Any]) -> None:
        with pytest.raises(AuthError) as caught:
            call()
        messages.append(str(caught.value))
        messages.append(repr(caught.value))

    auth.register_user("alice", PASSWORD, request_info=CLIENT)
    first = auth.authenticate("alice", PASSWORD, request_info=CLIENT)
    second = auth.refresh(first.refresh_token or "", request_info=CLIENT)
    messages.append(repr(first))
    secrets += [first.access_token, first.refresh_token or "", second.access_token]
    secrets.append(second.refresh_token or "")
    expect_error(lambda: auth.verify_token(first.access_token))
    expect_error(lambda: auth.refresh(first.refresh_token or ""))  # reuse: family revoked
    expect_error(lambda: auth.verify_token(second.access_token))
    third = auth.authenticate("alice", PASSWORD)
    secrets += [third.access_token, third.refresh_token or ""]
    auth.introspect(third.access_token)
    auth.revoke_token(third.refresh_token or "")
    expect_error(lambda: auth.refresh(third.refresh_token or ""))
    expect_error(lambda: auth.authenticate("alice", wrong_password, request_info=CLIENT))
    expect_error(lambda: auth.authenticate("alice", wrong_password, request_info=CLIENT))
    expect_error(lambda: auth.authenticate("alice", PASSWORD, request_info=CLIENT))  # locked
    session = auth.create_session("alice", {"theme": "dark"}, request_info=CLIENT)
    auth.end_session(session.session_id)
    for bad in ("", "x" * 300):
        expect_error(partial(auth.verify_token, bad))
    expect_error(lambda: auth.authenticate("alice", "pass\x00word"))

    logged = [
        f"{record.name} {record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    ]
    assert any("SELECT" in line for line in logged), "SQL logging should have been captured"
    places = {
        "log records": "\n".join(logged),
        "exception messages": "\n".join(messages),
        "stored records": "\n".join(repr(r) for r in all_records(storage)),
        "raw store": _raw_store_dump(storage),
        "database audit table": repr(list(AuditLog.objects.values_list())),
        "database tokens": repr(list(Token.objects.values_list())),
    }
    assert places["stored records"]
    assert places["exception messages"]
    for secret in secrets:
        assert secret
        for where, text in places.items():
            assert secret not in text, f"a raw secret leaked into {where}"
            # Not even the random part without its prefix.
            if secret.startswith("afw_"):
                assert secret[7:] not in text, f"a token's secret part leaked into {where}"
    assert connection.vendor  # the database was used throughout


# Audit failures -------------------------------------------------------------------------------


def test_an_unaudited_login_is_refused(
    storage: AuthStorage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="django_authfw.audit")
    working = AuthFramework(storage=storage, audit_storage=storage)
    blind = AuthFramework(storage=storage, audit_storage=dead_storage())
    working.register_user("alice", PASSWORD)
    issued = working.authenticate("alice", PASSWORD)
    tokens_before = storage.statistics()["total_tokens"]

    with pytest.raises(StorageUnavailable, match="could not record the 'login' event"):
        blind.authenticate("alice", PASSWORD)
    with pytest.raises(StorageUnavailable, match="could not record the 'login' event"):
        async_to_sync(blind.aauthenticate)("alice", PASSWORD)
    with pytest.raises(StorageUnavailable, match="could not record the 'refresh' event"):
        blind.refresh(issued.refresh_token or "")
    # The tokens minted for those calls were withdrawn, so nothing usable was left behind.
    assert storage.statistics()["total_tokens"] == tokens_before
    with pytest.raises(StorageUnavailable, match="'register'"):
        blind.register_user("bob", PASSWORD)
    assert not User.objects.filter(username="bob").exists()
    with pytest.raises(StorageUnavailable):
        blind.authenticate("alice", "wrong password")  # failures are not dropped silently either

    errors = [r for r in caplog.records if r.name == "django_authfw.audit"]
    assert len(errors) >= 5
    assert all(r.levelno == logging.ERROR for r in errors)
    assert all(PASSWORD not in r.getMessage() for r in errors)
