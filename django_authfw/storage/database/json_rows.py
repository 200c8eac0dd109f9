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
import uuid
from collections.abc import Iterator
from datetime import datetime

from django.db import connections, transaction
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
    """Pages of ``batch_size`` ``(user_id, token JSON)`` of the tokens kept past ``now``, read
    from one snapshot in the table's physical order; None where not :func:`supported`."""
    if not supported(db):
        return None
    return _pages(db, model, now, batch_size)


def _pages(
    db: str, model: type[Model], now: datetime, batch_size: int
) -> Iterator[list[tuple[str, str]]]:
    # One query read through a server-side cursor, in one transaction: the table is read in
    # its physical order (a sequential scan, as COPY reads it) from one snapshot. Keyset pages
    # in primary-key order visit the heap at random instead: at 100,000 tokens they read
    # fewer than 10,000 rows a second here. The snapshot holds back VACUUM for the length of
    # the backup, as pg_dump's does, and the only lock is ACCESS SHARE (blocks DDL alone).
    connection = connections[db]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    retain = quote(column_of(model, "retain_until"))
    name = quote(f"authfw_backup_{uuid.uuid4().hex[:12]}")
    # Names quoted by the backend; every value is a parameter.
    select = (
        f"SELECT r.{quote('user_id')}, row_to_json(r)::text FROM "  # noqa: S608
        f"(SELECT {_select_list(db, model)} FROM {table} WHERE {retain} > %s) r"
    )
    with transaction.atomic(using=db), connection.cursor() as cursor:
        # row_to_json prints timestamps in the session's TimeZone, which code may have SET
        # after Django set it to UTC on connecting: the backup's times are UTC whatever it is.
        # set_config(..., true) lasts for this transaction; a caller's own transaction gets its
        # setting back below.
        cursor.execute("SELECT current_setting('TimeZone'), set_config('TimeZone', 'UTC', true)")
        (zone, _utc) = cursor.fetchone()
        restore = "SELECT set_config('TimeZone', %s, true)"
        try:
            cursor.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {select}", [now])
            while True:
                cursor.execute(f"FETCH FORWARD {int(batch_size)} FROM {name}")
                rows = cursor.fetchall()
                if rows:
                    yield [(user_id, text) for user_id, text in rows]
                if len(rows) < batch_size:
                    break
            cursor.execute(f"CLOSE {name}")
        except GeneratorExit:  # closed early (atomic rolls this transaction back anyway)
            cursor.execute(restore, [zone])
            raise
        # (A database error rolls the transaction or savepoint back, and the setting with it.)
        cursor.execute(restore, [zone])
