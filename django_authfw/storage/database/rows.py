"""Turning records into rows and rows back into records.

``*_columns`` name the model columns read with ``values_list`` (no model instances on the read
paths); ``*_from_row`` builds the record from such a row; ``*_fields`` returns the model field
values to write for a record that :class:`~django_authfw.storage.AuthStorage` has validated.

Records hold aware UTC datetimes. With ``USE_TZ = False`` Django stores naive local times in
``TIME_ZONE``; :func:`to_db` and :func:`from_db` convert at this boundary so records stay UTC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from ...exceptions import InvalidInput
from ...records import AuditEvent, AuthToken, KVEntry, SessionData
from ...tokens import digest
from .queries import user_foreign_key

# Times ----------------------------------------------------------------------------------------


def to_db(value: datetime) -> datetime:
    """Return an aware datetime in the form the ORM expects under the current ``USE_TZ``."""
    if settings.USE_TZ:
        return value
    return timezone.make_naive(value, timezone.get_default_timezone())


def from_db(value: datetime) -> datetime:
    """Return a datetime read from the database as an aware UTC datetime."""
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:  # USE_TZ = False: naive local time in TIME_ZONE
        value = timezone.make_aware(value, timezone.get_default_timezone())
    return value.astimezone(UTC)


def _from_db_optional(value: datetime | None) -> datetime | None:
    return None if value is None else from_db(value)


def _to_db_optional(value: datetime | None) -> datetime | None:
    return None if value is None else to_db(value)


# Users ----------------------------------------------------------------------------------------


def user_pk(model: type[models.Model], user_id: object) -> Any | None:
    """Return the user primary key whose ``str(pk)`` is ``user_id``, or None if there is none.

    ``model`` is the storage model whose ``user`` foreign key gives the key's type, so custom
    user models with UUID or string keys work too. Only the canonical text names a key:
    ``"01"`` or ``" 1"`` would convert to user 1, but the other backends keep them apart
    from ``"1"``, so here they name no user either (a write refuses them, a read finds none).
    """
    try:
        pk = user_foreign_key(model).target_field.to_python(user_id)
    except (ValidationError, ValueError, TypeError):
        return None
    return pk if pk is not None and str(pk) == user_id else None


def require_user_pk(model: type[models.Model], user_id: object) -> Any:
    """Like :func:`user_pk`, but raise :class:`InvalidInput` for an id that cannot be a key."""
    pk = user_pk(model, user_id)
    if pk is None:
        raise InvalidInput(
            f"user_id {user_id!r} is not a primary key of the user model "
            f"({settings.AUTH_USER_MODEL}); records carry str(user.pk)."
        )
    return pk


# Records ------------------------------------------------------------------------------------
# Derived from each record's schema (dataclasses.fields() and their metadata, see
# django_authfw.records.spec): the columns are the fields (under ``column`` where the model's
# name differs), times pass through to_db/from_db, user keys through the user model's key type.


_R = TypeVar("_R", AuthToken, SessionData, KVEntry, AuditEvent)


def _same(value: Any) -> Any:
    return value


def _reader(field: dataclasses.Field[Any]) -> Callable[[Any], Any]:
    """How a value read with ``values_list`` becomes the record's value."""
    spec = field.metadata
    if spec["kind"] == "time":
        return _from_db_optional if spec["null"] else from_db
    if spec["user_key"]:
        return str  # the user model's key, as records carry it
    if spec["kind"] == "bytes":
        return bytes  # PostgreSQL returns a memoryview
    return _same


def _columns(kind: type[Any]) -> tuple[str, ...]:
    return tuple(f.metadata["column"] or f.name for f in dataclasses.fields(kind))


def _row_reader(kind: type[_R]) -> Callable[[Sequence[Any]], _R]:
    readers = [_reader(field) for field in dataclasses.fields(kind)]

    def from_row(row: Sequence[Any]) -> _R:
        # Positional: the fields' declaration order is the order of the columns read.
        return kind(*[read(value) for read, value in zip(readers, row, strict=True)])

    from_row.__doc__ = f"Build a {kind.__name__} from a row of its columns."
    return from_row


def _field_values(model: type[models.Model] | None, record: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        spec, value = field.metadata, getattr(record, field.name)
        if spec["kind"] == "time":
            value = _to_db_optional(value)
        elif spec["user_key"]:
            assert model is not None
            value = require_user_pk(model, value)
        values[spec["column"] or field.name] = value
    return values


def column_readers(kind: type[Any]) -> tuple[Callable[[Any], Any] | None, ...]:
    """For each field of record class ``kind`` (declaration order, as ``*_COLUMNS``), how a
    value read with ``values_list`` becomes the record's value; None where it is used as read.

    For readers that skip building records (backups encode rows straight to JSON) and must
    still give exactly the values the records would hold.
    """
    readers = [_reader(field) for field in dataclasses.fields(kind)]
    return tuple(None if read is _same else read for read in readers)


TOKEN_COLUMNS = _columns(AuthToken)
SESSION_COLUMNS = _columns(SessionData)
KV_COLUMNS = _columns(KVEntry)
AUDIT_COLUMNS = _columns(AuditEvent)

token_from_row = _row_reader(AuthToken)
session_from_row = _row_reader(SessionData)
kv_from_row = _row_reader(KVEntry)
audit_from_row = _row_reader(AuditEvent)


def token_fields(model: type[models.Model], token: AuthToken) -> dict[str, Any]:
    """The ``Token`` field values of a validated ``token`` (``token_id`` included)."""
    values = _field_values(model, token)
    values["retain_until"] = to_db(token.retain_until)  # indexed, for expiry and cleanup
    return values


def session_fields(model: type[models.Model], session: SessionData) -> dict[str, Any]:
    """The ``Session`` field values of a validated ``session``, with ``id_digest``: the
    SHA-256 of its id, by which the admin addresses the row without showing the credential."""
    values = _field_values(model, session)
    values["id_digest"] = session_id_digest(session.session_id)
    return values


def session_id_digest(session_id: str) -> str:
    """The ``Session.id_digest`` of ``session_id``: its SHA-256, hex (64 characters)."""
    return digest(session_id)


def kv_fields(entry: KVEntry) -> dict[str, Any]:
    """The ``KVEntry`` row values of a validated ``entry``."""
    return _field_values(None, entry)


def audit_fields(event: AuditEvent) -> dict[str, Any]:
    """The ``AuditLog`` field values of a validated ``event``."""
    return _field_values(None, event)
