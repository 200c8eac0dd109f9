"""Pipelined Redis imports write exactly the keyspace the one-by-one writes do.

The same records go into two storages under two prefixes: one record at a time through the
engine's single writes (``_put_token``, ``_put_session``, ``kv_set``/``kv_delete``,
``_append``), and in one ``import_*`` call each, which pipelines them. Both keyspaces (every
key under the prefix, its type, its value and its TTL) must then be equal, on one server and on
a Cluster, including upserts over records already there, records that changed their refresh
token, owner or access digest, records already over, and duplicates within a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from django_authfw.records import AuditEvent, AuthToken, KVEntry, SessionData, utcnow
from django_authfw.storage import RedisStorage
from django_authfw.storage.redis.engine import PIPELINE_BATCH, WRITTEN, RedisEngine
from django_authfw.testing import make_session, make_token

from .backends import REDIS_TEST_URL, unique_prefix

# A TTL read back moves with the time between the two writes and the read; records here live
# for an hour or more, so a minute of slack tells "same TTL" from "another TTL" or "none".
TTL_SLACK_MS = 60_000


def _single() -> RedisStorage:
    return RedisStorage(url=REDIS_TEST_URL, key_prefix=unique_prefix())


def _cluster() -> RedisStorage:
    from .redis_servers import ensure_cluster

    return RedisStorage(
        cluster_mode=True, cluster_urls=ensure_cluster().urls, key_prefix=unique_prefix()
    )


@pytest.fixture(
    params=[
        pytest.param(_single, id="redis"),
        pytest.param(_cluster, id="redis-cluster", marks=pytest.mark.slow),
    ]
)
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[RedisStorage, RedisStorage]]:
    one, batched = request.param(), request.param()
    try:
        yield one, batched
    finally:
        for storage in (one, batched):
            storage.flush()
            storage.close()


def _engine(storage: RedisStorage) -> RedisEngine:
    engine = storage.engine
    assert isinstance(engine, RedisEngine)
    return engine


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def keyspace(storage: RedisStorage) -> dict[str, tuple[str, Any, int]]:
    """Every key under the storage's prefix (prefix stripped): (type, value, TTL in ms)."""
    engine = _engine(storage)
    prefix = engine.keys.prefix
    found: dict[str, tuple[str, Any, int]] = {}
    for keys in engine._scan(engine.keys.pattern("all")):
        for key in keys:
            kind = _text(engine.call(lambda c, k=key: c.type(k)))
            if kind == "string":
                value: Any = engine.call(lambda c, k=key: c.get(k))
            elif kind == "set":
                value = sorted(engine.call(lambda c, k=key: c.smembers(k)))
            elif kind == "zset":
                value = engine.call(lambda c, k=key: c.zrange(k, 0, -1))
            elif kind == "hash":
                value = sorted(engine.call(lambda c, k=key: c.hgetall(k)).items())
            else:
                raise AssertionError(f"unexpected {kind} at {key}")
            ttl = int(engine.call(lambda c, k=key: c.pttl(k)))
            found[key[len(prefix) :]] = (kind, value, ttl)
    return found


def assert_same_keyspace(one: RedisStorage, batched: RedisStorage) -> None:
    expected, got = keyspace(one), keyspace(batched)
    assert sorted(got) == sorted(expected)
    for key, (kind, value, ttl) in expected.items():
        got_kind, got_value, got_ttl = got[key]
        assert (got_kind, got_value) == (kind, value), key
        if ttl < 0 or got_ttl < 0:
            assert got_ttl == ttl, key  # both without TTL
        else:
            assert abs(got_ttl - ttl) <= TTL_SLACK_MS, (key, ttl, got_ttl)


def _tokens() -> tuple[list[AuthToken], list[AuthToken]]:
    """(tokens both storages hold first, the batch imported over them)."""
    now = utcnow()
    past: dict[str, Any] = {
        "expires_at": now - timedelta(hours=2),
        "refresh_expires_at": now - timedelta(hours=1),
    }
    old_minted = make_token("u1")
    old_foreign = make_token("u1", token_id="ext-old")
    victim = make_token("u2")
    victim_foreign = make_token("u2", token_id="ext-victim")
    before = [old_minted, old_foreign, victim, victim_foreign]

    batch: list[AuthToken] = []
    for i in range(PIPELINE_BATCH + 150):  # more than one pipeline
        fields: dict[str, Any] = {}
        if i % 3 == 0:
            fields.update(refresh_digest=None, refresh_expires_at=None)
        if i % 4 == 0:
            fields.update(revoked_at=now, updated_at=now)
        if i % 7 == 0:
            fields["token_id"] = f"ext-{i}"
        if i % 11 == 0:
            fields["refresh_expires_at"] = None  # retained until its access expiry
        batch.append(make_token(f"u{i % 3}", **fields))
    dup = make_token("u1")
    batch[10:10] = [dup, replace(dup, revoked_at=now, updated_at=now)]  # same id, twice
    batch += [
        # A new refresh token and another owner: the old pointer and index entry go.
        replace(old_minted, refresh_digest=make_token("u1").refresh_digest, user_id="u3"),
        # The same foreign id with another access digest: the old record goes.
        replace(make_token("u1"), token_id="ext-old"),
        replace(victim, **past),  # over: not written, the stored one goes
        replace(victim_foreign, **past),
        replace(make_token("u4"), **past),  # over, never stored: nothing happens
        replace(make_token("u4"), token_id="ext-never", **past),
        dup,  # the first copy again, after the revoked one: it wins
    ]
    return before, batch


def test_token_import_writes_the_keys_of_single_writes(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    one, batched = pair
    before, batch = _tokens()
    for storage in pair:
        for token in before:
            storage.store_token(token)
    single = sum(1 for token in batch if _engine(one)._put_token(token) == WRITTEN)
    assert _engine(batched).import_tokens(batch) == single
    assert single == len(batch) - 4  # the four records already over
    assert_same_keyspace(one, batched)


def test_revoke_user_tokens_in_batches_writes_the_keys_of_single_revocations(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    one, batched = pair
    now = utcnow()
    tokens = [make_token("svc") for _ in range(PIPELINE_BATCH * 2 + 7)]
    tokens += [make_token("svc", revoked_at=now, updated_at=now, family_id="f") for _ in range(3)]
    for storage in pair:
        _engine(storage).import_tokens(tokens)
    engine = _engine(one)
    single = sum(
        1
        for raw, token in engine._user_tokens("svc")
        if token.revoked_at is None
        and engine._revoke(raw, engine.record_id(token), now, token.replaced_by, None)
    )
    assert single == PIPELINE_BATCH * 2 + 7
    assert batched.revoke_user_tokens("svc", at=now) == single
    assert_same_keyspace(one, batched)


def _sessions() -> tuple[list[SessionData], list[SessionData]]:
    now = utcnow()
    moved = make_session("u1")
    ending = make_session("u2")
    persistent = make_session("u1", expires_at=None)
    before = [moved, ending, persistent]
    batch = [make_session(f"u{i % 3}") for i in range(PIPELINE_BATCH + 20)]
    batch += [
        replace(moved, user_id="u2", data={"n": 1}),
        replace(ending, expires_at=now - timedelta(seconds=1)),
        replace(persistent, data={"n": 2}),
        make_session("u9", expires_at=now - timedelta(seconds=1)),
        replace(moved, user_id="u3"),  # the same id again, later in the batch
    ]
    return before, batch


def test_session_import_writes_the_keys_of_single_writes(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    one, batched = pair
    before, batch = _sessions()
    for storage in pair:
        for session in before:
            storage.store_session(session)
    single = sum(1 for session in batch if _engine(one)._put_session(session) == WRITTEN)
    assert _engine(batched).import_sessions(batch) == single
    assert_same_keyspace(one, batched)


def test_kv_and_audit_imports_write_the_keys_of_single_writes(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    one, batched = pair
    now = utcnow()
    for storage in pair:
        storage.kv_set("gone", b"old")
        storage.kv_set("kept", b"old", ttl=timedelta(hours=1))
    entries = [
        KVEntry(key=f"k{i}", value=b"v", expires_at=None if i % 2 else now + timedelta(hours=2))
        for i in range(PIPELINE_BATCH + 30)
    ]
    entries += [
        KVEntry(key="gone", value=b"new", expires_at=now - timedelta(seconds=1)),
        KVEntry(key="kept", value=b"new"),
        KVEntry(key="dup", value=b"1", expires_at=now + timedelta(hours=1)),
        KVEntry(key="dup", value=b"2"),
    ]
    engine = _engine(one)
    written = 0
    for entry in entries:
        ttl = None if entry.expires_at is None else entry.expires_at - utcnow()
        if ttl is not None and ttl <= timedelta(0):
            engine.kv_delete(entry.key)
        else:
            engine.kv_set(entry.key, entry.value, ttl)
            written += 1
    assert _engine(batched).import_kv(entries) == written

    events = [
        AuditEvent(action="login", outcome=bool(i % 2), user_id="u1", created_at=now)
        for i in range(PIPELINE_BATCH + 30)
    ]
    events.append(events[3])  # a duplicate is appended once
    appended = sum(1 for event in events if engine._append(event))
    assert _engine(batched).import_audit(events) == appended == len(events) - 1
    assert_same_keyspace(one, batched)


def test_a_migration_stopped_by_a_failing_pipeline_is_finished_by_missing_only(
    tmp_path: Path,
) -> None:
    """A Redis that refuses writes half-way through a pipeline (out of memory) fails the
    import: the migration stops with the error and reports nothing as copied. Once Redis has
    room again, ``missing_only`` copies what is missing and leaves what landed; every token is
    then there once, as it was in the source."""
    from django_authfw.exceptions import StorageError
    from django_authfw.migration import StorageMigration
    from django_authfw.storage import InMemoryStorage

    from .redis_servers import private_server

    server = private_server(tmp_path, "--maxmemory-policy", "noeviction")
    source = InMemoryStorage()
    target = RedisStorage(url=f"redis://127.0.0.1:{server.port}/0", key_prefix="m:")
    try:
        tokens = [make_token(f"u{i % 5}") for i in range(3 * PIPELINE_BATCH)]
        source.import_tokens(tokens)
        raw = server.client()
        used = int(raw.info("memory")["used_memory"])
        # Room for some of the tokens, not all: a pipeline is refused part of the way.
        raw.config_set("maxmemory", used + 400_000)
        migration = StorageMigration(source, target, batch_size=len(tokens))
        with pytest.raises(StorageError, match="maxmemory"):
            migration.migrate_tokens()  # raises: no report says anything was copied
        landed = len(list(raw.scan_iter("m:token:*", count=1000)))
        assert 0 < landed < len(tokens)

        raw.config_set("maxmemory", 0)
        report = StorageMigration(source, target, missing_only=True, verify=True).migrate_tokens()
        assert report.ok
        assert report.skipped_present + report.copied == len(tokens)
        assert report.copied == report.verified == len(tokens) - report.skipped_present
        assert 0 < report.skipped_present < len(tokens)
        stored = {t.token_id: t for batch in target.iter_tokens() for t in batch}
        assert stored == {t.token_id: t for t in tokens}
    finally:
        target.flush()
        target.close()
        source.close()
        server.stop()


def test_delete_user_tokens_in_batches_leaves_the_keys_of_single_deletes(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    one, batched = pair
    now = utcnow()
    tokens = [make_token("svc") for _ in range(PIPELINE_BATCH + 40)]
    tokens += [make_token("svc", token_id=f"ext-{i}", refresh_digest=None) for i in range(5)]
    tokens += [make_token("svc", revoked_at=now, updated_at=now), make_token("other")]
    for storage in pair:
        _engine(storage).import_tokens(tokens)
    engine = _engine(one)
    single = 0
    for raw, token in engine._user_tokens("svc"):
        status = engine._delete_token_raw(token, raw)
        single += status == WRITTEN
    assert single == len(tokens) - 1
    assert batched.delete_user_tokens("svc") == single
    assert_same_keyspace(one, batched)
    assert batched.list_user_tokens("svc") == []
    assert [t.user_id for t in batched.list_user_tokens("other")] == ["other"]
