"""Lookups of one unexpired row by a unique column, compiled once per database connection:
the token verification hot path, and session and key-value reads.

Building and compiling a QuerySet costs about ten times more than running the indexed SELECT
it produces. The ORM still writes the SQL (quoting, vendor syntax) and supplies the converters
that turn column values into Python values, but only the first time a thread looks a token up
by a given column; later calls execute the cached statement and apply the cached converters.

The cache is per thread and per connection object, because Django's connections are, and the
converters belong to the connection they were made for.

On PostgreSQL the statement runs on a server-binding cursor (see :mod:`.database_cursor`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model, Q
from django.db.models.sql.compiler import SQLCompiler

from . import database_cursor
from .database_convert import to_db

# The value stands in for the looked-up value while compiling; never sent to the database.
_PLACEHOLDER = "authfw-compile-placeholder"


@dataclass(frozen=True, slots=True)
class _Statement:
    connection: BaseDatabaseWrapper
    sql: str
    compiler: SQLCompiler
    converters: dict[int, Any]
    server_binding: bool


_local = threading.local()


@dataclass(frozen=True, slots=True)
class Expiry:
    """The column that ends a row's life, and whether NULL there means "never"."""

    column: str
    nullable: bool = False

    def alive(self, now: datetime) -> Q:
        """Rows still alive at ``now``, a time already in the ORM's form (``to_db``)."""
        after = Q(**{f"{self.column}__gt": now})
        return Q(**{f"{self.column}__isnull": True}) | after if self.nullable else after


RETAINED = Expiry("retain_until")  # tokens: kept until the later of their two expiries


def _compile(
    alias: str,
    model: type[Model],
    column: str,
    columns: Sequence[str],
    expiry: Expiry,
    now: datetime,
) -> _Statement:
    # Q objects in this order fix the parameter order: the looked-up value, then "now" (an
    # IS NULL test takes no parameter).
    queryset = (
        model._default_manager.db_manager(alias)
        .filter(Q(**{column: _PLACEHOLDER}), expiry.alive(to_db(now)))
        .values_list(*columns)
    )
    compiler = queryset.query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    if len(params) != 2 or params[0] != _PLACEHOLDER:  # pragma: no cover - guards ORM changes
        raise AssertionError(f"unexpected parameters compiling the {column} lookup: {params!r}")
    selected = [expression for expression, _sql, _alias in compiler.select[: compiler.col_count]]
    connection = connections[alias]
    return _Statement(
        connection=connection,
        sql=sql,
        compiler=compiler,
        converters=compiler.get_converters(selected),
        server_binding=database_cursor.supported(connection),
    )


def find_unexpired(
    alias: str,
    model: type[Model],
    column: str,
    value: str,
    columns: Sequence[str],
    now: datetime,
    expiry: Expiry = RETAINED,
) -> Sequence[Any] | None:
    """Return ``columns`` of the row whose unique ``column`` is ``value`` and whose ``expiry``
    is after ``now`` (or NULL, where that means "never"), or None: one SELECT on
    ``column``'s index."""
    cache: dict[tuple[Any, ...], _Statement] = _local.__dict__.setdefault("statements", {})
    key = (alias, model._meta.label, column, tuple(columns), expiry)
    connection = connections[alias]
    statement = cache.get(key)
    if statement is None or statement.connection is not connection:
        statement = cache[key] = _compile(alias, model, column, columns, expiry, now)
    params = [value, connection.ops.adapt_datetimefield_value(to_db(now))]
    rows: list[Sequence[Any]]
    if statement.server_binding and database_cursor.usable(connection):
        fetched = database_cursor.execute(connection, statement.sql, params, fetch=True)
        rows = [] if fetched is None else [fetched]
    else:
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, params)
            rows = cursor.fetchmany(1)
    if not rows:
        return None
    if statement.converters:
        converted: Sequence[Any] = next(
            iter(statement.compiler.apply_converters(rows, statement.converters))
        )
        return converted
    return rows[0]
