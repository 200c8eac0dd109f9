"""Revoking one token with SQL written once per model, on the server-binding cursor.

Every refresh revokes the token it rotates, and every logout the token it ends, so revocation
is the third statement of the hot paths. ``QuerySet.update()`` builds and compiles its UPDATE
on every call (about 250 µs of client CPU here, several times the statement); on PostgreSQL
the same UPDATE is written once per model and each call only converts the values
(``get_db_prep_save``, what ``update()`` sends) and runs it on :mod:`.database_cursor`'s
cursor. Elsewhere, and while queries are watched, it is ``QuerySet.update()``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import Model

from . import database_cursor
from .database_convert import to_db
from .database_queries import concrete_field

_SET = ("revoked_at", "replaced_by", "updated_at")
_statements: dict[tuple[str, str, str], str] = {}


def _compile(alias: str, model: type[Model]) -> str:
    meta = model._meta
    quote = connections[alias].ops.quote_name

    def column(name: str) -> str:
        return quote(str(concrete_field(model, name).column))

    assignments = ", ".join(f"{column(name)} = %s" for name in _SET)
    # Identifiers come from the model and are quoted by the backend; values are bound.
    return (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "  # noqa: S608
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
) -> int:
    """Revoke the unexpired, unrevoked token ``token_id``; return the rows changed (0 or 1)."""
    connection = connections[alias]
    if not database_cursor.supported(connection) or not database_cursor.usable(connection):
        return (
            model._default_manager.db_manager(alias)
            .filter(token_id=token_id, revoked_at__isnull=True, retain_until__gt=to_db(now))
            .update(revoked_at=at, replaced_by=replaced_by, updated_at=at)
        )
    key = (alias, connection.vendor, model._meta.label)
    sql = _statements.get(key) or _statements.setdefault(key, _compile(alias, model))
    values = {"revoked_at": at, "replaced_by": replaced_by, "updated_at": at}
    params: list[Any] = [
        concrete_field(model, name).get_db_prep_save(values[name], connection) for name in _SET
    ]
    params.append(token_id)
    params.append(connection.ops.adapt_datetimefield_value(to_db(now)))
    # As QuerySet.update() does: inside an atomic block, a failed UPDATE marks it for rollback.
    with transaction.mark_for_rollback_on_error(using=alias):
        return int(database_cursor.execute(connection, sql, params, fetch=False))
