"""Redis reads that hold one page, not a whole keyspace or index (issue 15).

A user's index is read a SSCAN page at a time by ``revoke_user_tokens`` and
``delete_user_tokens``; key scans keep no set of every key they returned, except for counts,
which stay exact when SCAN returns a key twice (as the Redis docs allow); and
``storage_is_empty`` scans in batches of 1,000, not 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from django_authfw.records import utcnow
from django_authfw.storage import InMemoryStorage, RedisStorage
from django_authfw.storage.redis.engine import MGET_BATCH, RedisEngine
from django_authfw.testing import make_session, make_token
from django_authfw.transfer import storage_is_empty

from .backends import REDIS_TEST_URL, unique_prefix

MANY = 3 * MGET_BATCH


@pytest.fixture
def storage() -> Iterator[RedisStorage]:
    storage = RedisStorage(url=REDIS_TEST_URL, key_prefix=unique_prefix())
    try:
        yield storage
    finally:
        storage.flush()
        storage.close()


def _engine(storage: RedisStorage) -> RedisEngine:
    engine = storage.engine
    assert isinstance(engine, RedisEngine)
    return engine


def _largest_mget(monkeypatch: pytest.MonkeyPatch, engine: RedisEngine) -> list[int]:
    sizes: list[int] = []
    mget = engine._mget

    def recording(keys: list[str]) -> list[bytes | None]:
        sizes.append(len(keys))
        return mget(keys)

    monkeypatch.setattr(engine, "_mget", recording)
    return sizes


def test_revoke_user_tokens_reads_the_index_a_page_at_a_time(
    storage: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.import_tokens(make_token("service") for _ in range(MANY))
    storage.import_tokens([make_token("other")])
    sizes = _largest_mget(monkeypatch, _engine(storage))
    assert storage.revoke_user_tokens("service", at=utcnow()) == MANY
    # SSCAN's COUNT is a hint: a page may be somewhat larger, never the whole index.
    assert sizes
    assert max(sizes) < MANY
    assert all(t.revoked_at is not None for t in storage.list_user_tokens("service"))
    assert storage.list_user_tokens("other")[0].revoked_at is None
    # Again: nothing left to revoke, and nothing counted twice.
    assert storage.revoke_user_tokens("service", at=utcnow()) == 0


def test_delete_user_tokens_reads_the_index_a_page_at_a_time(
    storage: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.import_tokens(make_token("service") for _ in range(MANY))
    sizes = _largest_mget(monkeypatch, _engine(storage))
    assert storage.delete_user_tokens("service") == MANY
    assert sizes
    assert max(sizes) < MANY
    assert storage.list_user_tokens("service") == []
    assert storage.delete_user_tokens("service") == 0


@pytest.fixture
def repeating_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """SCAN replies that also return every key of the previous reply again, which Redis
    allows (a key may be returned more than once) but seldom does on a small keyspace."""
    scan = redis.Redis.scan
    previous: list[Any] = []

    def repeating(self: Any, cursor: int = 0, **kwargs: Any) -> Any:
        if not cursor:
            previous.clear()  # a new scan (of another pattern, maybe)
        cursor, found = scan(self, cursor, **kwargs)
        replies = list(found) + previous
        previous[:] = list(found)
        return cursor, replies

    monkeypatch.setattr(redis.Redis, "scan", repeating)


@pytest.mark.usefixtures("repeating_scan")
def test_counts_stay_exact_when_scan_repeats_keys(storage: RedisStorage) -> None:
    storage.import_tokens(make_token(f"u{i % 7}") for i in range(250))
    storage.import_sessions(make_session(f"u{i % 7}") for i in range(150))
    for i in range(60):
        storage.kv_set(f"k{i}", b"v")
    engine = _engine(storage)
    # Small SCAN pages, so that there are many replies to repeat.
    assert sum(1 for _ in engine._scan(engine.keys.pattern("token"), count=10)) > 2
    assert storage.count_active_sessions() == 150
    stats = storage.statistics()
    assert (stats["total_tokens"], stats["active_sessions"], stats["kv_entries"]) == (250, 150, 60)


@pytest.mark.usefixtures("repeating_scan")
def test_iteration_with_repeated_keys_still_copies_every_record_once(
    storage: RedisStorage,
) -> None:
    tokens = [make_token(f"u{i % 7}") for i in range(250)]
    storage.import_tokens(tokens)
    copy = InMemoryStorage()
    seen = 0
    for batch in storage.iter_tokens(batch_size=10):
        assert len({t.token_id for t in batch}) == len(batch)  # no repeat within a batch
        seen += len(batch)
        copy.import_tokens(batch)  # an upsert: a repeated record is written again, same
    assert seen >= len(tokens)
    copied = [t for batch in copy.iter_tokens() for t in batch]
    assert sorted(t.token_id for t in copied) == sorted(t.token_id for t in tokens)


def test_storage_is_empty_scans_a_large_shared_keyspace_in_few_round_trips(
    storage: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another application's keys on the same database: SCAN walks them too.
    client = redis.Redis.from_url(REDIS_TEST_URL)
    foreign = unique_prefix() + "foreign:"
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(5000):
            pipe.set(f"{foreign}{i}", b"x", ex=600)
        pipe.execute()
        calls: list[int] = []
        scan = redis.Redis.scan

        def counting(self: Any, cursor: int = 0, **kwargs: Any) -> Any:
            calls.append(int(kwargs.get("count") or 0))
            return scan(self, cursor, **kwargs)

        monkeypatch.setattr(redis.Redis, "scan", counting)
        assert storage_is_empty(storage)
        # Batches of 1 would take a SCAN per key or so of the database: thousands.
        assert min(calls) >= 1000
        storage.import_tokens([make_token("u")])
        assert not storage_is_empty(storage)
    finally:
        keys = list(client.scan_iter(match=foreign + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
        client.close()
