"""Tokens read as JSON built by PostgreSQL, for backups of large tables.

``row_to_json`` writes each token's JSON object (every field of
:class:`~django_authfw.records.AuthToken` under its name, in declaration order) on the server,
in C, so a backup of millions of tokens does not build, convert and encode every row in Python.
The object is the one :func:`django_authfw.backup.encode_record` writes for the record, read the
same way: datetimes in ISO 8601 with their offset (PostgreSQL leaves out trailing zeros of the
microseconds), lists and objects as JSON.

Only on PostgreSQL whose connection runs in UTC (``USE_TZ = True``): elsewhere
:func:`token_json_pages` returns None and the caller reads records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.models import Model

from ...records import AuthToken
from .queries import column as column_of


def supported(db: str) -> bool:
    """Whether tokens of database ``db`` can be read as server-built JSON."""
    connection = connections[db]
    return connection.vendor == "postgresql" and connection.timezone_name == "UTC"


def _select_list(db: str, model: type[Model]) -> str:
    quote = connections[db].ops.quote_name
    parts = []
    for field in dataclasses.fields(AuthToken):
        column = column_of(model, field.metadata["column"] or field.name)
        # user_id: records carry str(user.pk), whatever the key's type.
        cast = "::text" if field.metadata["user_key"] else ""
        parts.append(f"{quote(column)}{cast} AS {quote(field.name)}")
    return ", ".join(parts)


def token_json_pages(
    db: str, model: type[Model], now: datetime, batch_size: int
) -> Iterator[list[tuple[str, str]]] | None:
    """Pages of ``(user_id, token JSON)`` of the tokens kept past ``now``, in primary-key
    order (keyset pages of ``batch_size``, as ``iter_tokens``); None where not
    :func:`supported`."""
    if not supported(db):
        return None
    return _pages(db, model, now, batch_size)


def _pages(
    db: str, model: type[Model], now: datetime, batch_size: int
) -> Iterator[list[tuple[str, str]]]:
    connection = connections[db]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    pk = quote("token_id")  # the field names the subquery gives its columns
    retain = quote(column_of(model, "retain_until"))
    # Names quoted by the backend; every value is a parameter.
    inner = f"SELECT {_select_list(db, model)} FROM {table} WHERE {retain} > %s"  # noqa: S608
    outer = "SELECT r.{pk}, r.{user}, row_to_json(r)::text FROM ({inner} ORDER BY {pk} LIMIT %s) r"
    first = outer.format(pk=pk, user=quote("user_id"), inner=inner)
    after = outer.format(pk=pk, user=quote("user_id"), inner=f"{inner} AND {pk} > %s")
    last: Any = None
    while True:
        with connection.cursor() as cursor:
            if last is None:
                cursor.execute(first, [now, batch_size])
            else:
                cursor.execute(after, [now, last, batch_size])
            rows = cursor.fetchall()
        if not rows:
            return
        yield [(user_id, text) for _pk, user_id, text in rows]
        if len(rows) < batch_size:
            return
        last = rows[-1][0]
