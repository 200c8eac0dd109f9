"""Which storage backends the test run covers, and how to build each for a test.

Every backend in ``ALL_BACKENDS`` runs unless ``AUTHFW_TEST_BACKENDS`` narrows the list on
purpose (``AUTHFW_TEST_BACKENDS=database,memory``). A backend whose service is down fails the
run: nothing here skips.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection

from django_authfw.storage import (
    AuthStorage,
    CacheStorage,
    DatabaseStorage,
    InMemoryStorage,
    RedisStorage,
)

REDIS_TEST_URL = os.environ.get("AUTHFW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# What this run owns on shared servers: the checkout (a hash of its path) and the process. Two
# checkouts, or two runs in one checkout, never share a PostgreSQL test database
# (``authfw_test_<RUN_ID>``, see conftest.py) or a Redis key (every storage's prefix starts with
# ``authfw-test:<RUN_ID>:``), so they can run at the same time on one machine.
# The host name is in the hash too: containers that share a database or Redis server often
# mount the checkout at the same path and, in a fresh PID namespace, start pytest with the same
# pid.


def checkout_id(host: str, path: str) -> str:
    """Eight hex digits naming a checkout on a host."""
    return hashlib.sha256(f"{host}:{path}".encode()).hexdigest()[:8]


CHECKOUT_ID = checkout_id(socket.gethostname(), os.path.realpath(__file__))
RUN_ID = f"{CHECKOUT_ID}_{os.getpid()}"

ALL_BACKENDS = ("database", "memory", "locmem", "redis", "redis-cluster", "redis-sentinel")
# Backends whose servers the tests start themselves (tests/redis_servers.py); their tests are
# marked ``slow``. They run the contract suite (tests/contract) and tests/test_redis_*.py; the
# other suites build storages through helpers that know the four base backends, and opt in
# with ``selected_backends(servers=True)`` once those helpers do.
SERVER_BACKENDS = ("redis-cluster", "redis-sentinel")
SERVER_BACKEND_MODULES = ("tests.contract.",)


def selected_backends(*, servers: bool = False) -> list[str]:
    wanted = os.environ.get("AUTHFW_TEST_BACKENDS")
    if not wanted:
        names = list(ALL_BACKENDS)
    else:
        names = [name.strip() for name in wanted.split(",") if name.strip()]
        unknown = sorted(set(names) - set(ALL_BACKENDS))
        if unknown:
            raise ValueError(f"AUTHFW_TEST_BACKENDS names unknown backends: {unknown}")
    return [name for name in names if servers or name not in SERVER_BACKENDS]


def runs_on_server_backends(module_name: str) -> bool:
    """Whether the tests of ``module_name`` are parametrized over the server backends too."""
    return module_name.startswith(SERVER_BACKEND_MODULES)


def backend_id(name: str) -> str:
    """Test id: the database backend shows its vendor, so the PostgreSQL run is visible."""
    return f"database-{connection.vendor}" if name == "database" else name


# Zero-argument factories, one per backend: the contract suite (tests/contract) names them as
# its ``storage_factory``, and ``built_storage`` below builds the same storages for the other
# suites. The two cache aliases they use are ``TEST_CACHES``, added to ``CACHES`` by whoever
# runs them (``with_test_caches``); each storage gets a key prefix of its own, so it starts
# empty and never touches other data (the in-process keyspace is per location and prefix).

LOCMEM_ALIAS = "authfw-test-locmem"
REDIS_ALIAS = "authfw-test-redis"
TEST_CACHES = {
    LOCMEM_ALIAS: {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": LOCMEM_ALIAS,
    },
    REDIS_ALIAS: {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_TEST_URL},
}


def with_test_caches(caches: dict[str, Any]) -> dict[str, Any]:
    """``caches`` (a ``CACHES`` setting) with the two aliases the factories use."""
    return {**caches, **TEST_CACHES}


def unique_prefix() -> str:
    """A Redis key prefix no other storage, test or run uses (``flush()`` deletes only it)."""
    return f"authfw-test:{RUN_ID}:{uuid.uuid4().hex[:12]}:"


def database_storage() -> AuthStorage:
    return DatabaseStorage()


def database_storage_without_fast_sql() -> AuthStorage:
    return DatabaseStorage(fast_sql=False)


def memory_storage() -> AuthStorage:
    return InMemoryStorage()


def locmem_storage() -> AuthStorage:
    return CacheStorage(cache=LOCMEM_ALIAS, key_prefix=unique_prefix())


def redis_storage() -> AuthStorage:
    return CacheStorage(cache=REDIS_ALIAS, key_prefix=unique_prefix())


def redis_cluster_storage() -> AuthStorage:
    from .redis_servers import ensure_cluster

    return RedisStorage(
        cluster_mode=True,
        cluster_urls=ensure_cluster().urls,
        key_prefix=unique_prefix(),
        timeout=2,
        retry_attempts=2,
        retry_delay=0.05,
    )


def redis_sentinel_storage() -> AuthStorage:
    from .redis_servers import ensure_sentinel

    group = ensure_sentinel()
    return RedisStorage(
        url="redis://127.0.0.1/0",  # db 0 of whichever server the Sentinels name primary
        master_name=group.master_name,
        sentinels=group.sentinel_urls,
        sentinel_password=group.password,
        key_prefix=unique_prefix(),
        timeout=2,
        retry_attempts=2,
        retry_delay=0.05,
    )


FACTORIES: dict[str, Callable[[], AuthStorage]] = {
    "database": database_storage,
    "memory": memory_storage,
    "locmem": locmem_storage,
    "redis": redis_storage,
    "redis-cluster": redis_cluster_storage,
    "redis-sentinel": redis_sentinel_storage,
}


@contextmanager
def built_storage(name: str, settings: object) -> Iterator[AuthStorage]:
    """A fresh, empty storage of backend ``name``, flushed and closed afterwards."""
    settings.CACHES = with_test_caches(settings.CACHES)  # type: ignore[attr-defined]
    storage = FACTORIES[name]()
    try:
        yield storage
    finally:
        try:
            storage.flush()
        finally:
            storage.close()


def postgres_server_url() -> str:
    """``postgres://user:password@host:port/`` of the server the run's database is on, else of
    ``AUTHFW_TEST_POSTGRES_URL`` (the tests that need a PostgreSQL server of their own)."""
    from urllib.parse import quote

    db = connection.settings_dict
    if connection.vendor != "postgresql":
        url = os.environ.get("AUTHFW_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/")
        return url.rsplit("/", 1)[0] + "/"
    user = quote(db.get("USER") or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/"
