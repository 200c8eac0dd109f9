"""Raw-client baselines: what the same server gives without the storage layer in between.

* Redis: a redis-py ``GET`` loop on one dedicated connection, of a key holding a value as
  large as a stored token record (the storage's verification reads about that much);
* PostgreSQL: a server-side prepared ``SELECT *`` of the tokens table by the unique access
  digest (``prepare=True``) on one dedicated psycopg connection, cycling through the digests
  of stored tokens.

A baseline opens its own connection (so it never shares a pool with the storage) and closes it
afterwards; the Redis key it reads is deleted too, and has a TTL in case the run is killed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections

from ..records import AuthToken
from ..storage import codec
from .probe import Backend

BASELINE_KEY_TTL_SECONDS = 3600


def token_record_size(sample: AuthToken) -> int:
    """Bytes of a token record as the Redis storage keeps it (its JSON encoding)."""
    return len(codec.encode_token(sample))


@contextmanager
def redis_get_loop(backend: Backend, run_id: str, value_size: int) -> Iterator[Callable[[], Any]]:
    """A redis-py ``GET`` of one existing key, on one connection of the storage's server."""
    import redis

    pool = backend.redis.connection_pool
    # A plain pool of its own with the storage's connection settings (host, port, db,
    # password, TLS), holding the one connection the loop uses.
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs
        ),
        single_connection_client=True,
    )
    key = f"{backend.key_prefix or ''}authfw-bench:{run_id}:baseline"
    try:
        client.set(key, b"x" * value_size, ex=BASELINE_KEY_TTL_SECONDS)
        get = client.get

        def op() -> Any:
            return get(key)

        yield op
    finally:
        try:
            client.delete(key)
        finally:
            client.close()
            client.connection_pool.disconnect()


def _psycopg_params(alias: str) -> dict[str, Any]:
    """Connection keyword arguments of a Django PostgreSQL alias, for a plain psycopg client."""
    params = dict(connections[alias].get_connection_params())
    # Django's cursor class binds parameters client-side and its adapters context is tied to
    # the Django connection: a plain psycopg connection with server-side prepares instead.
    for name in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(name, None)
    return params


@contextmanager
def postgres_select_loop(backend: Backend, digests: list[str]) -> Iterator[Callable[[], Any]]:
    """A prepared ``SELECT * FROM <tokens> WHERE access_token = $1`` on one connection."""
    import psycopg
    from psycopg import sql

    from ..models import Token

    assert backend.db_alias is not None
    conn = psycopg.connect(**_psycopg_params(backend.db_alias), autocommit=True)
    try:
        column = Token._meta.get_field("access_token").column
        assert column is not None
        query = sql.SQL("SELECT * FROM {} WHERE {} = %s").format(
            sql.Identifier(Token._meta.db_table), sql.Identifier(column)
        )
        cursor = conn.cursor()
        execute, fetchone = cursor.execute, cursor.fetchone
        next_digest = itertools.cycle(digests).__next__

        def op() -> Any:
            execute(query, (next_digest(),), prepare=True)
            return fetchone()

        yield op
    finally:
        conn.close()


def _plain_pool(client: Any) -> bool:
    # Cluster clients have no single pool and Sentinel pools find their server themselves:
    # the baseline covers a single server, the setup the targets are about.
    import redis

    pool = getattr(client, "connection_pool", None)
    return type(pool) in (redis.ConnectionPool, redis.BlockingConnectionPool)


BASELINE_NAMES = {
    "redis": "redis-py GET, one connection",
    "database": "psycopg prepared SELECT by digest, one connection",
}


def baseline_for(
    backend: Backend, *, run_id: str, digests: list[str], value_size: int
) -> Any | None:
    """The baseline context manager for ``backend``, or None when it has none.

    Only Redis and PostgreSQL have one: SQLite and in-process stores have no network
    round trip to compare against.
    """
    if backend.kind == "redis" and _plain_pool(backend.redis):
        return redis_get_loop(backend, run_id, value_size)
    if backend.kind == "database" and backend.vendor == "postgresql":
        return postgres_select_loop(backend, digests)
    return None
