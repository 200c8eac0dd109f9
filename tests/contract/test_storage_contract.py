"""The storage contract, written once and run against every backend (like Django's
SessionTestsMixin). See :mod:`django_authfw.storage.base` for the rules tested here."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync

from django_authfw.exceptions import InvalidInput
from django_authfw.records import AuditEvent, KVEntry, SessionData, replace, utcnow
from django_authfw.storage import AuthStorage

from ..factories import AuthTokenFactory

SHORT = timedelta(milliseconds=300)


def wait_past(moment_delta: timedelta = SHORT) -> None:
    time.sleep(moment_delta.total_seconds() + 0.1)


def expected_cleanup(storage: AuthStorage, removed: int) -> int:
    """Backends with native expiry (Redis TTLs) drop records themselves; cleanup finds none."""
    return 0 if getattr(storage, "native_expiry", False) else removed


# Tokens ---------------------------------------------------------------------------------------


def test_store_and_get_token_round_trip(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    token = AuthTokenFactory(user_id=make_user())
    storage.store_token(token)
    assert storage.get_token(token.token_id) == token
    assert storage.get_token_by_access(token.access_digest) == token
    assert token.refresh_digest is not None
    assert storage.get_token_by_refresh(token.refresh_digest) == token


def test_unknown_token_lookups_give_none(storage: AuthStorage) -> None:
    assert storage.get_token("no-such-token") is None
    assert storage.get_token_by_access("0" * 64) is None
    assert storage.get_token_by_refresh("0" * 64) is None


def test_token_without_refresh(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    token = AuthTokenFactory(user_id=make_user(), refresh_digest=None, refresh_expires_at=None)
    storage.store_token(token)
    assert storage.get_token_by_access(token.access_digest) == token


def test_access_expired_token_is_kept_until_refresh_expires(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    now = utcnow()
    token = AuthTokenFactory(user_id=make_user(), expires_at=now - timedelta(minutes=1))
    storage.store_token(token)
    found = storage.get_token_by_access(token.access_digest)
    assert found is not None and found.is_expired()
    assert storage.list_user_tokens(token.user_id) == [token]


def test_token_past_retain_until_is_invisible(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    user = make_user()  # before ``now``: hashing its password may take longer than SHORT
    now = utcnow()
    token = AuthTokenFactory(user_id=user, expires_at=now + SHORT, refresh_expires_at=now + SHORT)
    storage.store_token(token)
    assert storage.get_token(token.token_id) == token
    wait_past()
    assert storage.get_token(token.token_id) is None
    assert storage.get_token_by_access(token.access_digest) is None
    assert token.refresh_digest is not None
    assert storage.get_token_by_refresh(token.refresh_digest) is None
    assert storage.list_user_tokens(token.user_id) == []


def test_update_token(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    token = AuthTokenFactory(user_id=make_user())
    storage.store_token(token)
    changed = replace(token, metadata={"note": "changed"}, permissions=[], updated_at=utcnow())
    assert storage.update_token(changed) is True
    assert storage.get_token(token.token_id) == changed
    assert storage.get_token_by_access(token.access_digest) == changed
    missing = AuthTokenFactory(user_id=token.user_id)
    assert storage.update_token(missing) is False
    assert storage.get_token(missing.token_id) is None


def test_revoke_token_once(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    token = AuthTokenFactory(user_id=make_user())
    storage.store_token(token)
    at = utcnow()
    assert storage.revoke_token(token.token_id, at=at, replaced_by="next-id") is True
    assert storage.revoke_token(token.token_id, at=utcnow()) is False
    stored = storage.get_token_by_access(token.access_digest)
    assert stored is not None
    assert stored.revoked_at == at
    assert stored.replaced_by == "next-id"
    assert storage.revoke_token("no-such-token", at=at) is False


def test_revoke_user_tokens(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    alice, bob = make_user(), make_user()
    family = "family-1"
    a1 = AuthTokenFactory(user_id=alice, family_id=family)
    a2 = AuthTokenFactory(user_id=alice, family_id=family)
    a3 = AuthTokenFactory(user_id=alice)
    b1 = AuthTokenFactory(user_id=bob, family_id=family)
    for token in (a1, a2, a3, b1):
        storage.store_token(token)
    at = utcnow()
    assert storage.revoke_user_tokens(alice, at=at, family_id=family) == 2
    assert storage.get_token(a3.token_id).revoked_at is None  # type: ignore[union-attr]
    assert storage.revoke_user_tokens(alice, at=at) == 1
    assert storage.revoke_user_tokens(alice, at=at) == 0
    assert all(t.revoked_at == at for t in storage.list_user_tokens(alice))
    assert storage.get_token(b1.token_id).revoked_at is None  # type: ignore[union-attr]


def test_delete_token(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    token = AuthTokenFactory(user_id=make_user())
    storage.store_token(token)
    assert storage.delete_token(token.token_id) is True
    assert storage.delete_token(token.token_id) is False
    assert storage.get_token(token.token_id) is None
    assert storage.get_token_by_access(token.access_digest) is None
    assert storage.list_user_tokens(token.user_id) == []


def test_list_and_delete_user_tokens(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    alice, bob = make_user(), make_user()
    start = utcnow()
    alices = [
        AuthTokenFactory(user_id=alice, created_at=start + timedelta(seconds=i)) for i in range(3)
    ]
    bobs = AuthTokenFactory(user_id=bob)
    for token in [*reversed(alices), bobs]:
        storage.store_token(token)
    assert storage.list_user_tokens(alice) == alices
    assert storage.list_user_tokens("999999") == []
    assert storage.delete_user_tokens(alice) == 3
    assert storage.list_user_tokens(alice) == []
    assert storage.get_token_by_access(alices[0].access_digest) is None
    assert storage.list_user_tokens(bob) == [bobs]


def test_cleanup_expired_tokens(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    user = make_user()
    now = utcnow()
    live = AuthTokenFactory(user_id=user)
    refresh_alive = AuthTokenFactory(user_id=user, expires_at=now - timedelta(seconds=1))
    soon = [
        AuthTokenFactory(user_id=user, expires_at=now + SHORT, refresh_expires_at=now + SHORT)
        for _ in range(3)
    ]
    for token in [live, refresh_alive, *soon]:
        storage.store_token(token)
    wait_past()
    assert storage.cleanup_expired_tokens(dry_run=True) == expected_cleanup(storage, 3)
    assert storage.cleanup_expired_tokens(batch_size=2) == expected_cleanup(storage, 3)
    assert storage.cleanup_expired_tokens() == 0
    assert {t.token_id for batch in storage.iter_tokens() for t in batch} == {
        live.token_id,
        refresh_alive.token_id,
    }
    assert storage.list_user_tokens(user) == sorted(
        [live, refresh_alive], key=lambda t: t.created_at
    )


# Sessions -------------------------------------------------------------------------------------


def make_session(user_id: str, **kwargs: object) -> SessionData:
    fields: dict[str, object] = {
        "session_id": f"s-{time.monotonic_ns()}",
        "user_id": user_id,
        "data": {"cart": [1, 2], "theme": "dark"},
        "expires_at": utcnow() + timedelta(hours=1),
        "ip_address": "203.0.113.7",
        "user_agent": "pytest",
    }
    fields.update(kwargs)
    return SessionData(**fields)  # type: ignore[arg-type]


def test_session_round_trip(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    session = make_session(make_user())
    storage.store_session(session)
    assert storage.get_session(session.session_id) == session
    assert storage.get_session("no-such-session") is None
    changed = replace(session, data={"theme": "light"})
    storage.store_session(changed)
    assert storage.get_session(session.session_id) == changed


def test_session_without_expiry_and_ipv6(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    session = make_session(make_user(), expires_at=None, ip_address="2001:db8::1")
    storage.store_session(session)
    assert storage.get_session(session.session_id) == session


def test_expired_session_is_invisible(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    user = make_user()
    session = make_session(user, expires_at=utcnow() + SHORT)
    storage.store_session(session)
    assert storage.count_active_sessions() == 1
    wait_past()
    assert storage.get_session(session.session_id) is None
    assert storage.list_user_sessions(user) == []
    assert storage.count_active_sessions() == 0
    assert storage.touch_session(session.session_id, at=utcnow()) is False


def test_touch_session(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    session = make_session(make_user())
    storage.store_session(session)
    at = utcnow() + timedelta(seconds=5)
    new_expiry = utcnow() + timedelta(hours=2)
    assert storage.touch_session(session.session_id, at=at, expires_at=new_expiry) is True
    touched = storage.get_session(session.session_id)
    assert touched is not None
    assert touched.last_accessed == at
    assert touched.expires_at == new_expiry
    assert touched.data == session.data
    later = at + timedelta(seconds=5)
    assert storage.touch_session(session.session_id, at=later) is True
    again = storage.get_session(session.session_id)
    assert again is not None and again.last_accessed == later
    assert again.expires_at == new_expiry
    assert storage.touch_session("no-such-session", at=at) is False


def test_user_sessions(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    alice, bob = make_user(), make_user()
    start = utcnow()
    alices = [make_session(alice, created_at=start + timedelta(seconds=i)) for i in range(3)]
    bobs = make_session(bob)
    for session in [*reversed(alices), bobs]:
        storage.store_session(session)
    assert storage.list_user_sessions(alice) == alices
    assert storage.count_active_sessions() == 4
    assert storage.delete_session(alices[0].session_id) is True
    assert storage.delete_session(alices[0].session_id) is False
    assert storage.delete_user_sessions(alice) == 2
    assert storage.list_user_sessions(alice) == []
    assert storage.list_user_sessions(bob) == [bobs]


def test_cleanup_expired_sessions(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    user = make_user()
    keep = make_session(user)
    for i in range(3):
        storage.store_session(
            make_session(user, session_id=f"old-{i}", expires_at=utcnow() + SHORT)
        )
    storage.store_session(keep)
    wait_past()
    assert storage.cleanup_expired_sessions(dry_run=True) == expected_cleanup(storage, 3)
    assert storage.cleanup_expired_sessions(batch_size=2) == expected_cleanup(storage, 3)
    assert storage.cleanup_expired_sessions() == 0
    assert [s for batch in storage.iter_sessions() for s in batch] == [keep]


# Key-value ------------------------------------------------------------------------------------


def test_kv_round_trip(storage: AuthStorage) -> None:
    storage.kv_set("greeting", b"hello")
    storage.kv_set("binary", bytes(range(256)))
    assert storage.kv_get("greeting") == b"hello"
    assert storage.kv_get("binary") == bytes(range(256))
    storage.kv_set("greeting", b"")
    assert storage.kv_get("greeting") == b""
    assert storage.kv_get("missing") is None
    assert storage.kv_delete("greeting") is True
    assert storage.kv_delete("greeting") is False
    assert storage.kv_get("greeting") is None


def test_kv_ttl(storage: AuthStorage) -> None:
    storage.kv_set("short", b"1", ttl=SHORT)
    storage.kv_set("forever", b"2")
    assert storage.kv_get("short") == b"1"
    wait_past()
    assert storage.kv_get("short") is None
    assert storage.kv_get("forever") == b"2"
    assert storage.cleanup_expired_kv() == expected_cleanup(storage, 1)
    assert [e.key for batch in storage.iter_kv() for e in batch] == ["forever"]


def test_kv_incr(storage: AuthStorage) -> None:
    assert storage.kv_incr("fails", ttl=SHORT) == 1
    assert storage.kv_incr("fails", ttl=timedelta(hours=1)) == 2
    assert storage.kv_get("fails") == b"2"
    wait_past()  # the first ttl holds: a fixed window
    assert storage.kv_get("fails") is None
    assert storage.kv_incr("fails", ttl=timedelta(hours=1)) == 1
    assert storage.kv_incr("plain") == 1


# Audit ----------------------------------------------------------------------------------------


def test_audit_append_query_count(storage: AuthStorage) -> None:
    start = utcnow() - timedelta(minutes=10)
    events = [
        AuditEvent(
            action="login" if i % 2 else "register",
            outcome=i % 3 != 0,
            user_id=str(i % 2),
            ip_address="198.51.100.1" if i % 2 else "2001:db8::2",
            user_agent="ua",
            created_at=start + timedelta(minutes=i),
            metadata={"i": i},
        )
        for i in range(6)
    ]
    for event in events:
        storage.append_audit(event)
    newest_first = list(reversed(events))
    assert storage.query_audit() == newest_first
    assert storage.query_audit(limit=2) == newest_first[:2]
    assert storage.query_audit(limit=2, offset=2) == newest_first[2:4]
    assert storage.query_audit(action="login") == [e for e in newest_first if e.action == "login"]
    assert storage.query_audit(user_id="0", outcome=False) == [
        e for e in newest_first if e.user_id == "0" and not e.outcome
    ]
    since, until = start + timedelta(minutes=2), start + timedelta(minutes=4)
    assert storage.query_audit(since=since, until=until) == [events[3], events[2]]
    assert storage.count_audit() == 6
    assert storage.count_audit(action="login", outcome=True) == 2
    assert storage.delete_audit_before(start + timedelta(minutes=3)) == 3
    assert storage.count_audit() == 3


# Iteration, import, statistics, flush ----------------------------------------------------------


def test_iterate_in_batches_and_import(
    storage: AuthStorage, other_storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    user = make_user()
    tokens = [AuthTokenFactory(user_id=user) for _ in range(25)]
    for token in tokens:
        storage.store_token(token)
    sessions = [make_session(user, session_id=f"s{i}") for i in range(12)]
    for session in sessions:
        storage.store_session(session)
    storage.kv_set("k1", b"v1")
    storage.kv_set("k2", b"v2", ttl=timedelta(hours=1))
    events = [AuditEvent(action="login", outcome=True, user_id=user) for _ in range(7)]
    for event in events:
        storage.append_audit(event)

    token_batches = list(storage.iter_tokens(batch_size=10))
    assert all(0 < len(batch) <= 10 for batch in token_batches)
    copied = [t for batch in token_batches for t in batch]
    assert sorted(t.token_id for t in copied) == sorted(t.token_id for t in tokens)
    session_batches = list(storage.iter_sessions(batch_size=5))
    assert all(0 < len(batch) <= 5 for batch in session_batches)
    kv = [e for batch in storage.iter_kv(batch_size=1) for e in batch]
    audit = [e for batch in storage.iter_audit(batch_size=3) for e in batch]
    assert audit == events  # oldest first

    for _ in range(2):  # a second import changes nothing
        assert other_storage.import_tokens(copied) == 25
        other_storage.import_sessions([s for b in session_batches for s in b])
        other_storage.import_kv(kv)
        other_storage.import_audit(audit)
    for token in tokens:
        assert other_storage.get_token_by_access(token.access_digest) == token
    assert other_storage.list_user_tokens(user) == storage.list_user_tokens(user)
    assert other_storage.list_user_sessions(user) == storage.list_user_sessions(user)
    assert other_storage.kv_get("k2") == b"v2"
    assert {e.key: e.expires_at for e in kv}["k1"] is None
    assert other_storage.count_audit() == 7
    assert other_storage.import_audit(audit) == 0


def test_statistics(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    user = make_user()
    live = AuthTokenFactory(user_id=user)
    revoked = AuthTokenFactory(user_id=user)
    access_expired = AuthTokenFactory(user_id=user, expires_at=utcnow() - timedelta(seconds=1))
    for token in (live, revoked, access_expired):
        storage.store_token(token)
    storage.revoke_token(revoked.token_id, at=utcnow())
    storage.store_session(make_session(user))
    storage.kv_set("a", b"1")
    storage.append_audit(AuditEvent(action="login", outcome=True))
    stats = storage.statistics()
    assert stats["total_tokens"] == 3
    assert stats["active_tokens"] == 1
    assert stats["revoked_tokens"] == 1
    assert stats["expired_tokens"] == 1
    assert stats["active_sessions"] == 1
    assert stats["kv_entries"] == 1
    assert stats["audit_events"] == 1
    assert isinstance(stats["backend"], str) and stats["backend"]


def test_flush(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    user = make_user()
    token = AuthTokenFactory(user_id=user)
    storage.store_token(token)
    storage.store_session(make_session(user))
    storage.kv_set("a", b"1")
    storage.append_audit(AuditEvent(action="login", outcome=True))
    storage.flush()
    assert storage.get_token_by_access(token.access_digest) is None
    assert storage.list_user_tokens(user) == []
    assert storage.count_active_sessions() == 0
    assert storage.kv_get("a") is None
    assert storage.count_audit() == 0


# Bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "x" * 256, "a\x00b", 42, None, b"bytes"])
def test_bad_ids_are_refused_and_change_nothing(storage: AuthStorage, bad: object) -> None:
    with pytest.raises(InvalidInput):
        storage.kv_set(bad, b"v")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        storage.kv_get(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        storage.get_token(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        storage.get_session(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        storage.store_session(make_session("1", session_id=bad))
    assert storage.count_active_sessions() == 0
    assert list(storage.iter_kv()) == []


def test_kv_value_must_be_bytes(storage: AuthStorage) -> None:
    with pytest.raises(InvalidInput):
        storage.kv_set("k", "text")  # type: ignore[arg-type]
    assert storage.kv_get("k") is None


# Async twins ----------------------------------------------------------------------------------


def test_async_twins(storage: AuthStorage, make_user: Callable[..., str]) -> None:
    user = make_user()
    token = AuthTokenFactory(user_id=user)

    async def scenario() -> None:
        await storage.astore_token(token)
        assert await storage.aget_token_by_access(token.access_digest) == token
        assert await storage.alist_user_tokens(user) == [token]
        assert await storage.arevoke_token(token.token_id, at=utcnow()) is True
        await storage.akv_set("k", b"v", ttl=timedelta(minutes=1))
        assert await storage.akv_get("k") == b"v"
        session = make_session(user)
        await storage.astore_session(session)
        assert await storage.aget_session(session.session_id) == session
        await storage.aappend_audit(AuditEvent(action="login", outcome=False))
        assert await storage.acount_audit(outcome=False) == 1
        batches = [batch async for batch in storage.aiter_tokens(batch_size=10)]
        assert [t.token_id for b in batches for t in b] == [token.token_id]
        assert (await storage.astatistics())["total_tokens"] == 1

    async_to_sync(scenario)()


def test_kv_entry_iteration_carries_expiry(storage: AuthStorage) -> None:
    storage.kv_set("ttl", b"x", ttl=timedelta(hours=1))
    entries = [e for batch in storage.iter_kv() for e in batch]
    assert len(entries) == 1 and isinstance(entries[0], KVEntry)
    expires = entries[0].expires_at
    assert expires is not None
    assert abs((expires - utcnow()) - timedelta(hours=1)) < timedelta(seconds=5)
