"""What kind of store is behind a storage: a database, a Redis server, or this process.

The bench needs it for the parts that look past the storage contract: the raw-client baseline
(a redis-py client or a database connection of the same server) and memory per token (Redis
``INFO memory``, PostgreSQL relation sizes, ``tracemalloc`` in this process). A storage of
another kind (one a user wrote) is still timed; it just gets neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from django.db import connections, router

from ..storage import AuthStorage, DatabaseStorage
from ..storage.engine import CacheEngine

Kind = Literal["database", "redis", "in_process", "other"]


@dataclass(frozen=True)
class Backend:
    """The store behind one storage.

    ``db_alias`` is the ``DATABASES`` alias of a database storage; ``redis`` the redis-py client
    and ``key_prefix`` the key prefix of a Redis storage.
    """

    kind: Kind
    storage_class: str
    db_alias: str | None = None
    redis: Any = None
    key_prefix: str | None = None

    @property
    def networked(self) -> bool:
        return self.kind in ("database", "redis")

    @property
    def vendor(self) -> str | None:
        return connections[self.db_alias].vendor if self.db_alias else None


def engine_of(storage: AuthStorage) -> CacheEngine | None:
    """The cache engine a ``CacheStorage`` runs on, or None for other storages."""
    if isinstance(storage, CacheEngine):
        return storage
    for name in ("engine", "_engine"):
        engine = getattr(storage, name, None)
        if isinstance(engine, CacheEngine):
            return engine
    return None


def tokens_db_alias(storage: DatabaseStorage) -> str:
    """The database alias that receives token reads of a database storage."""
    from ..models import Token

    return storage.using or router.db_for_read(Token)


def probe(storage: AuthStorage) -> Backend:
    """Describe the store behind ``storage``."""
    name = type(storage).__name__
    if isinstance(storage, DatabaseStorage):
        return Backend("database", name, db_alias=tokens_db_alias(storage))
    engine = engine_of(storage)
    if engine is not None:
        if engine.in_process:
            return Backend("in_process", name)
        caller = getattr(engine, "call", None)
        keys = getattr(engine, "keys", None)
        if caller is not None and getattr(engine, "backend_name", "") == "redis":
            return Backend(
                "redis",
                name,
                redis=caller.client,
                key_prefix=getattr(keys, "prefix", None),
            )
    return Backend("other", name)


def redis_info(client: Any, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of every primary: one server, or each primary of a Cluster."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        replies = client.info(section, target_nodes=RedisCluster.PRIMARIES)
        if all(isinstance(reply, dict) for reply in replies.values()):
            return list(replies.values())
        return [replies]
    return [client.info(section)]


def server_version(backend: Backend) -> str | None:
    """``"PostgreSQL 15.20"``, ``"SQLite 3.40.1"``, ``"Redis 7.0.15"``; None in-process."""
    if backend.kind == "database" and backend.db_alias:
        connection = connections[backend.db_alias]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SHOW server_version")
                return f"PostgreSQL {cursor.fetchone()[0]}"
            if connection.vendor == "sqlite":
                cursor.execute("SELECT sqlite_version()")
                return f"SQLite {cursor.fetchone()[0]}"
        return connection.display_name
    if backend.kind == "redis":
        servers = redis_info(backend.redis, "server")
        version = servers[0].get("redis_version", "?")
        return f"Redis {version}" + (f" ({len(servers)} primaries)" if len(servers) > 1 else "")
    return None
