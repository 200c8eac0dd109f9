"""Atomic counters for ``DatabaseStorage.kv_incr``.

Counters are key-value entries whose value is the decimal text of an integer (``b"3"``), so
``kv_get`` reads them like any other value. On PostgreSQL and SQLite an increment is a single
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` statement: the database serialises concurrent
increments of one key on the row (PostgreSQL) or the write lock (SQLite), so no update is lost
and no retry is needed. Other databases use :func:`incr_locked`, a ``SELECT ... FOR UPDATE``
transaction that retries when two callers create the same counter at once.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, connections, transaction
from django.db.models import Model

from ... import validate
from .queries import column
from .rows import from_db, to_db

_CREATE_RETRIES = 3


def parse_counter(key: str, value: bytes | memoryview) -> int:
    """Return the integer a counter value holds, or raise :class:`InvalidInput`."""
    return validate.counter(key, value)


# In both statements an existing row counts as expired when its expiry is at or before the
# ``created_at`` of the row being inserted, which is "now" of this call; a reset row takes the
# new created_at and expiry, an increment keeps them (a fixed window). The DO UPDATE ... WHERE
# refuses values that are not canonical integers of at most 18 digits (validate.counter): no
# row comes back and nothing changes.
_POSTGRESQL = """
INSERT INTO {table} AS t ({key}, {value}, {created}, {expires}) VALUES (%s, %s, %s, %s)
ON CONFLICT ({key}) DO UPDATE SET
    {value} = CASE WHEN {expired}
        THEN EXCLUDED.{value}
        ELSE convert_to((encode(t.{value}, 'escape')::bigint + 1)::text, 'UTF8') END,
    {created} = CASE WHEN {expired} THEN EXCLUDED.{created} ELSE t.{created} END,
    {expires} = CASE WHEN {expired} THEN EXCLUDED.{expires} ELSE t.{expires} END
WHERE {expired} OR encode(t.{value}, 'escape') ~ '^(0|-?[1-9][0-9]{{0,17}})$'
RETURNING {value}
"""

_SQLITE = """
INSERT INTO {table} AS t ({key}, {value}, {created}, {expires}) VALUES (%s, %s, %s, %s)
ON CONFLICT ({key}) DO UPDATE SET
    {value} = CASE WHEN {expired}
        THEN excluded.{value}
        ELSE CAST(CAST(CAST(CAST(t.{value} AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB) END,
    {created} = CASE WHEN {expired} THEN excluded.{created} ELSE t.{created} END,
    {expires} = CASE WHEN {expired} THEN excluded.{expires} ELSE t.{expires} END
WHERE {expired}
    OR (CAST(CAST(CAST(t.{value} AS TEXT) AS INTEGER) AS TEXT) = CAST(t.{value} AS TEXT)
        AND length(ltrim(CAST(t.{value} AS TEXT), '-')) <= 18)
RETURNING {value}
"""

_STATEMENTS = {"postgresql": _POSTGRESQL, "sqlite": _SQLITE}


def supports_upsert(alias: str) -> bool:
    """Whether :func:`incr_upsert` can run on database ``alias``."""
    connection = connections[alias]
    return (
        connection.vendor in _STATEMENTS
        and connection.features.can_return_columns_from_insert
        and connection.features.supports_update_conflicts_with_target
    )


def incr_upsert(
    alias: str, model: type[Model], key: str, now: datetime, expires_at: datetime | None
) -> int:
    """Increment ``key`` with one statement; see the module docstring."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    opts = model._meta
    names = {
        "table": quote(opts.db_table),
        "key": quote(column(model, "key")),
        "value": quote(column(model, "value")),
        "created": quote(column(model, "created_at")),
        "expires": quote(column(model, "expires_at")),
    }
    template = _STATEMENTS[connection.vendor]
    excluded = "EXCLUDED" if connection.vendor == "postgresql" else "excluded"
    names["expired"] = (
        f"(t.{names['expires']} IS NOT NULL AND t.{names['expires']} <= "
        f"{excluded}.{names['created']})"
    )
    sql = template.format(**names)
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        key,
        b"1",
        adapt(to_db(now)),
        None if expires_at is None else adapt(to_db(expires_at)),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:  # the WHERE refused the stored value (the same rule as validate.counter)
        raise validate.not_a_counter(key)
    # The new value, written already: one past the widest counter (10**18) is a result, not
    # an error (the next increment refuses it, as on every backend).
    return int(bytes(row[0]))


def incr_locked(
    alias: str, model: type[Model], key: str, now: datetime, expires_at: datetime | None
) -> int:
    """Increment ``key`` in a ``SELECT ... FOR UPDATE`` transaction (any database)."""
    manager = model._default_manager.db_manager(alias)
    expiry = None if expires_at is None else to_db(expires_at)
    for attempt in range(_CREATE_RETRIES):
        try:
            with transaction.atomic(using=alias):
                rows = list(
                    manager.select_for_update()
                    .filter(key=key)
                    .values_list("value", "expires_at")[:1]
                )
                if not rows:
                    # Raises IntegrityError if another caller created it meanwhile: retry,
                    # and the SELECT ... FOR UPDATE then waits for and sees that row.
                    manager.create(key=key, value=b"1", created_at=to_db(now), expires_at=expiry)
                    return 1
                value, current_expiry = rows[0]
                if current_expiry is not None and from_db(current_expiry) <= now:
                    manager.filter(key=key).update(
                        value=b"1", created_at=to_db(now), expires_at=expiry
                    )
                    return 1
                number = parse_counter(key, value) + 1
                manager.filter(key=key).update(value=str(number).encode())
                return number
        except IntegrityError:
            if attempt == _CREATE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
