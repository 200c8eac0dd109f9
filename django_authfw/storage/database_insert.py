"""Inserting one new row with SQL written once per model, on the server-binding cursor.

``Model.objects.create()`` builds an instance, runs ``save()`` and compiles an INSERT on every
call: about 300 µs of client CPU here, several times the statement itself. Token issue inserts
one row per login and per refresh, so on PostgreSQL the INSERT is written once per model and
set of columns, and each call only converts the values (``Field.get_db_prep_save``, exactly
what ``save()`` sends) and runs it on :mod:`.database_cursor`'s cursor.

Like ``bulk_create``, this sends no ``pre_save``/``post_save`` signals: the storage's models are
its own, and the audit log records every login and refresh that issues a token. Everywhere
else (other databases, a model whose fields the values do not all name, queries being watched)
it is ``create()``.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction
from django.db.models import Field, Model

from . import database_cursor

_Insert = tuple[str, list["Field[Any, Any]"]]  # the SQL and the fields of its placeholders
# (alias, vendor, model label, names of the values) -> the INSERT, or None: use create().
_statements: dict[tuple[str, str, str, tuple[str, ...]], _Insert | None] = {}


def _compile(alias: str, model: type[Model], names: tuple[str, ...]) -> _Insert | None:
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


def insert_row(alias: str, model: type[Model], values: dict[str, Any]) -> None:
    """Insert one row of ``model`` with ``values`` (field names or attnames) into ``alias``."""
    connection = connections[alias]
    key = (alias, connection.vendor, model._meta.label, tuple(values))
    if key not in _statements:
        supported = database_cursor.supported(connection)
        _statements[key] = _compile(alias, model, key[3]) if supported else None
    statement = _statements[key]
    if statement is None or not database_cursor.usable(connection):
        model._default_manager.db_manager(alias).create(**values)
        return
    sql, fields = statement
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values.values(), strict=True)
    ]
    # As save() does: inside an atomic block, a failed INSERT marks it for rollback.
    with transaction.mark_for_rollback_on_error(using=alias):
        database_cursor.execute(connection, sql, params, fetch=False)
