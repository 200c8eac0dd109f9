"""Raw baselines: what the same store gives without the storage layer in between.

For verification (``baseline``):

* Redis: a redis-py ``GET`` loop on one dedicated connection, of a key holding a value as
  large as a stored token record (the storage's verification reads about that much);
* PostgreSQL: a server-side prepared ``SELECT *`` of the tokens table by the unique access
  digest (``prepare=True``) on one dedicated psycopg connection, cycling through the digests
  of stored tokens;
* in-process stores: a dict lookup of the SHA-256 hex digest of a presented token (what any
  in-memory verification has to do at least).

For token issue (``baseline_insert``, PostgreSQL): a server-side prepared ``INSERT`` of a
whole token row (every column, fresh ids and digests) into the tokens table in autocommit, so
each is one ``INSERT ... COMMIT``, on one dedicated psycopg connection per process: the same
table, indexes and commits as the storage's issue.

A baseline opens its own connection (so it never shares a pool with the storage) and closes it
afterwards; the Redis key it reads is deleted too, and has a TTL in case the run is killed; the
rows the insert loop writes belong to the run's user and go with the run's cleanup.
"""

from __future__ import annotations

import hashlib
import itertools
import os
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


@contextmanager
def dict_sha256_loop(raws: list[str]) -> Iterator[Callable[[], Any]]:
    """``dict[sha256(token).hexdigest()]`` over the stored tokens, the floor of an in-process
    verification."""
    table = {hashlib.sha256(raw.encode()).hexdigest(): raw for raw in raws}
    sha256 = hashlib.sha256
    next_raw = itertools.cycle(raws).__next__

    def op() -> Any:
        return table[sha256(next_raw().encode()).hexdigest()]

    yield op


@contextmanager
def postgres_insert_loop(backend: Backend, user_pk: Any) -> Iterator[Callable[[], Any]]:
    """A prepared ``INSERT`` of a whole token row of ``user_pk``, committed one by one."""
    import psycopg
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from ..models import Token
    from ..records import utcnow

    assert backend.db_alias is not None
    conn = psycopg.connect(**_psycopg_params(backend.db_alias), autocommit=True)
    try:
        fields = list(Token._meta.concrete_fields)
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(Token._meta.db_table),
            sql.SQL(", ").join(sql.Identifier(str(f.column)) for f in fields),
            sql.SQL(", ").join(sql.Placeholder() for _ in fields),
        )
        cursor = conn.cursor()
        execute = cursor.execute
        names = [f.attname for f in fields]
        now = utcnow()
        fixed = {
            "user_id": user_pk,
            "token_type": "Bearer",
            "expires_at": now,
            "refresh_expires_at": now,
            "retain_until": now,
            "created_at": now,
            "updated_at": now,
            "revoked_at": None,
            "replaced_by": None,
            "permissions": Jsonb([]),
            "roles": Jsonb([]),
            "metadata": Jsonb({}),
        }

        def op() -> Any:
            fresh = os.urandom(80).hex()  # the row's own id and digests
            values = {
                "token_id": fresh[:22],
                "access_token": fresh[22:86],
                "refresh_token": fresh[86:150],
                "family_id": fresh[:22],
                **fixed,
            }
            execute(query, [values[name] for name in names], prepare=True)

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
    "in_process": "dict lookup of the token's SHA-256 hex digest",
}
INSERT_BASELINE_NAME = "psycopg prepared INSERT of a token row + COMMIT, one connection each"


def baseline_for(
    backend: Backend,
    *,
    run_id: str,
    digests: list[str],
    value_size: int,
    raws: list[str] | None = None,
) -> Any | None:
    """The verification baseline context manager for ``backend``, or None when it has none.

    Redis, PostgreSQL and in-process stores have one: SQLite has no network round trip and no
    dict to compare against.
    """
    if backend.kind == "redis" and _plain_pool(backend.redis):
        return redis_get_loop(backend, run_id, value_size)
    if backend.kind == "database" and backend.vendor == "postgresql":
        return postgres_select_loop(backend, digests)
    if backend.kind == "in_process" and raws:
        return dict_sha256_loop(raws)
    return None


def insert_baseline_for(backend: Backend, *, user_pk: Any) -> Any | None:
    """The token-issue baseline context manager (PostgreSQL with a real user), or None."""
    if backend.kind == "database" and backend.vendor == "postgresql" and user_pk is not None:
        return postgres_insert_loop(backend, user_pk)
    return None
