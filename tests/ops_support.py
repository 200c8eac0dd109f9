"""Shared pieces of the operations tests (cleanup, migration, statistics, backup).

* :func:`populate` fills a storage with one of everything a round trip can lose: revoked and
  rotated tokens, an access-expired token kept for reuse detection, a token without refresh,
  sessions with and without expiry, IPv6, unicode, binary and empty key-value values, audit
  events with and without a user.
* :func:`snapshot` reads a storage back through its batched iterators and
  :func:`assert_same_records` compares two snapshots field by field.
* :func:`storage_config` and the ``aliases`` fixture give the commands real storages under
  ``AUTHFW["STORAGES"]`` aliases.
* :class:`Delegating` wraps a real storage so a test can make one method fail or lie.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

import pytest

from django_authfw import tokens
from django_authfw.records import (
    AuditEvent,
    AuthToken,
    KVEntry,
    SessionData,
    StorageStatistics,
    utcnow,
)
from django_authfw.storage import AuthStorage, get_storage

from .backends import REDIS_TEST_URL, RUN_ID
from .factories import AuthTokenFactory

SHORT = timedelta(milliseconds=300)

# Redis reports a key-value entry's expiry back as "now + remaining TTL".
KV_EXPIRY_TOLERANCE = timedelta(seconds=1)


def wait_past(delta: timedelta = SHORT) -> None:
    time.sleep(delta.total_seconds() + 0.15)


def native_expiry(storage: AuthStorage) -> bool:
    return bool(getattr(storage, "native_expiry", False))


@dataclass
class Dataset:
    """What :func:`populate` stored, by kind and id."""

    tokens: dict[str, AuthToken] = field(default_factory=dict)
    sessions: dict[str, SessionData] = field(default_factory=dict)
    kv: dict[str, KVEntry] = field(default_factory=dict)
    audit: dict[str, AuditEvent] = field(default_factory=dict)
    orphan_token_ids: set[str] = field(default_factory=set)
    orphan_session_ids: set[str] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        return {
            "tokens": len(self.tokens),
            "sessions": len(self.sessions),
            "kv": len(self.kv),
            "audit": len(self.audit),
        }


def populate(
    storage: AuthStorage,
    make_user: Callable[..., str],
    *,
    orphan_user_id: str | None = None,
    scale: int = 1,
) -> Dataset:
    """Store a representative data set; ``scale`` repeats the ordinary records."""
    alice, bob = make_user(), make_user()
    now = utcnow()
    data = Dataset()

    def token(**kwargs: Any) -> AuthToken:
        made = AuthTokenFactory.build(**kwargs)
        storage.store_token(made)
        data.tokens[made.token_id] = made
        return made

    for i in range(scale):
        token(user_id=alice, created_at=now - timedelta(minutes=10, seconds=i))
    rotated = token(user_id=alice, metadata={"client": "app", "nested": {"ünï": [1, 2.5, None]}})
    successor = token(user_id=alice, family_id=rotated.family_id, permissions=[], roles=[])
    storage.revoke_token(rotated.token_id, at=now, replaced_by=successor.token_id)
    data.tokens[rotated.token_id] = storage.get_token(rotated.token_id)  # type: ignore[assignment]
    token(user_id=bob, expires_at=now - timedelta(minutes=5))  # kept for reuse detection
    token(user_id=bob, refresh_digest=None, refresh_expires_at=None, token_type="Bearer")

    def session(**kwargs: Any) -> SessionData:
        values: dict[str, Any] = {
            "session_id": f"s-{uuid.uuid4().hex}",
            "user_id": alice,
            "data": {"cart": [1, 2], "name": "Zoë", "flag": True},
            "created_at": now - timedelta(minutes=3),
            "last_accessed": now - timedelta(minutes=1),
            "expires_at": now + timedelta(hours=2),
            "ip_address": "203.0.113.7",
            "user_agent": "pytest/ops",
        }
        values.update(kwargs)
        made = SessionData(**values)
        storage.store_session(made)
        data.sessions[made.session_id] = made
        return made

    for _ in range(scale):
        session()
    session(user_id=bob, expires_at=None, ip_address="2001:db8::1", data={})
    session(user_id=bob, ip_address=None, user_agent="")

    storage.kv_set("plain", b"hello")
    storage.kv_set("binary", bytes(range(256)))
    storage.kv_set("empty", b"")
    storage.kv_set("ttl", b"counter", ttl=timedelta(hours=1))
    for i in range(scale):
        storage.kv_set(f"bulk:{i}", str(i).encode(), ttl=timedelta(hours=3))
    for batch in storage.iter_kv():
        for entry in batch:
            data.kv[entry.key] = entry

    def event(**kwargs: Any) -> None:
        made = AuditEvent(**kwargs)
        storage.append_audit(made)
        data.audit[made.event_id] = made

    for i in range(scale):
        event(
            action="login",
            outcome=True,
            user_id=alice,
            ip_address="198.51.100.1",
            user_agent="ua",
            created_at=now - timedelta(minutes=30, seconds=i),
            metadata={"i": i},
        )
    event(action="login", outcome=False, metadata={"username": "nobody"}, ip_address="2001:db8::2")
    event(action="revoke", outcome=True, user_id=bob, resource="token:x", created_at=now)

    if orphan_user_id is not None:
        orphan = token(user_id=orphan_user_id)
        data.orphan_token_ids.add(orphan.token_id)
        data.orphan_session_ids.add(session(user_id=orphan_user_id).session_id)
    return data


def add_expiring(storage: AuthStorage, user_id: str, count: int = 2) -> None:
    """Store ``count`` tokens, sessions and key-value entries that expire within SHORT."""
    soon = utcnow() + SHORT
    for i in range(count):
        storage.store_token(
            AuthTokenFactory.build(user_id=user_id, expires_at=soon, refresh_expires_at=soon)
        )
        storage.store_session(
            SessionData(session_id=f"old-{uuid.uuid4().hex}", user_id=user_id, expires_at=soon)
        )
        storage.kv_set(f"old:{i}", b"x", ttl=SHORT)


# Reading back ---------------------------------------------------------------------------------


@dataclass
class Snapshot:
    tokens: dict[str, AuthToken]
    sessions: dict[str, SessionData]
    kv: dict[str, KVEntry]
    audit: dict[str, AuditEvent]
    audit_count: int


def snapshot(storage: AuthStorage) -> Snapshot:
    """Every record of ``storage``, by id (read through ``iter_*``)."""

    def collect(batches: Iterable[list[Any]], key: Callable[[Any], str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for batch in batches:
            for record in batch:
                assert key(record) not in out, f"duplicate record {key(record)!r}"
                out[key(record)] = record
        return out

    audit = [e for batch in storage.iter_audit() for e in batch]
    return Snapshot(
        tokens=collect(storage.iter_tokens(), lambda t: t.token_id),
        sessions=collect(storage.iter_sessions(), lambda s: s.session_id),
        kv=collect(storage.iter_kv(), lambda e: e.key),
        audit={e.event_id: e for e in audit},
        audit_count=len(audit),
    )


def keeps_kv_created_at(*backends: str) -> bool:
    """Whether key-value entries keep their ``created_at`` through all of ``backends``.

    Redis stores a key-value value as the raw bytes (readable with redis-cli) with a native
    TTL and no creation time, so an entry read back from it is dated by the read.
    """
    return not any(name.startswith("redis") for name in backends)


def assert_same_records(
    actual: Snapshot, expected: Snapshot, *, ignore_kv_created_at: bool = False
) -> None:
    """Field-by-field equality; key-value expiries within :data:`KV_EXPIRY_TOLERANCE`, and
    key-value ``created_at`` only where the backends keep it (:func:`keeps_kv_created_at`)."""
    assert actual.tokens == expected.tokens
    assert actual.sessions == expected.sessions
    assert actual.audit == expected.audit
    assert actual.audit_count == len(actual.audit), "duplicate audit events"
    assert actual.kv.keys() == expected.kv.keys()
    for key, want in expected.kv.items():
        got = actual.kv[key]
        assert got.value == want.value, key
        if not ignore_kv_created_at:
            assert got.created_at == want.created_at, key
        if want.expires_at is None:
            assert got.expires_at is None, key
        else:
            assert got.expires_at is not None, key
            assert abs(got.expires_at - want.expires_at) <= KV_EXPIRY_TOLERANCE, key


def record_fields(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def is_empty(storage: AuthStorage) -> bool:
    return all(
        not any(batches)
        for batches in (
            list(storage.iter_tokens()),
            list(storage.iter_sessions()),
            list(storage.iter_kv()),
            list(storage.iter_audit()),
        )
    )


# Storages under aliases, for the commands -----------------------------------------------------


def storage_config(name: str, settings: Any) -> dict[str, Any]:
    """An ``AUTHFW["STORAGES"]`` entry for backend ``name``, with its own cache and prefix."""
    if name == "database":
        return {"BACKEND": "django_authfw.storage.DatabaseStorage"}
    if name == "memory":
        return {"BACKEND": "django_authfw.storage.InMemoryStorage"}
    unique = uuid.uuid4().hex[:10]
    if name in ("redis-cluster", "redis-sentinel"):
        return {"BACKEND": "django_authfw.storage.RedisStorage", "OPTIONS": _server_options(name)}
    cache_alias = f"authfw-ops-{name}-{unique}"
    if name == "locmem":
        cache = {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": cache_alias,
        }
    elif name == "redis":
        cache = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_TEST_URL}
    else:
        raise ValueError(name)
    settings.CACHES = {**settings.CACHES, cache_alias: cache}
    return {
        "BACKEND": "django_authfw.storage.CacheStorage",
        "OPTIONS": {"cache": cache_alias, "key_prefix": f"authfw-test:{RUN_ID}:ops-{unique}:"},
    }


def _server_options(name: str) -> dict[str, Any]:
    """RedisStorage OPTIONS for the servers tests/redis_servers.py starts (as backends.py)."""
    from .redis_servers import ensure_cluster, ensure_sentinel

    common = {
        "key_prefix": f"authfw-ops:{uuid.uuid4().hex[:10]}:",
        "timeout": 2,
        "retry_attempts": 2,
        "retry_delay": 0.05,
    }
    if name == "redis-cluster":
        return {"cluster_mode": True, "cluster_urls": ensure_cluster().urls, **common}
    group = ensure_sentinel()
    return {
        "url": "redis://127.0.0.1/0",
        "master_name": group.master_name,
        "sentinels": group.sentinel_urls,
        "sentinel_password": group.password,
        **common,
    }


@pytest.fixture
def aliases(settings: Any, db: None) -> Iterator[Callable[..., dict[str, AuthStorage]]]:
    """``aliases(a="memory", b={"BACKEND": ...})`` configures AUTHFW["STORAGES"] and returns
    the storages; every one is flushed afterwards."""
    built: list[AuthStorage] = []

    def configure(**wanted: str | dict[str, Any]) -> dict[str, AuthStorage]:
        storages = {
            alias: storage_config(spec, settings) if isinstance(spec, str) else spec
            for alias, spec in wanted.items()
        }
        settings.AUTHFW = {**getattr(settings, "AUTHFW", {}), "STORAGES": storages}
        result = {alias: get_storage(alias) for alias in storages}
        built.extend(result.values())
        return result

    yield configure
    for storage in built:
        with contextlib.suppress(Exception):  # a storage a test broke on purpose
            storage.flush()
        storage.close()


# Wrappers -------------------------------------------------------------------------------------


class Delegating(AuthStorage):
    """Forwards the methods migration, backup and the commands use to ``inner``.

    Subclasses override one of them to fail or to lie, as a broken or interrupted backend
    would.
    """

    def __init__(self, inner: AuthStorage) -> None:
        super().__init__()
        self.inner = inner
        self.alias = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def iter_tokens(self, *, batch_size: int = 1000) -> Iterator[list[AuthToken]]:
        return self.inner.iter_tokens(batch_size=batch_size)

    def iter_sessions(self, *, batch_size: int = 1000) -> Iterator[list[SessionData]]:
        return self.inner.iter_sessions(batch_size=batch_size)

    def iter_kv(self, *, batch_size: int = 1000) -> Iterator[list[KVEntry]]:
        return self.inner.iter_kv(batch_size=batch_size)

    def iter_audit(self, *, batch_size: int = 1000) -> Iterator[list[AuditEvent]]:
        return self.inner.iter_audit(batch_size=batch_size)

    def import_tokens(self, tokens: Iterable[AuthToken]) -> int:
        return self.inner.import_tokens(tokens)

    def import_sessions(self, sessions: Iterable[SessionData]) -> int:
        return self.inner.import_sessions(sessions)

    def import_kv(self, entries: Iterable[KVEntry]) -> int:
        return self.inner.import_kv(entries)

    def import_audit(self, events: Iterable[AuditEvent]) -> int:
        return self.inner.import_audit(events)

    def get_token(self, token_id: str) -> AuthToken | None:
        return self.inner.get_token(token_id)

    def get_session(self, session_id: str) -> SessionData | None:
        return self.inner.get_session(session_id)

    def kv_get(self, key: str) -> bytes | None:
        return self.inner.kv_get(key)

    def query_audit(self, **kwargs: Any) -> list[AuditEvent]:
        return self.inner.query_audit(**kwargs)

    def count_audit(self, **kwargs: Any) -> int:
        return self.inner.count_audit(**kwargs)

    def statistics(self) -> StorageStatistics:
        return self.inner.statistics()

    def flush(self) -> None:
        self.inner.flush()


def raw_token_pair() -> tuple[str, str]:
    """A raw access token and its digest (what a storage holds)."""
    raw = tokens.new_secret(tokens.ACCESS_PREFIX)
    return raw, tokens.digest(raw)
