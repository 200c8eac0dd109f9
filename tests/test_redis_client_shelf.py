"""The kept connections of the Redis storages (``redis_client.ClientShelf``).

Idempotent calls run on a client that keeps its connection, which skips redis-py's per-command
pool checkout; these tests pin down what that must not break: connections are reused and
bounded, a connection the server dropped is recovered from, a failed call never hands its
connection to the next one, and a forked child never talks on its parent's sockets.
Every test runs against a private ``redis-server`` so that ``CLIENT LIST`` sees only us.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from django_authfw.storage import RedisStorage
from django_authfw.storage.redis.client import ClientShelf

from .factories import AuthTokenFactory
from .redis_servers import CLUSTER_PORTS, HOST, ServerProcess, free_block, start_server

pytestmark = pytest.mark.slow  # starts a redis-server of its own


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_block(CLUSTER_PORTS, 1)[0]
    process = start_server(
        port, tmp_path_factory.mktemp("shelf-redis"), "--save", "", "--appendonly", "no"
    )
    yield process
    process.stop()


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[redis.Redis]:
    client = server.client()
    yield client
    client.close()


def make_storage(server: ServerProcess, pool_size: int = 10) -> RedisStorage:
    return RedisStorage(
        url=f"redis://{HOST}:{server.port}/0",
        key_prefix=f"authfw-test:{uuid.uuid4().hex[:12]}:",
        pool_size=pool_size,
        retry_attempts=2,
        retry_delay=0.01,
    )


def client_ids(admin: redis.Redis) -> set[str]:
    """Ids of the connections to the server other than ``admin``'s own.

    Tests compare these sets rather than counts: a client of an earlier test module may still
    be connected (its server stopped and this one took the port).
    """
    own = admin.client_id()
    return {c["id"] for c in admin.client_list() if int(c["id"]) != own}


def shelf_of(storage: RedisStorage) -> ClientShelf:
    caller = storage._engine.call  # type: ignore[attr-defined]
    caller.client  # noqa: B018 - builds the client and its shelf
    shelf = caller._shelf
    assert isinstance(shelf, ClientShelf)
    return shelf


def test_reads_reuse_one_kept_connection(server: ServerProcess, admin: redis.Redis) -> None:
    before = client_ids(admin)
    storage = make_storage(server)
    token = AuthTokenFactory.build(user_id="1")
    storage.store_token(token)
    for _ in range(50):
        assert storage.get_token_by_access(token.access_digest) == token
    assert len(client_ids(admin) - before) <= 2  # the kept one and the pool's for the write
    assert shelf_of(storage)._count == 1
    storage.flush()
    storage.close()
    assert client_ids(admin) - before == set()  # every connection it opened is closed


def test_keep_connections_off_checks_out_of_the_pool_every_call(
    server: ServerProcess, admin: redis.Redis
) -> None:
    before = client_ids(admin)
    storage = RedisStorage(
        url=f"redis://{HOST}:{server.port}/0",
        key_prefix=f"authfw-test:{uuid.uuid4().hex[:12]}:",
        keep_connections=False,
    )
    token = AuthTokenFactory.build(user_id="1")
    storage.store_token(token)
    for _ in range(20):
        assert storage.get_token_by_access(token.access_digest) == token
    caller = storage._engine.call  # type: ignore[attr-defined]
    assert caller._shelf is None
    pool = caller.client.connection_pool
    # Every connection is back in the pool between calls: none is held aside.
    assert len(pool._connections) == pool.pool.qsize() - pool.pool.queue.count(None)
    assert len(client_ids(admin) - before) == 1
    storage.flush()
    storage.close()


def test_a_dropped_kept_connection_is_recovered(server: ServerProcess, admin: redis.Redis) -> None:
    storage = make_storage(server)
    token = AuthTokenFactory.build(user_id="1")
    storage.store_token(token)
    assert storage.get_token_by_access(token.access_digest) == token
    # The server drops every connection (a restart, an idle timeout, a proxy).
    admin.client_kill_filter(_type="normal", skipme=True)
    assert storage.get_token_by_access(token.access_digest) == token  # retried, reconnected
    assert storage.kv_incr("n") == 1  # not idempotent: never on a kept connection
    assert storage.kv_incr("n") == 2
    storage.flush()
    storage.close()


def test_a_failed_call_closes_its_client(server: ServerProcess) -> None:
    storage = make_storage(server)
    shelf = shelf_of(storage)
    storage.kv_get("warm")
    assert len(shelf._idle) == 1
    kept = shelf._idle[0]

    def fails(client: Any) -> None:
        client.get("x")
        raise RuntimeError("the caller's code failed after sending")

    with pytest.raises(RuntimeError):
        storage._engine.call(fails)  # type: ignore[attr-defined]
    assert shelf._count == 0
    assert shelf._idle == []
    assert kept.connection is None  # closed: its connection went back to the pool
    assert storage.kv_get("warm") is None  # a new client works
    assert shelf._idle
    assert shelf._idle[0] is not kept
    storage.close()


def test_at_most_half_the_pool_is_kept(server: ServerProcess, admin: redis.Redis) -> None:
    before = client_ids(admin)
    storage = make_storage(server, pool_size=4)
    shelf = shelf_of(storage)
    tokens = [AuthTokenFactory.build(user_id=str(i % 3)) for i in range(40)]
    storage.import_tokens(tokens)
    barrier = threading.Barrier(8)

    def read(index: int) -> bool:
        barrier.wait()
        token = tokens[index % len(tokens)]
        ok = all(storage.get_token_by_access(token.access_digest) == token for _ in range(20))
        # Pipelines take a connection of the pool: there is always one left for them.
        return ok and len(storage.list_user_tokens(token.user_id)) > 0

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(read, range(8)))
    assert shelf._count <= 2
    assert len(client_ids(admin) - before) <= 4
    storage.flush()
    storage.close()


@pytest.mark.parametrize("pool_size", [2, 3, 10])
def test_kept_connections_never_starve_a_blocking_pool(
    server: ServerProcess, pool_size: int
) -> None:
    """The shelf keeps up to half the pool for good, and a call on a kept connection may take a
    second one of the pool for a pipeline. With the pool blocking, that must never deadlock:
    at most half the connections are held by callers that wait for another, so the other half
    always comes free. 60 threads released together; no retries, so any wait that ran out
    ("No connection available") would show as an error."""
    storage = RedisStorage(
        url=f"redis://{HOST}:{server.port}/0",
        key_prefix=f"authfw-test:{uuid.uuid4().hex[:12]}:",
        pool_size=pool_size,
        timeout=10,
        retry_attempts=0,
    )
    shelf = shelf_of(storage)
    tokens = [AuthTokenFactory.build(user_id=str(i % 5)) for i in range(60)]
    storage.import_tokens(tokens)
    for index in range(20):
        storage.kv_set(f"k{index}", b"v")
    barrier = threading.Barrier(len(tokens))
    errors: list[str] = []

    def work(token: Any) -> None:
        barrier.wait()
        try:
            assert storage.get_token_by_access(token.access_digest) == token  # kept connection
            # A pipeline (one more connection) inside a call on a kept connection.
            # 20, or 21 once the first kv_incr below made "n"
            assert sum(len(batch) for batch in storage.iter_kv(batch_size=5)) >= 20
            assert storage.statistics()["kv_entries"] >= 20  # pipelined MEMORY USAGE too
            storage.kv_incr("n")  # the pool, never the shelf
        except Exception as exc:  # counted: the assertion below lists them all
            errors.append(repr(exc))

    with ThreadPoolExecutor(len(tokens)) as pool:
        list(pool.map(work, tokens))
    assert errors == []
    assert storage.kv_get("n") == b"60"
    assert shelf._count <= pool_size // 2
    storage.flush()
    storage.close()


def test_a_forked_child_opens_its_own_connection(server: ServerProcess) -> None:
    storage = make_storage(server)
    storage.kv_set("k", b"v")
    assert storage.kv_get("k") == b"v"
    shelf = shelf_of(storage)
    parent_port = shelf._idle[0].connection._sock.getsockname()[1]  # type: ignore[union-attr]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            value = storage.kv_get("k")
            client = shelf._idle[0]
            port = client.connection._sock.getsockname()[1]  # type: ignore[union-attr]
            os.write(write_end, f"{value!r} {port}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    reply = os.read(read_end, 200).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    shown, port = reply.split()
    assert shown == "b'v'"
    assert int(port) != parent_port
    assert storage.kv_get("k") == b"v"  # the parent's kept connection still works
    storage.flush()
    storage.close()
