"""Redis with Sentinel and Redis Cluster, for real: a failover that kills the primary, and the
Cluster-only rules (ordered writes, delayed pruning, the audit hash tag).

The contract suite runs on both deployments too (backends ``redis-sentinel`` and
``redis-cluster``); these tests cover what it cannot see.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from django_authfw.exceptions import CredentialsRefused, StorageUnavailable
from django_authfw.records import AuthToken, utcnow
from django_authfw.storage import CacheStorage, RedisStorage
from django_authfw.storage.redis.client import BoundedSentinelPool

from .factories import AuthTokenFactory
from .redis_servers import ClusterInfo, SentinelInfo, connections_received, sentinel_group
from .test_cache_storage import burst

pytestmark = pytest.mark.slow


def unique_prefix() -> str:
    return f"authfw-test:{uuid.uuid4().hex[:12]}:"


# Sentinel failover ----------------------------------------------------------------------------


@pytest.fixture
def own_sentinel_group(tmp_path: Path) -> Iterator[SentinelInfo]:
    """A group of this test alone: the test kills its primary."""
    with sentinel_group(tmp_path) as group:
        yield group


def sentinel_storage(group: SentinelInfo, **options: object) -> RedisStorage:
    settings: dict[str, object] = {
        "url": "redis://127.0.0.1/0",
        "master_name": group.master_name,
        "sentinels": group.sentinel_urls,
        "sentinel_password": group.password,
        "key_prefix": "authfw-test:failover:",
        "timeout": 0.5,
        "retry_attempts": 12,
        "retry_delay": 0.5,
    }
    settings.update(options)
    return RedisStorage(**settings)  # type: ignore[arg-type]


def test_failover_keeps_acknowledged_writes(own_sentinel_group: SentinelInfo) -> None:
    group = own_sentinel_group
    # replica_acks=1: a write is acknowledged only after WAIT 1 on the connection that made
    # it returned 1, i.e. the replica has it (replication is one ordered stream).
    storage = sentinel_storage(group, replica_acks=1, replica_ack_timeout=2)
    tokens = [AuthTokenFactory.build(user_id="u1") for _ in range(20)]
    for token in tokens:
        storage.store_token(token)
    storage.kv_set("config", b"kept")
    assert storage.revoke_token(tokens[0].token_id, at=utcnow()) is True
    waits = group.primary.client().info("commandstats")["cmdstat_wait"]["calls"]
    assert waits >= 22  # every write above waited for the replica

    group.primary.kill()  # SIGKILL: a crash, nothing handed over
    started = time.monotonic()
    # One call rides out the failover inside its retry budget: it fails on the dead primary,
    # asks the Sentinels again on each retry, and succeeds once the replica is promoted.
    found = storage.get_token_by_access(tokens[1].access_digest)
    recovered_after = time.monotonic() - started
    assert found == tokens[1]
    assert recovered_after < storage.retry_budget, (recovered_after, storage.retry_budget)
    print(f"\nfailover: recovered after {recovered_after:.2f}s (budget {storage.retry_budget}s)")

    assert group.current_primary_port() == group.replica.port
    for token in tokens[1:]:
        assert storage.get_token_by_access(token.access_digest) == token
    revoked = storage.get_token(tokens[0].token_id)
    assert revoked is not None
    assert revoked.revoked_at is not None  # the revocation survived
    assert storage.kv_get("config") == b"kept"
    assert {t.token_id for t in storage.list_user_tokens("u1")} == {t.token_id for t in tokens}

    # The new primary has no replica left: a write that must reach one fails closed ...
    strict = sentinel_storage(group, replica_acks=1, replica_ack_timeout=0.2, retry_attempts=1)
    late = AuthTokenFactory.build(user_id="u1")
    with pytest.raises(StorageUnavailable, match="1 replicas"):
        strict.store_token(late)
    strict.close()
    # ... while a storage without replica_acks writes, atomically as before.
    relaxed = sentinel_storage(group)
    relaxed.store_token(late)
    assert relaxed.revoke_token(late.token_id, at=utcnow()) is True
    assert relaxed.revoke_token(late.token_id, at=utcnow()) is False
    relaxed.flush()
    relaxed.close()
    storage.close()


def test_django_redis_sentinel_alias_with_bounded_pool_queues_a_burst(
    redis_sentinel: SentinelInfo, settings: Any
) -> None:
    """The fix authfw.W021 names for a django-redis Sentinel alias: 100 threads on a
    BoundedSentinelPool of 10 give zero errors."""
    settings.CACHES = {
        **settings.CACHES,
        "authfw-sentinel-burst": {
            "BACKEND": "django_redis.cache.RedisCache",
            # django-redis keeps one pool per LOCATION for the process: a name of this test's.
            "LOCATION": f"redis://{redis_sentinel.master_name}/0?client_name=authfw-sentinel-burst",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": [("127.0.0.1", s.port) for s in redis_sentinel.sentinels],
                "SENTINEL_KWARGS": {"password": redis_sentinel.password},
                "CONNECTION_POOL_CLASS": "django_authfw.storage.redis.BoundedSentinelPool",
                "CONNECTION_POOL_KWARGS": {"max_connections": 10, "wait": 20},
            },
        },
    }
    storage = CacheStorage(cache="authfw-sentinel-burst", key_prefix=unique_prefix())
    pool = storage.engine.call.client.connection_pool  # type: ignore[attr-defined]
    assert isinstance(pool, BoundedSentinelPool)
    assert pool.max_connections == 10
    assert burst(storage) == []
    assert storage.kv_get("burst") == b"100"
    storage.flush()
    storage.close()
    pool.disconnect()


# Refused credentials ------------------------------------------------------------------------------


def test_a_refused_sentinel_password_fails_at_once(redis_sentinel: SentinelInfo) -> None:
    """Wrong ``sentinel_password``: every Sentinel answers WRONGPASS, redis-py reports
    "No master found" (a ConnectionError); that is not retried, and says why."""
    admins = [redis_sentinel.sentinel_client(i) for i in range(len(redis_sentinel.sentinels))]
    storage = sentinel_storage(
        redis_sentinel,
        sentinel_password="wrong-password",
        key_prefix=unique_prefix(),
        retry_attempts=5,
        retry_delay=0.01,
    )
    before = [connections_received(admin) for admin in admins]
    with pytest.raises(CredentialsRefused, match="the Sentinels refused the credentials") as info:
        storage.get_token_by_access("a" * 64)
    after = [connections_received(admin) for admin in admins]
    # One attempt: each Sentinel was asked once (six attempts would be six connections each).
    assert [b - a for a, b in zip(before, after, strict=True)] == [1] * len(admins)
    assert isinstance(info.value, StorageUnavailable)
    assert "sentinel_password" in str(info.value)
    assert "wrong-password" not in str(info.value)
    storage.close()
    for admin in admins:
        admin.close()


def test_a_refused_data_node_password_behind_sentinel_fails_at_once(
    redis_sentinel: SentinelInfo,
) -> None:
    """The Sentinels accept their password, the primary refuses the data password (it has
    none, so AUTH is refused): not retried either."""
    primary = redis_sentinel.primary.client()
    connections_received(primary)
    storage = sentinel_storage(
        redis_sentinel,
        url="redis://:wrong-password@127.0.0.1/0",
        key_prefix=unique_prefix(),
        retry_attempts=5,
        retry_delay=0.01,
    )
    before = connections_received(primary)
    with pytest.raises(CredentialsRefused, match="the server refused the credentials"):
        storage.store_token(AuthTokenFactory.build(user_id="u1"))
    assert connections_received(primary) - before == 1
    storage.close()
    primary.close()


# Cluster ----------------------------------------------------------------------------------------


@pytest.fixture
def cluster_storage(redis_cluster: ClusterInfo) -> Iterator[RedisStorage]:
    storage = RedisStorage(
        cluster_mode=True,
        cluster_urls=redis_cluster.urls,
        key_prefix=unique_prefix(),
        timeout=1,
        retry_attempts=1,
        retry_delay=0.05,
    )
    yield storage
    storage.flush()
    storage.close()


def cluster_client(info: ClusterInfo) -> redis.RedisCluster:
    return redis.RedisCluster(host="127.0.0.1", port=info.nodes[0].port)


def test_cluster_refused_password_and_unreachable_seeds(redis_cluster: ClusterInfo) -> None:
    """redis-py raises RedisClusterException (not a RedisError) when no seed node can be used;
    it used to escape raw. A refused password now fails at once (one connection per seed
    node), unreachable seeds are retried and end as StorageUnavailable."""
    admins = [node.client() for node in redis_cluster.nodes]
    for admin in admins:
        connections_received(admin)
    refused = RedisStorage(
        cluster_mode=True,
        cluster_urls=[
            u.replace("redis://", "redis://:wrong-password@") for u in redis_cluster.urls
        ],
        retry_attempts=5,
        retry_delay=0.01,
    )
    before = sum(connections_received(admin) for admin in admins)
    with pytest.raises(CredentialsRefused, match="refused the credentials") as info:
        refused.get_token("x")
    assert sum(connections_received(admin) for admin in admins) - before <= len(admins)
    assert "wrong-password" not in str(info.value)
    refused.close()
    for admin in admins:
        admin.close()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends
    unreachable = RedisStorage(
        cluster_mode=True,
        cluster_urls=[f"redis://127.0.0.1:{port}"],
        timeout=0.5,
        retry_attempts=1,
        retry_delay=0.01,
    )
    with pytest.raises(StorageUnavailable, match=r"unreachable or too slow \(2 attempts\)"):
        unreachable.get_token("x")
    unreachable.close()


def test_cluster_spreads_keys_and_keeps_audit_in_one_slot(
    cluster_storage: RedisStorage, redis_cluster: ClusterInfo
) -> None:
    tokens = [AuthTokenFactory.build(user_id=f"u{i}") for i in range(30)]
    for token in tokens:
        cluster_storage.store_token(token)
    raw = cluster_client(redis_cluster)
    prefix = cluster_storage.key_prefix
    slots = {raw.keyslot(f"{prefix}token:{t.token_id}") for t in tokens}
    nodes = {raw.get_node_from_key(f"{prefix}token:{t.token_id}").name for t in tokens}
    assert len(slots) > 1  # records really live on every master
    assert len(nodes) == 3
    for token in tokens:  # pointer and record in different slots, found all the same
        assert cluster_storage.get_token_by_access(token.access_digest) == token
        assert cluster_storage.list_user_tokens(token.user_id) == [token]
    audit_slots = {
        raw.keyslot(f"{prefix}audit:{{log}}:{part}") for part in ("order", "events", "seq")
    }
    assert len(audit_slots) == 1  # the hash tag: appending stays one atomic script
    raw.close()


def test_cluster_prunes_stale_entries_but_not_a_write_in_flight(
    cluster_storage: RedisStorage, redis_cluster: ClusterInfo
) -> None:
    """A crash between the index write and the record write leaves a stale entry; pruning
    waits ``timeout`` and looks again, so a record written meanwhile keeps its entry."""
    raw = cluster_client(redis_cluster)
    prefix = cluster_storage.key_prefix
    index = f"{prefix}user:u1:tokens"
    live = AuthTokenFactory.build(user_id="u1")
    cluster_storage.store_token(live)
    # A token whose index entry was written and whose record is still on its way.
    in_flight = AuthTokenFactory.build(user_id="u1")
    raw.sadd(index, "crashed", in_flight.token_id)
    # Listing filters stale ids without pruning them (Cluster prunes only in cleanup).
    assert cluster_storage.list_user_tokens("u1") == [live]

    cleanup = threading.Thread(target=cluster_storage.cleanup_expired_tokens)
    cleanup.start()
    time.sleep(0.3)  # cleanup has seen both ids without a record and is waiting
    cluster_storage.store_token(in_flight)  # ... when the delayed record arrives
    cleanup.join(10)
    members = raw.smembers(index)
    assert {m.decode() if isinstance(m, bytes) else m for m in members} == {
        live.token_id,
        in_flight.token_id,
    }
    assert {t.token_id for t in cluster_storage.list_user_tokens("u1")} == {
        live.token_id,
        in_flight.token_id,
    }
    raw.close()


def test_cluster_index_ttl_and_kv(
    cluster_storage: RedisStorage, redis_cluster: ClusterInfo
) -> None:
    raw = cluster_client(redis_cluster)
    prefix = cluster_storage.key_prefix
    token = AuthTokenFactory.build(user_id="u9", refresh_expires_at=utcnow() + timedelta(hours=3))
    cluster_storage.store_token(token)
    assert abs(raw.pttl(f"{prefix}user:u9:tokens") - 3 * 3600_000) < 3000
    assert abs(raw.pttl(f"{prefix}token:{token.token_id}") - 3 * 3600_000) < 3000
    cluster_storage.kv_set("plain", b"1")
    assert raw.ttl(f"{prefix}kv:plain") == -1
    assert cluster_storage.kv_incr("n", ttl=timedelta(minutes=1)) == 1
    assert cluster_storage.statistics()["memory_used_bytes"]
    raw.close()


def test_sentinel_pool_queues_a_burst(redis_sentinel: SentinelInfo) -> None:
    """100 threads on a pool of 4: callers wait for a connection instead of failing."""
    storage = RedisStorage(
        url="redis://127.0.0.1/0",
        master_name=redis_sentinel.master_name,
        sentinels=redis_sentinel.sentinel_urls,
        sentinel_password=redis_sentinel.password,
        key_prefix=unique_prefix(),
        pool_size=4,
        timeout=5,
    )
    tokens = [AuthTokenFactory.build(user_id=f"u{i % 10}") for i in range(100)]
    barrier = threading.Barrier(len(tokens))

    def work(token: AuthToken) -> None:
        barrier.wait()
        storage.store_token(token)
        assert token.token_id in {t.token_id for t in storage.list_user_tokens(token.user_id)}

    with ThreadPoolExecutor(len(tokens)) as pool:
        list(pool.map(work, tokens))
    for token in tokens:
        assert storage.get_token_by_access(token.access_digest) == token
    for user in range(10):
        expected = {t.token_id for t in tokens if t.user_id == f"u{user}"}
        assert {t.token_id for t in storage.list_user_tokens(f"u{user}")} == expected
    storage.flush()
    storage.close()


@pytest.mark.parametrize("waits", [True, False], ids=["waits", "refuses"])
def test_wait_for_connection_decides_whether_a_sentinel_burst_queues(
    redis_sentinel: SentinelInfo, waits: bool
) -> None:
    """With ``wait_for_connection`` (the default) the pool is a BoundedSentinelPool and a
    burst of 100 callers on 4 connections queues; without it redis-py's Sentinel pool
    refuses the callers it has no connection for (no retries here, so they fail)."""
    storage = RedisStorage(
        url="redis://127.0.0.1/0",
        master_name=redis_sentinel.master_name,
        sentinels=redis_sentinel.sentinel_urls,
        sentinel_password=redis_sentinel.password,
        key_prefix=unique_prefix(),
        pool_size=4,
        timeout=5,
        retry_attempts=0,
        wait_for_connection=waits,
    )
    storage.kv_set("warm", b"1")
    pool = storage.engine.call.client.connection_pool  # type: ignore[attr-defined]
    assert isinstance(pool, BoundedSentinelPool) is waits
    errors = burst(storage)
    if waits:
        assert errors == []
    else:
        assert errors, "a pool of 4 that does not wait served 100 callers at once"
        assert all("Too many connections" in error for error in errors), errors[:3]
    storage.flush()
    storage.close()


def test_a_forked_child_gets_the_whole_sentinel_pool(redis_sentinel: SentinelInfo) -> None:
    """BoundedSentinelPool counts its free connections with a semaphore. redis-py resets the
    pool in a forked child, so the slots of connections the parent had out (its kept
    connections among them) must come back too: else the child's shelf takes what is left and
    every call that needs the pool (kv_incr, a pipeline) waits out its timeout."""
    storage = sentinel_storage(
        redis_sentinel, key_prefix=unique_prefix(), pool_size=2, timeout=1, retry_attempts=0
    )
    storage.kv_set("k", b"v")
    assert storage.kv_get("k") == b"v"  # the parent keeps one of its 2 connections
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            try:
                assert storage.kv_get("k") == b"v"  # the child's shelf keeps one connection
                reply = f"ok {storage.kv_incr('n')}"  # the pool: needs the other one
            except Exception as exc:
                reply = repr(exc)
            os.write(write_end, reply.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    reply = os.read(read_end, 2000).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    assert reply == "ok 1"
    assert storage.kv_incr("n") == 2  # the parent's pool is untouched
    storage.flush()
    storage.close()
