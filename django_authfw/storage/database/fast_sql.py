"""The fast SQL path of :class:`DatabaseStorage`: the hot statements written once, run without
building a QuerySet. Switched by the storage's ``fast_sql`` option (on by default).

Building and compiling a QuerySet, or running ``Model.objects.create()``, costs several times
more client CPU than the indexed statement it produces (about 250-300 µs against tens of µs
here). The hot paths (verifying a token, issuing one, revoking one, reading a session or a
key-value entry) therefore use SQL that the ORM writes once (quoting, vendor syntax,
converters) and that each call only runs with its values converted exactly as ``save()`` and
``update()`` convert them (``Field.get_db_prep_save``).

On PostgreSQL with psycopg 3 the statements run on a psycopg cursor that binds parameters on
the server: Django's cursor renders the whole statement as text on every call. Everything
Django's cursor does around a query is kept (the health check, connecting, the thread-sharing
and broken-transaction checks, error wrapping, marking an atomic block for rollback).

What the fast path bypasses, the same on every database vendor:

* ``pre_save``/``post_save`` signals on the token INSERT (as ``bulk_create`` does). The audit
  log records every login and refresh that issues a token.
* On PostgreSQL, Django's cursor wrappers while nothing watches the queries: tracing that
  patches ``CursorWrapper`` (Sentry's Django integration, APM agents) does not see these
  statements. When Django itself watches (``DEBUG``, ``CaptureQueriesContext``, an
  ``execute_wrapper``) the same SQL runs on Django's cursor, so it is seen and counted; on
  other vendors it always runs there.

``fast_sql=False`` runs the ORM calls instead (``create()``, ``QuerySet.update()``,
``values_list()``): every signal and wrapper sees them, at the cost measured in
docs/performance.md.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, Q
from django.db.models.sql.compiler import SQLCompiler

from .queries import RETAINED, Expiry, concrete_field
from .rows import to_db

_local = threading.local()


# The cursor --------------------------------------------------------------------------------


def _is_psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def server_binding(connection: BaseDatabaseWrapper) -> bool:
    """Whether statements can run on the server-binding cursor (PostgreSQL on psycopg 3)."""
    return connection.vendor == "postgresql" and _is_psycopg3()


def unwatched(connection: BaseDatabaseWrapper) -> bool:
    """Whether a statement may skip Django's cursor now: nothing is watching the queries."""
    return not connection.queries_logged and not connection.execute_wrappers


# psycopg prepares a statement on the server only if the connection's prepare_threshold is not
# None, which is what Django leaves it at unless OPTIONS set one. A threshold this high never
# triggers by counting, so only the statements run with prepare=True (ours) are prepared, and
# Django's cursors (client-side binding, which never prepares, or server-side binding with no
# threshold of its own) behave as before.
_ONLY_WHEN_ASKED = 2**31 - 1


def _allow_prepare(connection: BaseDatabaseWrapper, raw: Any) -> None:
    # An alias whose OPTIONS set prepare_threshold (None included: "never") is left as set.
    if raw.prepare_threshold is None and "prepare_threshold" not in connection.settings_dict.get(
        "OPTIONS", {}
    ):
        raw.prepare_threshold = _ONLY_WHEN_ASKED


def _psycopg_cursor(connection: BaseDatabaseWrapper) -> Any:
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

    _allow_prepare(connection, raw)
    cursor = psycopg.Cursor(raw)
    # As Django's create_cursor does: timestamps load in the connection's current time zone
    # (a settings change after connecting moves it away from the adapters' own).
    loader = raw.adapters.get_loader(raw.adapters.types["timestamptz"].oid, Format.TEXT)
    if timezone != loader.timezone:
        register_tzloader(timezone, cursor)
    _local.cursor = (cursor, timezone)
    return cursor


def execute(
    connection: BaseDatabaseWrapper,
    sql: str,
    params: list[Any],
    *,
    fetch: bool,
    prepare: bool = False,
) -> Any:
    """Run ``sql`` with ``params``; return the first row (or None) if ``fetch``, else the
    number of rows the statement changed. Uses the server-binding cursor when it can, and
    with ``prepare`` keeps the statement prepared on the server (once per connection)."""
    if not (server_binding(connection) and unwatched(connection)):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if not fetch:
                return cursor.rowcount
            rows = cursor.fetchmany(1)
            return rows[0] if rows else None
    # What Django's connection.cursor() and CursorWrapper.execute() check, in their order.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        cursor = _psycopg_cursor(connection)
        try:
            cursor.execute(sql, params, prepare=True if prepare else None)
        except Exception as exc:
            if not (prepare and _stale_prepared(exc) and _forget_prepared(cursor)):
                raise
            # Once more, prepared afresh: the failed EXECUTE ran nothing.
            cursor.execute(sql, params, prepare=True)
        return cursor.fetchone() if fetch else cursor.rowcount


# What PostgreSQL answers for a statement psycopg believes prepared when the server's copy is
# gone or no longer fits: "prepared statement ... does not exist" (26000: a DEALLOCATE ALL or
# DISCARD ALL that psycopg did not see, a pooler that moved us to another server connection)
# and "cached plan must not change result type" (0A000: a migration run by another process
# changed the type of a column the statement returns). psycopg keeps using the statement, so
# without this every later call on that connection fails the same way, until it is closed.
_STALE_PREPARED_STATES = frozenset({"26000", "0A000"})


def _stale_prepared(exc: Exception) -> bool:
    return getattr(exc, "sqlstate", None) in _STALE_PREPARED_STATES


def _forget_prepared(cursor: Any) -> bool:
    """Drop every prepared statement of the cursor's connection, on the server and in psycopg
    (which notices a DEALLOCATE ALL of its own and clears its cache), so that the statements
    are prepared again; False, leaving everything as it is, inside a transaction, which the
    error aborted (its rollback clears psycopg's cache as well)."""
    from psycopg.pq import TransactionStatus

    if cursor.connection.info.transaction_status != TransactionStatus.IDLE:
        return False
    cursor.execute("DEALLOCATE ALL")
    return True


def _mark_for_rollback(connection: BaseDatabaseWrapper, exc: Exception) -> None:
    """What ``transaction.mark_for_rollback_on_error`` does when a statement fails, without
    its context manager on the success path (a few µs per call on the hot writes)."""
    if connection.in_atomic_block:
        connection.needs_rollback = True
        # Django names the cause in the error a later query of the block raises.
        setattr(connection, "rollback_exc", exc)  # noqa: B010 (not in django-stubs)


# Inserting a new token ------------------------------------------------------------------------

_Insert = tuple[str, list["Field[Any, Any]"]]  # the SQL and the fields of its placeholders
# (alias, vendor, model label, names of the values) -> the INSERT, or None: use create().
_inserts: dict[tuple[str, str, str, tuple[str, ...]], _Insert | None] = {}


def _compile_insert(alias: str, model: type[Model], names: tuple[str, ...]) -> _Insert | None:
    """The INSERT of ``model`` with the columns ``names`` give, or None if some field lacks."""
    by_name: dict[str, Field[Any, Any]] = {}
    for field in model._meta.concrete_fields:
        name = field.attname if field.attname in names else field.name
        by_name[name] = field
    if sorted(by_name) != sorted(names):
        return None
    ordered = [by_name[name] for name in names]
    quote = connections[alias].ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in ordered)
    placeholders = ", ".join(["%s"] * len(ordered))
    # Identifiers come from the model and are quoted by the backend; values are bound.
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    return sql, ordered


def insert_row(
    alias: str, model: type[Model], values: dict[str, Any], *, prepare: bool = False
) -> None:
    """Insert one row of ``model`` with ``values`` (every concrete field, by name or attname)."""
    connection = connections[alias]
    key = (alias, connection.vendor, model._meta.label, tuple(values))
    if key not in _inserts:
        _inserts[key] = _compile_insert(alias, model, key[3])
    statement = _inserts[key]
    if statement is None:  # values that leave a field to its default: let the ORM fill it
        model._default_manager.db_manager(alias).create(**values)
        return
    sql, fields = statement
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values.values(), strict=True)
    ]
    # As save() does: inside an atomic block, a failed INSERT marks it for rollback.
    try:
        execute(connection, sql, params, fetch=False, prepare=prepare)
    except Exception as exc:
        _mark_for_rollback(connection, exc)
        raise


# Revoking one token ---------------------------------------------------------------------------

_REVOKE_SET = ("revoked_at", "replaced_by", "updated_at")
_revokes: dict[tuple[str, str, str], str] = {}


def _compile_revoke(alias: str, model: type[Model]) -> str:
    quote = connections[alias].ops.quote_name

    def column(name: str) -> str:
        return quote(str(concrete_field(model, name).column))

    assignments = ", ".join(f"{column(name)} = %s" for name in _REVOKE_SET)
    # Identifiers come from the model and are quoted by the backend; values are bound.
    return (
        f"UPDATE {quote(model._meta.db_table)} SET {assignments} "  # noqa: S608
        f"WHERE {column('token_id')} = %s AND {column('revoked_at')} IS NULL "
        f"AND {column('retain_until')} > %s"
    )


def revoke_row(
    alias: str,
    model: type[Model],
    token_id: str,
    *,
    at: datetime,
    replaced_by: str | None,
    now: datetime,
    prepare: bool = False,
) -> int:
    """Revoke the unexpired, unrevoked token ``token_id``; return the rows changed (0 or 1).

    ``at`` is already in the ORM's form (``to_db``); ``now`` is an aware datetime."""
    connection = connections[alias]
    key = (alias, connection.vendor, model._meta.label)
    sql = _revokes.get(key) or _revokes.setdefault(key, _compile_revoke(alias, model))
    values = {"revoked_at": at, "replaced_by": replaced_by, "updated_at": at}
    params: list[Any] = [
        concrete_field(model, name).get_db_prep_save(values[name], connection)
        for name in _REVOKE_SET
    ]
    params.append(token_id)
    params.append(connection.ops.adapt_datetimefield_value(to_db(now)))
    # As QuerySet.update() does: inside an atomic block, a failed UPDATE marks it for rollback.
    try:
        return int(execute(connection, sql, params, fetch=False, prepare=prepare))
    except Exception as exc:
        _mark_for_rollback(connection, exc)
        raise


# Reading one unexpired row by a unique column ----------------------------------------------------

# The value stands in for the looked-up value while compiling; never sent to the database.
_PLACEHOLDER = "authfw-compile-placeholder"


@dataclass(frozen=True, slots=True)
class _Lookup:
    connection: BaseDatabaseWrapper
    sql: str
    compiler: SQLCompiler
    converters: dict[int, Any]


def _compile_lookup(
    alias: str,
    model: type[Model],
    column: str,
    columns: Sequence[str],
    expiry: Expiry,
    now: datetime,
) -> _Lookup:
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
    return _Lookup(
        connection=connections[alias],
        sql=sql,
        compiler=compiler,
        converters=compiler.get_converters(selected),
    )


def find_unexpired(
    alias: str,
    model: type[Model],
    column: str,
    value: str,
    columns: Sequence[str],
    now: datetime,
    expiry: Expiry = RETAINED,
    *,
    prepare: bool = False,
) -> Sequence[Any] | None:
    """Return ``columns`` of the row whose unique ``column`` is ``value`` and whose ``expiry``
    is after ``now`` (or NULL, where that means "never"), or None: one SELECT on
    ``column``'s index, compiled once per thread and connection (Django's connections are per
    thread, and the converters belong to the connection they were made for)."""
    cache: dict[tuple[Any, ...], _Lookup] = _local.__dict__.setdefault("lookups", {})
    key = (alias, model._meta.label, column, tuple(columns), expiry)
    connection = connections[alias]
    statement = cache.get(key)
    if statement is None or statement.connection is not connection:
        statement = cache[key] = _compile_lookup(alias, model, column, columns, expiry, now)
    params = [value, connection.ops.adapt_datetimefield_value(to_db(now))]
    row: Sequence[Any] | None = execute(
        connection, statement.sql, params, fetch=True, prepare=prepare
    )
    if row is None:
        return None
    if statement.converters:
        converted: Sequence[Any] = next(
            iter(statement.compiler.apply_converters([row], statement.converters))
        )
        return converted
    return row


# Reading one model instance by primary key (the user of a verified token) -------------------------


@dataclass(frozen=True, slots=True)
class _ByPk:
    connection: BaseDatabaseWrapper
    sql: str
    compiler: SQLCompiler
    converters: dict[int, Any]
    names: tuple[str, ...]


def _compile_by_pk(alias: str, model: type[Model], pk: Any) -> _ByPk:
    names = tuple(field.attname for field in model._meta.concrete_fields)
    queryset = model._default_manager.db_manager(alias).filter(pk=pk).values_list(*names)
    compiler = queryset.query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    if len(params) != 1:  # pragma: no cover - a default manager that filters: not compiled
        raise ValueError("the default manager adds parameters of its own")
    selected = [expression for expression, _sql, _alias in compiler.select[: compiler.col_count]]
    return _ByPk(connections[alias], sql, compiler, compiler.get_converters(selected), names)


def find_instance(alias: str, model: type[Model], pk: Any, *, prepare: bool = False) -> Any:
    """The ``model`` instance with primary key ``pk`` (a value of the key's Python type), read
    through its default manager as ``_default_manager.filter(pk=pk).first()`` would, or None.

    The SELECT is compiled once per thread and connection (as :func:`find_unexpired`'s) and the
    instance built as the ORM builds one (``Model.from_db``, so ``post_init`` is sent)."""
    cache: dict[tuple[Any, ...], _ByPk] = _local.__dict__.setdefault("by_pk", {})
    key = (alias, model._meta.label)
    connection = connections[alias]
    statement = cache.get(key)
    if statement is None or statement.connection is not connection:
        try:
            statement = cache[key] = _compile_by_pk(alias, model, pk)
        except ValueError:
            return model._default_manager.db_manager(alias).filter(pk=pk).first()
    pk_field = model._meta.pk
    assert pk_field is not None
    params = [pk_field.get_db_prep_value(pk, connection)]
    row = execute(connection, statement.sql, params, fetch=True, prepare=prepare)
    if row is None:
        return None
    if statement.converters:
        row = next(iter(statement.compiler.apply_converters([row], statement.converters)))
    return model.from_db(alias, list(statement.names), list(row))
