"""The token lookups of the verification hot path, compiled once per database connection.

Building and compiling a QuerySet costs about ten times more than running the indexed SELECT
it produces. The ORM still writes the SQL (quoting, vendor syntax) and supplies the converters
that turn column values into Python values, but only the first time a thread looks a token up
by a given column; later calls execute the cached statement and apply the cached converters.

The cache is per thread and per connection object, because Django's connections are, and the
converters belong to the connection they were made for.

On PostgreSQL with psycopg 3, the statement runs on a psycopg cursor of its own that binds the
parameters on the server. Django's cursor binds them on the client: it renders the whole
statement as text for every call, which cost more client CPU than the round trip here. A
server-binding cursor sends the SQL and the two values apart, and the server can keep the
statement prepared when the alias asks for it (``OPTIONS["prepare_threshold"]``; Django leaves
it off for the sake of connection poolers, and so does this module). Everything Django's cursor
does around a query is kept: health checks, connecting, the thread-sharing and broken-transaction
checks, and its error wrapping. When something watches the queries (``DEBUG``, a test's
``CaptureQueriesContext``, an ``execute_wrapper``) the lookup goes through Django's cursor, so
that it sees them.
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


def _compile(
    alias: str, model: type[Model], column: str, columns: Sequence[str], now: datetime
) -> _Statement:
    # Q objects in this order fix the parameter order: the looked-up value, then "now".
    queryset = (
        model._default_manager.db_manager(alias)
        .filter(Q(**{column: _PLACEHOLDER}), Q(retain_until__gt=to_db(now)))
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
        server_binding=connection.vendor == "postgresql" and _is_psycopg3(),
    )


def _is_psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def _server_binding_cursor(connection: BaseDatabaseWrapper) -> Any:
    """This thread's psycopg cursor on the connection's current psycopg connection."""
    raw = connection.connection
    timezone = connection.timezone
    cached = getattr(_local, "cursor", None)
    if cached is not None:
        cursor, cursor_timezone = cached
        if cursor.connection is raw and cursor_timezone is timezone and not cursor.closed:
            return cursor
    import psycopg
    from django.db.backends.postgresql.psycopg_any import register_tzloader
    from psycopg.pq import Format

    cursor = psycopg.Cursor(raw)
    # As Django's create_cursor does: timestamps load in the connection's current time zone
    # (a settings change after connecting moves it away from the adapters' own).
    loader = raw.adapters.get_loader(raw.adapters.types["timestamptz"].oid, Format.TEXT)
    if timezone != loader.timezone:
        register_tzloader(timezone, cursor)
    _local.cursor = (cursor, timezone)
    return cursor


def _fetch_server_bound(connection: BaseDatabaseWrapper, sql: str, params: list[Any]) -> Any:
    # What Django's connection.cursor() and CursorWrapper.execute() check, in their order.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        cursor = _server_binding_cursor(connection)
        cursor.execute(sql, params)
        return cursor.fetchone()


def find_unexpired(
    alias: str,
    model: type[Model],
    column: str,
    value: str,
    columns: Sequence[str],
    now: datetime,
) -> Sequence[Any] | None:
    """Return ``columns`` of the row whose unique ``column`` is ``value`` and whose
    ``retain_until`` is after ``now``, or None: one SELECT on ``column``'s index."""
    cache: dict[tuple[str, str, str, tuple[str, ...]], _Statement] = _local.__dict__.setdefault(
        "statements", {}
    )
    key = (alias, model._meta.label, column, tuple(columns))
    connection = connections[alias]
    statement = cache.get(key)
    if statement is None or statement.connection is not connection:
        statement = cache[key] = _compile(alias, model, column, columns, now)
    params = [value, connection.ops.adapt_datetimefield_value(to_db(now))]
    if (
        statement.server_binding
        and not connection.queries_logged
        and not connection.execute_wrappers
    ):
        row = _fetch_server_bound(connection, statement.sql, params)
        rows = [] if row is None else [row]
    else:
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, params)
            rows = cursor.fetchmany(1)
    if not rows:
        return None
    if statement.converters:
        return next(iter(statement.compiler.apply_converters(rows, statement.converters)))
    return rows[0]
