"""CacheStorage, InMemoryStorage and RedisStorage beyond the shared contract: the Redis key
layout and TTLs as ``redis-cli`` sees them, the commands sent (no KEYS, one round trip to
verify), concurrency, failures, the in-memory sweep thread and the cache system checks.

Redis-facing tests run against real servers: the shared one at 127.0.0.1:6379 (db 15, a prefix
of their own) and, where every command must be observed or the server must misbehave, a
private ``redis-server`` started on a loopback port of the test range.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.core.checks import Error, Warning
from django.test import override_settings

from django_authfw import cache_checks, tokens
from django_authfw.exceptions import (
    CredentialsRefused,
    InvalidInput,
    StorageError,
    StorageUnavailable,
)
from django_authfw.records import AuditEvent, AuthToken, KVEntry, SessionData, replace, utcnow
from django_authfw.storage import AuthStorage, CacheStorage, InMemoryStorage, RedisStorage, codec
from django_authfw.storage.cache import EngineStorage

from .backends import REDIS_TEST_URL, RUN_ID
from .factories import AuthTokenFactory
from .redis_servers import (
    CLUSTER_PORTS,
    HOST,
    ServerProcess,
    connections_received,
    free_block,
    private_server,
    start_server,
)

TTL_SLACK_MS = 3000  # a loaded CI machine may take a while between write and PTTL


def unique_prefix() -> str:
    return f"authfw-test:{RUN_ID}:{uuid.uuid4().hex[:12]}:"


def make_session(user_id: str, **kwargs: Any) -> SessionData:
    fields: dict[str, Any] = {
        "session_id": f"s-{uuid.uuid4().hex[:10]}",
        "user_id": user_id,
        "data": {"theme": "dark"},
        "expires_at": utcnow() + timedelta(hours=1),
    }
    fields.update(kwargs)
    return SessionData(**fields)


# Fixtures -------------------------------------------------------------------------------------


def raw_json(value: bytes | str | None) -> Any:
    """The JSON document a raw Redis read returned (None: nothing was stored there)."""
    assert value is not None, "nothing stored under that key"
    return json.loads(value)


@pytest.fixture
def raw_redis() -> Iterator[redis.Redis]:
    """A plain redis-py client on the test database, as ``redis-cli -n 15`` would be."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    yield client
    client.close()


@pytest.fixture
def redis_cache_storage(settings: Any) -> Iterator[CacheStorage]:
    """CacheStorage on a django-redis alias (the shared server, db 15, own prefix)."""
    settings.CACHES = {
        **settings.CACHES,
        "authfw-layout": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_TEST_URL},
    }
    storage = CacheStorage(cache="authfw-layout", key_prefix=unique_prefix())
    yield storage
    storage.flush()
    storage.close()


@pytest.fixture
def locmem_storage(settings: Any) -> Iterator[CacheStorage]:
    alias = f"authfw-locmem-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {
        **settings.CACHES,
        alias: {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": alias},
    }
    storage = CacheStorage(cache=alias)
    yield storage
    storage.flush()
    storage.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A redis-server of this module alone, so that MONITOR sees only our commands."""
    port = free_block(CLUSTER_PORTS, 1)[0]
    server = start_server(
        port, tmp_path_factory.mktemp("private-redis"), "--save", "", "--appendonly", "no"
    )
    yield server
    server.stop()


@pytest.fixture
def private_storage(private_redis: ServerProcess) -> Iterator[RedisStorage]:
    storage = RedisStorage(url=f"redis://{HOST}:{private_redis.port}/0", key_prefix=unique_prefix())
    yield storage
    storage.flush()
    storage.close()


class Monitor:
    """Records every command a redis-server executes (``redis-cli monitor``)."""

    def __init__(self, port: int, path: Path) -> None:
        self.path = path
        self._out = path.open("wb")
        self.process = subprocess.Popen(
            ["redis-cli", "-h", HOST, "-p", str(port), "monitor"], stdout=self._out
        )
        marker = redis.Redis(host=HOST, port=port, protocol=2)
        deadline = time.monotonic() + 10
        # MONITOR starts asynchronously: wait until it echoes a marker command.
        while b"authfw-monitor-ready" not in path.read_bytes():
            marker.echo("authfw-monitor-ready")
            time.sleep(0.05)
            assert time.monotonic() < deadline, "redis-cli monitor did not start"

    def stop(self) -> list[list[str]]:
        """Stop recording; return the commands, each as [source, NAME, args...]."""
        time.sleep(0.2)  # let the last replies through
        self.process.terminate()
        self.process.wait(5)
        self._out.close()
        commands = []
        for line in self.path.read_text(errors="replace").splitlines():
            if "[" not in line or "]" not in line:
                continue
            source = line[line.index("[") + 1 : line.index("]")].split()[-1]
            words = [w.strip('"') for w in line[line.index("]") + 1 :].split('" "')]
            words = [w.strip().strip('"') for w in words]
            commands.append([source, words[0].upper(), *words[1:]])
        # Leave out the marker's own connection.
        marker = {c[0] for c in commands if c[1] == "ECHO" and "authfw-monitor-ready" in c}
        return [c for c in commands if c[0] not in marker]


# Key layout and TTLs --------------------------------------------------------------------------


def test_token_keys_json_and_ttls(
    redis_cache_storage: CacheStorage, raw_redis: redis.Redis
) -> None:
    """A token as the framework mints it: its record under its own id (derived from the access
    digest, so verification finds it with one GET), one refresh pointer, its user's index."""
    storage = redis_cache_storage
    prefix = storage.key_prefix
    now = utcnow()
    token = AuthTokenFactory.build(
        user_id="42",
        expires_at=now + timedelta(hours=1),
        refresh_expires_at=now + timedelta(days=1),
        created_at=now,
        updated_at=now,
        permissions=[],
        roles=[],
        metadata={},
    )
    assert token.token_id == tokens.token_id_for(token.access_digest)
    assert token.refresh_digest is not None
    refresh_key = f"{prefix}refresh:{tokens.token_id_for(token.refresh_digest)}"
    storage.store_token(token)

    stored = raw_json(raw_redis.get(f"{prefix}token:{token.token_id}"))
    # Compact: no id (the key's), no family (the id), digests in base64, times in µs.
    assert stored == {
        "user": "42",
        "access": codec._b64_digest(token.access_digest),
        "refresh": codec._b64_digest(token.refresh_digest),
        "expires": codec.epoch_us(token.expires_at),
        "refresh_expires": codec.epoch_us(token.refresh_expires_at or now),
        "created": codec.epoch_us(token.created_at),
    }
    storage.revoke_token(token.token_id, at=now, replaced_by="next")
    stored = raw_json(raw_redis.get(f"{prefix}token:{token.token_id}"))
    assert codec.from_epoch_us(stored["revoked"]) == now
    assert stored["replaced_by"] == "next"
    token = replace(token, revoked_at=now, replaced_by="next", updated_at=now)
    assert storage.get_token(token.token_id) == token
    assert storage.get_token_by_access(token.access_digest) == token
    assert raw_redis.get(refresh_key) == token.token_id.encode()
    assert raw_redis.smembers(f"{prefix}user:42:tokens") == {token.token_id.encode()}

    # Every key of the token lives until retain_until (the refresh expiry), in ms.
    life_ms = (token.retain_until - utcnow()).total_seconds() * 1000
    keys = {f"{prefix}token:{token.token_id}", refresh_key, f"{prefix}user:42:tokens"}
    for key in keys:
        assert abs(raw_redis.pttl(key) - life_ms) < TTL_SLACK_MS, key

    # Nothing else was written, and nothing outside the prefix.
    assert {k.decode() for k in raw_redis.scan_iter(match=f"{prefix}*")} == keys


def test_a_token_with_an_id_of_its_own_gets_an_id_pointer(
    redis_cache_storage: CacheStorage, raw_redis: redis.Redis
) -> None:
    """An imported token whose id was not derived from its digest: the record is still under
    the key its digest names, and ``id:<token_id>`` leads to it."""
    storage = redis_cache_storage
    prefix = storage.key_prefix
    token = AuthTokenFactory.build(user_id="42", token_id="imported-1", family_id="f")
    rid = tokens.token_id_for(token.access_digest)
    storage.import_tokens([token])
    assert raw_json(raw_redis.get(f"{prefix}token:{rid}"))["id"] == "imported-1"
    assert raw_redis.get(f"{prefix}id:imported-1") == rid.encode()
    assert storage.get_token("imported-1") == token
    assert storage.get_token_by_access(token.access_digest) == token
    assert raw_redis.smembers(f"{prefix}user:42:tokens") == {rid.encode()}
    # An upsert by id with another access digest moves the record and its pointer.
    moved = replace(token, access_digest=tokens.digest(tokens.new_secret(tokens.ACCESS_PREFIX)))
    storage.import_tokens([moved])
    assert storage.get_token("imported-1") == moved
    assert storage.get_token_by_access(token.access_digest) is None
    assert raw_redis.exists(f"{prefix}token:{rid}") == 0
    assert storage.delete_token("imported-1") is True
    assert list(raw_redis.scan_iter(match=f"{prefix}*")) == []


def test_token_json_leaves_out_defaults_and_reads_every_form() -> None:
    now = utcnow()
    plain = AuthTokenFactory.build(user_id="7", permissions=[], roles=[], metadata={})
    full = replace(
        plain,
        token_type="DPoP",
        family_id="another",
        revoked_at=now,
        replaced_by="t2",
        permissions=["read"],
        roles=["admin"],
        metadata={"ip": "127.0.0.1"},
    )
    plain = replace(plain, updated_at=plain.created_at)
    short = json.loads(codec.encode_token(plain, plain.token_id))
    left_out = {"id", "family", "type", "revoked", "replaced_by", "permissions", "roles", "updated"}
    assert not left_out & set(short)
    assert codec.decode_token(codec.encode_token(plain, plain.token_id), plain.token_id) == plain
    assert codec.decode_token(codec.encode_token(plain)) == plain  # no key id: the id is kept
    assert codec.decode_token(codec.encode_token(full, "key")) == full
    encoded = codec.encode_token(full, "key")
    assert codec.encode_token(codec.decode_token(encoded), "key") == encoded  # byte-stable (CAS)
    # A record written with every field spelled out (nulls and all) reads the same.
    spelled = {
        **short,
        "id": plain.token_id,
        "family": plain.family_id,
        "type": "Bearer",
        "updated": codec.epoch_us(plain.created_at),
        "revoked": None,
        "replaced_by": None,
        "permissions": [],
        "roles": [],
        "metadata": {},
    }
    assert codec.decode_token(json.dumps(spelled)) == plain
    # A record of the earlier, longer form (field names, ISO 8601 times, hex digests).
    earlier = {
        "token_id": full.token_id,
        "user_id": "7",
        "access_digest": full.access_digest,
        "refresh_digest": full.refresh_digest,
        "token_type": "DPoP",
        "family_id": "another",
        "expires_at": full.expires_at.isoformat(),
        "refresh_expires_at": full.refresh_expires_at.isoformat()
        if full.refresh_expires_at
        else None,
        "created_at": full.created_at.isoformat(),
        "updated_at": full.updated_at.isoformat(),
        "revoked_at": now.isoformat().replace("+00:00", "Z"),
        "replaced_by": "t2",
        "permissions": ["read"],
        "roles": ["admin"],
        "metadata": {"ip": "127.0.0.1"},
    }
    assert codec.decode_token(json.dumps(earlier), "ignored") == full
    with pytest.raises(StorageError, match="access"):
        codec.decode_token(json.dumps({k: v for k, v in short.items() if k != "access"}), "x")
    with pytest.raises(StorageError, match="id"):
        codec.decode_token(json.dumps(short))  # no id, and no key to take it from


def test_user_index_ttl_follows_the_longest_lived_token(
    redis_cache_storage: CacheStorage, raw_redis: redis.Redis
) -> None:
    now = utcnow()
    index = f"{redis_cache_storage.key_prefix}user:7:tokens"
    long = AuthTokenFactory.build(user_id="7", refresh_expires_at=now + timedelta(days=2))
    short = AuthTokenFactory.build(user_id="7", refresh_expires_at=now + timedelta(hours=2))
    redis_cache_storage.store_token(long)
    redis_cache_storage.store_token(short)  # must not shorten the index's life
    assert abs(raw_redis.pttl(index) - 2 * 86400 * 1000) < TTL_SLACK_MS


def test_session_and_kv_keys(redis_cache_storage: CacheStorage, raw_redis: redis.Redis) -> None:
    prefix = redis_cache_storage.key_prefix
    session = make_session("9", expires_at=utcnow() + timedelta(minutes=30))
    redis_cache_storage.store_session(session)
    assert raw_json(raw_redis.get(f"{prefix}session:{session.session_id}"))["data"] == {
        "theme": "dark"
    }
    assert abs(raw_redis.pttl(f"{prefix}session:{session.session_id}") - 1800_000) < TTL_SLACK_MS
    assert raw_redis.smembers(f"{prefix}user:9:sessions") == {session.session_id.encode()}

    redis_cache_storage.kv_set("forever", b"\x00\xffbytes")
    redis_cache_storage.kv_set("brief", b"x", ttl=timedelta(seconds=90))
    assert raw_redis.get(f"{prefix}kv:forever") == b"\x00\xffbytes"  # raw bytes, no pickle
    assert raw_redis.ttl(f"{prefix}kv:forever") == -1  # no TTL: it persists
    assert abs(raw_redis.pttl(f"{prefix}kv:brief") - 90_000) < TTL_SLACK_MS
    assert redis_cache_storage.kv_incr("fails", ttl=timedelta(minutes=15)) == 1
    assert raw_redis.get(f"{prefix}kv:fails") == b"1"
    assert abs(raw_redis.pttl(f"{prefix}kv:fails") - 900_000) < TTL_SLACK_MS


def test_session_without_expiry_lives_default_ttl(
    redis_cache_storage: CacheStorage, raw_redis: redis.Redis, settings: Any
) -> None:
    key = f"{redis_cache_storage.key_prefix}session:open"
    redis_cache_storage.store_session(make_session("1", session_id="open", expires_at=None))
    assert abs(raw_redis.pttl(key) - 3600_000) < TTL_SLACK_MS  # default_ttl, one hour
    keep = CacheStorage(
        cache=redis_cache_storage.cache_alias or "",
        key_prefix=redis_cache_storage.key_prefix,
        default_ttl=None,
    )
    keep.store_session(make_session("1", session_id="open", expires_at=None))
    assert raw_redis.ttl(key) == -1
    assert raw_redis.ttl(f"{redis_cache_storage.key_prefix}user:1:sessions") == -1


def test_expired_records_are_not_written(
    redis_cache_storage: CacheStorage, raw_redis: redis.Redis
) -> None:
    prefix = redis_cache_storage.key_prefix
    past = utcnow() - timedelta(seconds=1)
    token = AuthTokenFactory.build(user_id="5", expires_at=past, refresh_expires_at=past)
    redis_cache_storage.store_token(token)
    redis_cache_storage.store_session(make_session("5", expires_at=past))
    assert list(raw_redis.scan_iter(match=f"{prefix}*")) == []
    # A TTL that is already over is refused on every backend (django_authfw.testing:
    # test_kv_set_refuses_a_ttl_already_over_and_keeps_the_entry) and leaves the entry as it was.
    redis_cache_storage.kv_set("k", b"1")
    with pytest.raises(InvalidInput):
        redis_cache_storage.kv_set("k", b"2", ttl=timedelta(seconds=-5))
    assert raw_redis.get(f"{prefix}kv:k") is not None


def test_audit_keys_are_readable(redis_cache_storage: CacheStorage, raw_redis: redis.Redis) -> None:
    prefix = redis_cache_storage.key_prefix
    event = AuditEvent(action="login", outcome=True, user_id="3", ip_address="192.0.2.1")
    redis_cache_storage.append_audit(event)
    redis_cache_storage.append_audit(event)  # same event id: stored once
    assert redis_cache_storage.count_audit() == 1
    body = raw_json(raw_redis.hget(f"{prefix}audit:{{log}}:events", event.event_id))
    assert body["action"] == "login"
    assert body["ip_address"] == "192.0.2.1"
    assert raw_redis.zcard(f"{prefix}audit:{{log}}:order") == 1
    assert raw_redis.ttl(f"{prefix}audit:{{log}}:order") == -1  # the log is kept


def test_upsert_with_new_digest_drops_the_old_pointer(
    redis_cache_storage: CacheStorage, raw_redis: redis.Redis
) -> None:
    token = AuthTokenFactory.build(user_id="1")
    redis_cache_storage.store_token(token)
    moved = replace(token, access_digest="f" * 64, user_id="2")
    assert redis_cache_storage.import_tokens([moved]) == 1
    assert redis_cache_storage.get_token_by_access(token.access_digest) is None
    assert redis_cache_storage.get_token_by_access("f" * 64) == moved
    assert redis_cache_storage.list_user_tokens("1") == []
    assert redis_cache_storage.list_user_tokens("2") == [moved]
    prefix = redis_cache_storage.key_prefix
    # The record moved to the key the new digest names; the old key and id pointer are gone.
    assert raw_redis.exists(f"{prefix}token:{token.token_id}") == 0
    assert redis_cache_storage.get_token(token.token_id) == moved


def test_stale_index_entries_are_pruned(
    redis_cache_storage: CacheStorage, raw_redis: redis.Redis
) -> None:
    """What a crash between index and record writes (Cluster) would leave behind."""
    prefix = redis_cache_storage.key_prefix
    token = AuthTokenFactory.build(user_id="11")
    redis_cache_storage.store_token(token)
    raw_redis.sadd(f"{prefix}user:11:tokens", "never-written")
    assert redis_cache_storage.list_user_tokens("11") == [token]
    assert raw_redis.smembers(f"{prefix}user:11:tokens") == {token.token_id.encode()}
    raw_redis.sadd(f"{prefix}user:11:tokens", "never-written-either")
    assert redis_cache_storage.cleanup_expired_tokens(dry_run=True) == 0
    assert raw_redis.scard(f"{prefix}user:11:tokens") == 2
    assert redis_cache_storage.cleanup_expired_tokens() == 0  # records: expired natively
    assert raw_redis.smembers(f"{prefix}user:11:tokens") == {token.token_id.encode()}


def test_flush_leaves_other_keys_alone(
    redis_cache_storage: CacheStorage, raw_redis: redis.Redis
) -> None:
    neighbour = f"authfw-test-neighbour:{uuid.uuid4().hex}"
    raw_redis.set(neighbour, b"keep", ex=60)
    try:
        redis_cache_storage.store_token(AuthTokenFactory.build(user_id="1"))
        redis_cache_storage.flush()
        assert list(raw_redis.scan_iter(match=f"{redis_cache_storage.key_prefix}*")) == []
        assert raw_redis.get(neighbour) == b"keep"
    finally:
        raw_redis.delete(neighbour)


def test_prefix_with_glob_characters(settings: Any, raw_redis: redis.Redis) -> None:
    """SCAN patterns escape the prefix, so flush() of 'a*' cannot touch 'ab...'."""
    settings.CACHES = {
        **settings.CACHES,
        "authfw-glob": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_TEST_URL},
    }
    base = unique_prefix()
    star = CacheStorage(cache="authfw-glob", key_prefix=f"{base}*[x]:")
    other = CacheStorage(cache="authfw-glob", key_prefix=f"{base}zz:")
    try:
        star.kv_set("a", b"1")
        other.kv_set("a", b"2")
        assert [e.key for b in star.iter_kv() for e in b] == ["a"]
        star.flush()
        assert other.kv_get("a") == b"2"
    finally:
        other.flush()


# Commands on the wire -------------------------------------------------------------------------


def exercise(storage: AuthStorage) -> AuthToken:
    """Every kind of operation once, as a storage sees them in production."""
    user = "77"
    token = AuthTokenFactory.build(user_id=user)
    storage.store_token(token)
    storage.get_token_by_access(token.access_digest)
    storage.list_user_tokens(user)
    storage.revoke_token(token.token_id, at=utcnow())
    storage.store_session(make_session(user))
    storage.list_user_sessions(user)
    storage.count_active_sessions()
    storage.kv_set("k", b"v", ttl=timedelta(minutes=1))
    storage.kv_incr("n", ttl=timedelta(minutes=1))
    storage.append_audit(AuditEvent(action="login", outcome=True, user_id=user))
    storage.query_audit(user_id=user)
    storage.delete_audit_before(utcnow() - timedelta(days=1))
    for iterate in (storage.iter_tokens, storage.iter_sessions, storage.iter_kv):
        list(iterate())
    storage.cleanup_expired()
    storage.statistics()
    storage.delete_user_tokens(user)
    storage.flush()
    return token


@pytest.mark.slow  # starts a redis-server of its own
def test_no_keys_or_flush_command_is_ever_sent(
    private_storage: RedisStorage, private_redis: ServerProcess, tmp_path: Path
) -> None:
    monitor = Monitor(private_redis.port, tmp_path / "monitor.log")
    exercise(private_storage)
    commands = monitor.stop()
    names = {c[1] for c in commands}
    assert {"SCAN", "EVALSHA", "UNLINK"} <= names | {"EVAL"}  # it did run
    assert not names & {"KEYS", "FLUSHDB", "FLUSHALL"}, names


@pytest.mark.slow  # starts a redis-server of its own
def test_verification_is_one_round_trip(
    private_storage: RedisStorage, private_redis: ServerProcess, tmp_path: Path
) -> None:
    """One plain GET of the key the access digest names, for a token the framework minted and
    for one imported with an id of its own alike; no script."""
    minted = AuthTokenFactory.build(user_id="1")
    imported = AuthTokenFactory.build(user_id="1", token_id="from-elsewhere")
    private_storage.import_tokens([minted, imported])
    monitor = Monitor(private_redis.port, tmp_path / "monitor.log")
    assert private_storage.get_token_by_access(minted.access_digest) == minted
    assert private_storage.get_token_by_access(imported.access_digest) == imported
    commands = monitor.stop()
    prefix = private_storage.key_prefix
    assert commands == [
        [commands[0][0], "GET", f"{prefix}token:{tokens.token_id_for(t.access_digest)}"]
        for t in (minted, imported)
    ], commands


def test_django_builtin_redis_cache_alias(settings: Any, raw_redis: redis.Redis) -> None:
    """Django's own RedisCache works too: writes go to its first (primary) server."""
    settings.CACHES = {
        **settings.CACHES,
        "builtin": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": [REDIS_TEST_URL, REDIS_TEST_URL],
        },
    }
    storage = CacheStorage(cache="builtin", key_prefix=unique_prefix())
    try:
        token = AuthTokenFactory.build(user_id="1")
        storage.store_token(token)
        assert storage.native_expiry is True
        assert storage.get_token_by_access(token.access_digest) == token
        assert raw_redis.exists(f"{storage.key_prefix}token:{token.token_id}") == 1
    finally:
        storage.flush()


def test_memory_verification_shares_the_immutable_record(locmem_storage: CacheStorage) -> None:
    """No copy on the hot path: the stored record itself, which nobody can change."""
    token = AuthTokenFactory.build(user_id="1", permissions=["a"], metadata={"deep": {"x": 1}})
    locmem_storage.store_token(token)
    found = locmem_storage.get_token_by_access(token.access_digest)
    assert found is token
    with pytest.raises(TypeError):
        found.permissions.append("admin")
    with pytest.raises(TypeError):
        found.metadata["deep"]["x"] = 2
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        found.revoked_at = utcnow()  # type: ignore[misc]
    assert locmem_storage.get_token_by_access(token.access_digest) == token


def test_locmem_aliases_share_one_keyspace_per_location(settings: Any) -> None:
    location = f"shared-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {
        **settings.CACHES,
        "one": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": location},
        "two": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": location},
    }
    first, second = CacheStorage(cache="one"), CacheStorage(cache="two")
    other_prefix = CacheStorage(cache="one", key_prefix="other:")
    first.kv_set("k", b"v")
    assert second.kv_get("k") == b"v"
    assert other_prefix.kv_get("k") is None
    first.flush()


# Concurrency ----------------------------------------------------------------------------------

THREADS = 100
USERS = 10


@pytest.fixture(params=["redis", "locmem", "redis-pool-of-4"])
def concurrent_storage(request: pytest.FixtureRequest, settings: Any) -> Iterator[EngineStorage]:
    if request.param == "redis-pool-of-4":
        # Fewer connections than threads: callers wait for a free one (BlockingConnectionPool).
        storage: EngineStorage = RedisStorage(
            url=REDIS_TEST_URL, pool_size=4, key_prefix=unique_prefix()
        )
    else:
        storage = request.getfixturevalue(
            "redis_cache_storage" if request.param == "redis" else "locmem_storage"
        )
    yield storage
    storage.flush()
    storage.close()


def check_consistent(storage: CacheStorage, tokens: list[AuthToken]) -> None:
    for token in tokens:
        assert storage.get_token_by_access(token.access_digest) == token
    for user in range(USERS):
        expected = {t.token_id for t in tokens if t.user_id == f"u{user}"}
        assert {t.token_id for t in storage.list_user_tokens(f"u{user}")} == expected


def test_concurrent_store_and_list_threads(concurrent_storage: CacheStorage) -> None:
    tokens = [AuthTokenFactory.build(user_id=f"u{i % USERS}") for i in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def work(token: AuthToken) -> None:
        barrier.wait()
        concurrent_storage.store_token(token)
        listed = concurrent_storage.list_user_tokens(token.user_id)
        assert token.token_id in {t.token_id for t in listed}
        assert all(t.user_id == token.user_id for t in listed)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, tokens))
    check_consistent(concurrent_storage, tokens)


def test_concurrent_store_and_list_asyncio(concurrent_storage: CacheStorage) -> None:
    tokens = [AuthTokenFactory.build(user_id=f"u{i % USERS}") for i in range(THREADS)]

    async def work(token: AuthToken) -> None:
        await concurrent_storage.astore_token(token)
        listed = await concurrent_storage.alist_user_tokens(token.user_id)
        assert token.token_id in {t.token_id for t in listed}

    async def scenario() -> None:
        await asyncio.gather(*(work(t) for t in tokens))

    async_to_sync(scenario)()
    check_consistent(concurrent_storage, tokens)


def test_concurrent_revocations_have_one_winner(concurrent_storage: CacheStorage) -> None:
    token = AuthTokenFactory.build(user_id="u1")
    concurrent_storage.store_token(token)
    barrier = threading.Barrier(20)

    def revoke(i: int) -> bool:
        barrier.wait()
        return concurrent_storage.revoke_token(token.token_id, at=utcnow(), replaced_by=f"n{i}")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(revoke, range(20)))
    assert results.count(True) == 1
    winner = results.index(True)
    stored = concurrent_storage.get_token(token.token_id)
    assert stored is not None
    assert stored.replaced_by == f"n{winner}"


def test_concurrent_kv_incr_counts_every_call(concurrent_storage: CacheStorage) -> None:
    with ThreadPoolExecutor(50) as pool:
        list(
            pool.map(
                lambda _: concurrent_storage.kv_incr("n", ttl=timedelta(minutes=1)), range(200)
            )
        )
    assert concurrent_storage.kv_get("n") == b"200"


def burst_alias(settings: Any, **options: Any) -> tuple[str, str]:
    """A django-redis alias of its own pool: django-redis keeps one pool per LOCATION for the
    whole process, so the client name makes the LOCATION (and the pool) unique."""
    name = f"authfw-burst-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {
        **settings.CACHES,
        name: {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"{REDIS_TEST_URL}?client_name={name}",
            "OPTIONS": options,
        },
    }
    return name, name


def burst(storage: AuthStorage, threads: int = THREADS) -> list[str]:
    """``threads`` callers released at once, each doing what a login and a few requests do;
    returns the errors they met."""
    tokens = [AuthTokenFactory.build(user_id=f"u{i % USERS}") for i in range(threads)]
    barrier = threading.Barrier(threads)
    errors: list[str] = []

    def work(index: int) -> None:
        token = tokens[index]
        barrier.wait()
        try:
            storage.store_token(token)  # a script call on a pooled connection
            for _ in range(3):  # on a kept connection (ClientShelf) while one is free
                assert storage.get_token_by_access(token.access_digest) == token
            assert token.token_id in {t.token_id for t in storage.list_user_tokens(token.user_id)}
            storage.kv_incr("burst")  # never on a kept connection
            if index % 10 == 0:
                # A pipeline inside a call: a kept connection plus one of the pool at once.
                list(storage.iter_kv(batch_size=10))
        except Exception as exc:  # counted, not raised: the test reports them all
            errors.append(repr(exc))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return errors


def test_a_blocking_django_redis_pool_queues_a_burst(settings: Any, raw_redis: redis.Redis) -> None:
    """100 threads on a django-redis pool of 10 connections, configured as docs/backends.md
    says (BlockingConnectionPool): every caller waits its turn, none fails, the pool's limit
    holds, and the kept connections (at most half the pool) never starve the rest."""
    alias, client_name = burst_alias(
        settings,
        CONNECTION_POOL_CLASS="redis.BlockingConnectionPool",
        # The wait is bounded generously: a 2-core CI machine whose Redis is busy with other
        # work (a million-record import, seen once) stretched 100 queued callers past 20 s.
        CONNECTION_POOL_KWARGS={"max_connections": 10, "timeout": 60},
    )
    storage = CacheStorage(cache=alias, key_prefix=unique_prefix(), retry_attempts=0)
    pool = storage.engine.call.client.connection_pool  # type: ignore[attr-defined]
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 10
    assert burst(storage) == []
    assert storage.kv_get("burst") == str(THREADS).encode()
    ours = [c for c in raw_redis.client_list() if c["name"] == client_name]
    assert 0 < len(ours) <= 10
    storage.flush()
    storage.close()
    pool.disconnect()


@pytest.mark.parametrize("waits", [True, False], ids=["waits", "refuses"])
def test_redis_storage_wait_for_connection_option(waits: bool) -> None:
    """RedisStorage on one server: a blocking pool by default, redis-py's refusing pool
    with ``wait_for_connection=False`` (a burst then fails where it finds no connection)."""
    storage = RedisStorage(
        url=REDIS_TEST_URL,
        key_prefix=unique_prefix(),
        pool_size=4,
        # The wait for a free connection is bounded by this: generous, so that a loaded
        # 2-core machine (100 threads queued on 4 connections) cannot turn a wait into a
        # refusal; the refusing pool fails at once whatever it is.
        timeout=30,
        retry_attempts=0,
        wait_for_connection=waits,
    )
    storage.kv_set("warm", b"1")
    pool = storage.engine.call.client.connection_pool  # type: ignore[attr-defined]
    assert isinstance(pool, redis.BlockingConnectionPool) is waits
    errors = burst(storage)
    if waits:
        assert errors == []
    else:
        assert errors, "a pool of 4 that does not wait served 100 callers at once"
        assert all("Too many connections" in error for error in errors), errors[:3]
    storage.flush()
    storage.close()


def test_two_storages_on_one_blocking_pool_never_starve_it(settings: Any) -> None:
    """Two storage aliases on one cache alias (tokens and audit, say) share its pool. Their
    kept connections together must still leave half of it free: else, once a burst has filled
    both shelves, every call that needs the pool (kv_incr, the lockout counter) waits out the
    pool's timeout and fails, for good, since kept connections are never given back."""
    alias, _ = burst_alias(
        settings,
        CONNECTION_POOL_CLASS="redis.BlockingConnectionPool",
        CONNECTION_POOL_KWARGS={"max_connections": 4, "timeout": 1},
    )
    storages = [
        CacheStorage(cache=alias, key_prefix=unique_prefix(), retry_attempts=0) for _ in range(2)
    ]
    barrier = threading.Barrier(8)

    def read(index: int) -> None:
        barrier.wait()  # 4 callers at once on each storage: each shelf fills up
        storages[index % 2].kv_get("k")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, range(8)))
    for storage in storages:
        assert storage.kv_incr("n") == 1  # on the pool
        assert list(storage.iter_kv()) != []  # a pipeline inside a kept connection's call
        storage.flush()
        storage.close()
    storages[0].engine.call.client.connection_pool.disconnect()  # type: ignore[attr-defined]


def test_in_memory_async_twins_run_inline(locmem_storage: CacheStorage) -> None:
    """No thread hop for the in-process engine: the twin runs on the event loop's thread."""
    seen: list[int] = []
    original = locmem_storage.engine.get_token

    def spy(token_id: str) -> AuthToken | None:
        seen.append(threading.get_ident())
        return original(token_id)

    locmem_storage.engine.get_token = spy  # type: ignore[method-assign]

    async def scenario() -> int:
        await locmem_storage.aget_token("x")
        return threading.get_ident()

    loop_thread = async_to_sync(scenario)()
    assert seen == [loop_thread]


# Failures -------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind((HOST, 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def assert_unavailable_within(budget: float, call: Callable[[], object]) -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < budget + 1.5, f"took {elapsed:.2f}s, budget {budget:.2f}s"
    assert "password" not in str(info.value)


def test_unreachable_redis_raises_storage_unavailable() -> None:
    storage = RedisStorage(
        url=f"redis://:secret@{HOST}:{closed_port()}/0",
        timeout=0.5,
        retry_attempts=2,
        retry_delay=0.1,
    )
    digest = "a" * 64
    assert_unavailable_within(storage.retry_budget, lambda: storage.get_token_by_access(digest))
    assert_unavailable_within(
        storage.retry_budget, lambda: storage.store_token(AuthTokenFactory.build(user_id="1"))
    )
    assert_unavailable_within(0.5, lambda: storage.kv_incr("n"))  # never retried
    assert "secret" not in repr(storage)
    storage.close()


def test_hung_redis_times_out(silent_server: int) -> None:
    storage = RedisStorage(
        url=f"redis://{HOST}:{silent_server}/0", timeout=0.3, retry_attempts=1, retry_delay=0.1
    )
    assert storage.retry_budget == pytest.approx(0.7)
    started = time.monotonic()
    assert_unavailable_within(storage.retry_budget, lambda: storage.get_token("x"))
    assert time.monotonic() - started >= 0.6  # it did wait for the reply, twice
    assert_unavailable_within(
        storage.retry_budget, lambda: async_to_sync(storage.aget_token_by_access)("a" * 64)
    )
    storage.close()


def test_cache_alias_on_a_dead_server_fails_closed(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "authfw-dead": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{HOST}:{closed_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    storage = CacheStorage(cache="authfw-dead", retry_attempts=1, retry_delay=0.05)
    assert_unavailable_within(1.1, lambda: storage.get_token_by_access("a" * 64))


@pytest.mark.slow  # starts a redis-server of its own
def test_replica_acks_without_replicas_fails_writes_closed(private_redis: ServerProcess) -> None:
    """A write that cannot reach the required replicas is reported failed, never done."""
    storage = RedisStorage(
        url=f"redis://{HOST}:{private_redis.port}/0",
        key_prefix=unique_prefix(),
        replica_acks=1,
        replica_ack_timeout=0.1,
        timeout=1,
        retry_attempts=1,
        retry_delay=0,
    )
    token = AuthTokenFactory.build(user_id="1")
    with pytest.raises(StorageUnavailable, match="0 of 1 replicas"):
        storage.store_token(token)
    with pytest.raises(StorageUnavailable):
        storage.kv_incr("n")
    # Pipelined imports WAIT on the pipeline's own connection, the one that wrote.
    with pytest.raises(StorageUnavailable, match="0 of 1 replicas"):
        storage.import_tokens([token])
    with pytest.raises(StorageUnavailable, match="0 of 1 replicas"):
        storage.import_kv([KVEntry(key="k", value=b"v")])
    assert storage.get_token("missing") is None  # reads need no replica
    storage.close()
    with pytest.raises(InvalidInput, match="cluster_mode"):
        RedisStorage(cluster_mode=True, replica_acks=1)


# Refused credentials --------------------------------------------------------------------------

PASSWORD = "right-password-for-tests"


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A redis-server of this module with ``requirepass``."""
    server = private_server(tmp_path_factory.mktemp("password-redis"), password=PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def password_admin(password_redis: ServerProcess) -> Iterator[redis.Redis]:
    client = password_redis.client(password=PASSWORD)
    connections_received(client)  # connects now, so later readings count only others
    yield client
    client.close()


def assert_refused_at_once(admin: redis.Redis, call: Callable[[], object]) -> CredentialsRefused:
    """``call`` fails with CredentialsRefused after one connection: no retry was made."""
    before = connections_received(admin)
    with pytest.raises(CredentialsRefused) as info:
        call()
    assert connections_received(admin) - before == 1
    assert isinstance(info.value, StorageUnavailable)  # still a 503 JSON reply over HTTP
    assert "refused the credentials" in str(info.value)
    assert "unreachable" not in str(info.value)
    return info.value


@pytest.mark.slow  # starts a redis-server of its own
@pytest.mark.parametrize("credentials", [":wrong-password@", "", "nobody:wrong-password@"])
def test_a_refused_password_fails_at_once(
    credentials: str, password_redis: ServerProcess, password_admin: redis.Redis
) -> None:
    """WRONGPASS (bad password, bad user) and NOAUTH (none given) are not retried."""
    storage = RedisStorage(
        url=f"redis://{credentials}{HOST}:{password_redis.port}/0",
        retry_attempts=5,
        retry_delay=0.01,
    )
    for call in (
        lambda: storage.get_token_by_access("a" * 64),  # on a kept connection (the shelf)
        lambda: storage.store_token(AuthTokenFactory.build(user_id="1")),
        lambda: storage.kv_incr("n"),
    ):
        error = assert_refused_at_once(password_admin, call)
        assert "wrong-password" not in str(error)
        assert "wrong-password" not in repr(storage)
    storage.close()
    right = RedisStorage(url=f"redis://:{PASSWORD}@{HOST}:{password_redis.port}/0")
    assert right.get_token("x") is None  # the same server with the right password works
    right.close()


@pytest.mark.slow  # starts a redis-server of its own
def test_a_cache_alias_with_a_refused_password_fails_at_once(
    settings: Any, password_redis: ServerProcess, password_admin: redis.Redis
) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "authfw-wrong-password": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{HOST}:{password_redis.port}/0",
            "OPTIONS": {"PASSWORD": "wrong-password"},
        },
    }
    storage = CacheStorage(cache="authfw-wrong-password", retry_attempts=5, retry_delay=0.01)
    assert_refused_at_once(password_admin, lambda: storage.get_token_by_access("a" * 64))
    assert_refused_at_once(password_admin, lambda: storage.append_audit(make_event()))


def make_event() -> AuditEvent:
    return AuditEvent(action="login", outcome=True)


# In-memory sweep thread -----------------------------------------------------------------------


def test_sweep_thread_removes_expired_records_and_stops_on_close() -> None:
    storage = InMemoryStorage(cleanup_interval=0.1)
    sweeper = storage._sweeper
    assert sweeper is not None
    assert sweeper.is_alive()
    assert sweeper.daemon
    now = utcnow()
    short = AuthTokenFactory.build(
        user_id="1",
        expires_at=now + timedelta(milliseconds=100),
        refresh_expires_at=now + timedelta(milliseconds=100),
    )
    keep = AuthTokenFactory.build(user_id="1")
    storage.store_token(short)
    storage.store_token(keep)
    storage.kv_set("brief", b"x", ttl=timedelta(milliseconds=100))
    engine: Any = storage.engine
    deadline = time.monotonic() + 5
    while short.token_id in engine._tokens or "brief" in engine._kv:
        assert time.monotonic() < deadline, "the sweep never ran"
        time.sleep(0.05)
    assert engine._user_tokens["1"] == {keep.token_id}
    assert short.access_digest not in engine._by_access
    started = time.monotonic()
    storage.close()
    assert not sweeper.is_alive()
    assert time.monotonic() - started < 1  # woken by the event, not after a full interval


def test_sweep_thread_ends_when_the_storage_is_dropped() -> None:
    storage = InMemoryStorage(cleanup_interval=0.05)
    sweeper = storage._sweeper
    assert sweeper is not None
    del storage
    sweeper.join(5)
    assert not sweeper.is_alive()


def test_no_sweep_thread_when_disabled() -> None:
    storage = InMemoryStorage(cleanup_interval=None, default_ttl=timedelta(minutes=5))
    assert storage._sweeper is None
    assert storage.default_ttl == timedelta(minutes=5)
    storage.close()


# Construction ---------------------------------------------------------------------------------


def test_constructors_refuse_bad_options(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "files": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": "/tmp/authfw-test-files",
        },
    }
    with pytest.raises(StorageError, match="not in CACHES"):
        CacheStorage(cache="missing")
    with pytest.raises(StorageError, match="DummyCache"):
        CacheStorage(cache="dummy")
    with pytest.raises(StorageError, match="FileBasedCache"):
        CacheStorage(cache="files")
    with pytest.raises(InvalidInput, match="key_prefix"):
        CacheStorage(cache="default", key_prefix="")
    with pytest.raises(TypeError, match="unknown OPTIONS: colour"):
        CacheStorage(cache="default", colour="red")
    with pytest.raises(InvalidInput, match="timeout"):
        RedisStorage(timeout=-1)
    with pytest.raises(InvalidInput, match="pool_size"):
        RedisStorage(pool_size=0)
    with pytest.raises(InvalidInput, match="scheme"):
        RedisStorage(url="http://localhost")
    with pytest.raises(InvalidInput, match="cluster_mode"):
        RedisStorage(cluster_urls=["redis://127.0.0.1:7000"])
    with pytest.raises(InvalidInput, match="sentinels"):
        RedisStorage(master_name="mymaster")
    with pytest.raises(InvalidInput, match="cleanup_interval"):
        InMemoryStorage(cleanup_interval=0)


def test_options_take_timedeltas() -> None:
    storage = RedisStorage(timeout=timedelta(milliseconds=1500), retry_delay=timedelta(seconds=1))
    assert storage.timeout == 1.5
    assert storage.retry_delay == 1.0
    assert storage.retry_budget == pytest.approx(1.5 * 4 + 3)
    storage.close()  # never connected: building a storage does not touch the server


# System checks --------------------------------------------------------------------------------


def run_cache_checks(deploy: bool = False) -> list[Any]:
    messages = cache_checks.check_cache_storages()
    if deploy:
        messages += cache_checks.check_cache_storages_deploy()
    return messages


def storages_on(cache: str) -> dict[str, Any]:
    return {
        "STORAGES": {
            "default": {"BACKEND": "django_authfw.storage.DatabaseStorage"},
            "cache": {"BACKEND": "django_authfw.storage.CacheStorage", "OPTIONS": {"cache": cache}},
        }
    }


CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "x"},
    "redis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_TEST_URL},
    "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "t"},
}


def pool_caches(**entries: dict[str, Any]) -> dict[str, Any]:
    return {"default": CACHES["default"], **entries}


def django_redis(location: str = REDIS_TEST_URL, **options: Any) -> dict[str, Any]:
    return {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": location, "OPTIONS": options}


def builtin_redis(location: str = REDIS_TEST_URL, **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": location,
        "OPTIONS": options,
    }


NON_BLOCKING = {
    "django-redis kwargs": django_redis(CONNECTION_POOL_KWARGS={"max_connections": 10}),
    "django-redis url": django_redis(f"{REDIS_TEST_URL}?max_connections=10"),
    "django-redis sentinel": django_redis(
        "redis://authfw/0",
        CLIENT_CLASS="django_redis.client.SentinelClient",
        SENTINELS=[("127.0.0.1", 26379)],
        CONNECTION_POOL_KWARGS={"max_connections": 10},
    ),
    "builtin": builtin_redis(max_connections=10),
    # Django's RedisCache takes pool_class=None for its default (non-blocking) pool.
    "builtin pool_class None": builtin_redis(max_connections=10, pool_class=None),
    # A waiting pool given no time to wait (timeout 0) raises at once all the same.
    "django-redis blocking timeout 0": django_redis(
        CONNECTION_POOL_CLASS="redis.BlockingConnectionPool",
        CONNECTION_POOL_KWARGS={"max_connections": 10, "timeout": 0},
    ),
    "builtin blocking url timeout 0": builtin_redis(
        f"{REDIS_TEST_URL}?timeout=0", pool_class="redis.BlockingConnectionPool", max_connections=10
    ),
}
WAITING = {
    "django-redis blocking": django_redis(
        CONNECTION_POOL_CLASS="redis.BlockingConnectionPool",
        CONNECTION_POOL_KWARGS={"max_connections": 10, "timeout": 5},
    ),
    "django-redis no limit": django_redis(),
    "django-redis sentinel bounded": django_redis(
        "redis://authfw/0",
        CLIENT_CLASS="django_redis.client.SentinelClient",
        SENTINELS=[("127.0.0.1", 26379)],
        CONNECTION_POOL_CLASS="django_authfw.storage.redis.BoundedSentinelPool",
        CONNECTION_POOL_KWARGS={"max_connections": 10, "wait": 5},
    ),
    "builtin blocking": builtin_redis(
        pool_class="redis.BlockingConnectionPool", max_connections=10, timeout=5
    ),
}


@pytest.mark.parametrize("name", NON_BLOCKING)
def test_check_a_pool_that_does_not_wait_warns(name: str) -> None:
    """A pool with max_connections that raises instead of waiting: authfw.W021, with the fix."""
    with override_settings(
        CACHES=pool_caches(burst=NON_BLOCKING[name]), AUTHFW=storages_on("burst")
    ):
        [message] = run_cache_checks()
    assert isinstance(message, Warning)
    assert message.id == "authfw.W021"
    assert "10 connections" in message.msg
    assert "Too many connections" in message.msg
    builtin = "OPTIONS['pool_class'] = 'redis.BlockingConnectionPool'"
    expected = {"django-redis sentinel": "BoundedSentinelPool"}.get(
        name, builtin if name.startswith("builtin") else "CONNECTION_POOL_CLASS'] = 'redis.Blocking"
    )
    assert message.hint is not None
    assert expected in message.hint


@pytest.mark.parametrize("name", WAITING)
def test_check_a_pool_that_waits_is_fine(name: str) -> None:
    with override_settings(CACHES=pool_caches(burst=WAITING[name]), AUTHFW=storages_on("burst")):
        assert run_cache_checks() == []


@override_settings(CACHES=CACHES, AUTHFW=storages_on("dummy"))
def test_check_dummy_cache_is_an_error() -> None:
    [message] = run_cache_checks()
    assert isinstance(message, Error)
    assert message.id == "authfw.E020"


@override_settings(CACHES=CACHES, AUTHFW=storages_on("db"))
def test_check_unsupported_cache_is_an_error() -> None:
    [message] = run_cache_checks()
    assert message.id == "authfw.E021"
    assert "DatabaseCache" in message.msg


@override_settings(CACHES=CACHES, AUTHFW=storages_on("nowhere"))
def test_check_missing_cache_alias_is_an_error() -> None:
    assert [m.id for m in run_cache_checks()] == ["authfw.E021"]


@override_settings(CACHES=CACHES, AUTHFW=storages_on("local"))
def test_check_locmem_with_several_processes_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    assert run_cache_checks() == []  # one process, as far as can be seen
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--bind 0.0.0.0 --workers 4")
    [message] = run_cache_checks()
    assert isinstance(message, Warning)
    assert message.id == "authfw.W020"
    assert "gunicorn" in message.msg
    monkeypatch.delenv("GUNICORN_CMD_ARGS")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert [m.id for m in run_cache_checks(deploy=True)] == ["authfw.W020"]  # not twice


@override_settings(CACHES=CACHES, AUTHFW=storages_on("local"))
def test_check_deploy_warns_about_in_process_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    assert [m.id for m in run_cache_checks(deploy=True)] == ["authfw.W020"]


@override_settings(
    CACHES=CACHES,
    AUTHFW={
        "STORAGES": {
            "mem": {"BACKEND": "django_authfw.storage.InMemoryStorage"},
            "redis": {
                "BACKEND": "django_authfw.storage.CacheStorage",
                "OPTIONS": {"cache": "redis"},
            },
            "direct": {"BACKEND": "django_authfw.storage.RedisStorage"},
        }
    },
)
def test_check_redis_is_fine_and_in_memory_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    messages = run_cache_checks()
    assert [(m.id, m.obj) for m in messages] == [("authfw.W020", "AUTHFW['STORAGES']['mem']")]


def test_locmem_keyspace_outlives_its_storage(settings: Any) -> None:
    """Like LocMemCache, the data belongs to the location, not to one storage object: a
    storage built per request (and dropped) must find what an earlier one stored."""
    import gc

    location = f"outlive-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {
        **settings.CACHES,
        "outlive": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": location,
        },
    }
    token = AuthTokenFactory.build(user_id="1")
    CacheStorage(cache="outlive").store_token(token)
    gc.collect()
    again = CacheStorage(cache="outlive")
    assert again.get_token_by_access(token.access_digest) == token
    again.flush()
