"""A server-binding psycopg cursor for the hot statements of :class:`DatabaseStorage`.

Django's PostgreSQL cursor binds parameters on the client: for every call it renders the whole
statement as text, which costs more client CPU than the round trip to a local server. The
statements of the hot paths (the verification lookup, the insert of a new token, the
revocation of one token, session and key-value reads) run instead on a psycopg cursor that
sends the SQL and the values apart, so the server can also keep the
statement prepared when the alias asks for it (``OPTIONS["prepare_threshold"]``; Django leaves
it off for the sake of connection poolers, and so does this module).

Everything Django's cursor does around a query is kept: the health check, connecting, the
thread-sharing and broken-transaction checks and the error wrapping. When something watches
the queries (``DEBUG``, a test's ``CaptureQueriesContext``, an ``execute_wrapper``),
:func:`usable` is false and callers go through Django's cursor, so that it sees them.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

_local = threading.local()


def _is_psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def supported(connection: BaseDatabaseWrapper) -> bool:
    """Whether the connection's backend can run statements here (PostgreSQL on psycopg 3)."""
    return connection.vendor == "postgresql" and _is_psycopg3()


def usable(connection: BaseDatabaseWrapper) -> bool:
    """Whether a statement may skip Django's cursor now: nothing is watching the queries."""
    return not connection.queries_logged and not connection.execute_wrappers


def _cursor(connection: BaseDatabaseWrapper) -> Any:
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


def execute(connection: BaseDatabaseWrapper, sql: str, params: list[Any], *, fetch: bool) -> Any:
    """Run ``sql`` with ``params``; return the first row (or None) if ``fetch``, else the
    number of rows the statement changed."""
    # What Django's connection.cursor() and CursorWrapper.execute() check, in their order.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        cursor = _cursor(connection)
        cursor.execute(sql, params)
        return cursor.fetchone() if fetch else cursor.rowcount
