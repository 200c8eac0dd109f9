"""Turning records into rows and rows back into records.

``*_columns`` name the model columns read with ``values_list`` (no model instances on the read
paths); ``*_from_row`` builds the record from such a row; ``*_fields`` returns the model field
values to write for a record that :class:`~django_authfw.storage.AuthStorage` has validated.

Records hold aware UTC datetimes. With ``USE_TZ = False`` Django stores naive local times in
``TIME_ZONE``; :func:`to_db` and :func:`from_db` convert at this boundary so records stay UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from ..exceptions import InvalidInput
from ..records import AuditEvent, AuthToken, KVEntry, SessionData
from .database_queries import user_foreign_key

TOKEN_COLUMNS = (
    "token_id",
    "user_id",
    "access_token",
    "refresh_token",
    "token_type",
    "family_id",
    "expires_at",
    "refresh_expires_at",
    "created_at",
    "updated_at",
    "revoked_at",
    "replaced_by",
    "permissions",
    "roles",
    "metadata",
)
SESSION_COLUMNS = (
    "session_id",
    "user_id",
    "data",
    "created_at",
    "last_accessed",
    "expires_at",
    "ip_address",
    "user_agent",
)
KV_COLUMNS = ("key", "value", "created_at", "expires_at")
AUDIT_COLUMNS = (
    "event_id",
    "action",
    "outcome",
    "user_id",
    "resource",
    "ip_address",
    "user_agent",
    "created_at",
    "metadata",
)


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
    """Return the user primary key named by ``user_id`` (``str(pk)``), or None if it cannot be one.

    ``model`` is the storage model whose ``user`` foreign key gives the key's type, so custom
    user models with UUID or string keys work too.
    """
    try:
        return user_foreign_key(model).target_field.to_python(user_id)
    except (ValidationError, ValueError, TypeError):
        return None


def require_user_pk(model: type[models.Model], user_id: object) -> Any:
    """Like :func:`user_pk`, but raise :class:`InvalidInput` for an id that cannot be a key."""
    pk = user_pk(model, user_id)
    if pk is None:
        raise InvalidInput(
            f"user_id {user_id!r} is not a primary key of the user model "
            f"({settings.AUTH_USER_MODEL}); records carry str(user.pk)."
        )
    return pk


# Tokens ---------------------------------------------------------------------------------------


def token_from_row(row: Sequence[Any]) -> AuthToken:
    (
        token_id,
        user_id,
        access_token,
        refresh_token,
        token_type,
        family_id,
        expires_at,
        refresh_expires_at,
        created_at,
        updated_at,
        revoked_at,
        replaced_by,
        permissions,
        roles,
        metadata,
    ) = row
    return AuthToken(
        token_id=token_id,
        user_id=str(user_id),
        access_digest=access_token,
        refresh_digest=refresh_token,
        token_type=token_type,
        family_id=family_id,
        expires_at=from_db(expires_at),
        refresh_expires_at=_from_db_optional(refresh_expires_at),
        created_at=from_db(created_at),
        updated_at=from_db(updated_at),
        revoked_at=_from_db_optional(revoked_at),
        replaced_by=replaced_by,
        permissions=permissions,
        roles=roles,
        metadata=metadata,
    )


def token_fields(model: type[models.Model], token: AuthToken) -> dict[str, Any]:
    """The ``Token`` field values of a validated ``token`` (``token_id`` included)."""
    return {
        "token_id": token.token_id,
        "user_id": require_user_pk(model, token.user_id),
        "access_token": token.access_digest,
        "refresh_token": token.refresh_digest,
        "token_type": token.token_type,
        "family_id": token.family_id,
        "expires_at": to_db(token.expires_at),
        "refresh_expires_at": _to_db_optional(token.refresh_expires_at),
        "created_at": to_db(token.created_at),
        "updated_at": to_db(token.updated_at),
        "revoked_at": _to_db_optional(token.revoked_at),
        "replaced_by": token.replaced_by,
        "permissions": token.permissions,
        "roles": token.roles,
        "metadata": token.metadata,
        "retain_until": to_db(token.retain_until),
    }


# Sessions -------------------------------------------------------------------------------------


def session_from_row(row: Sequence[Any]) -> SessionData:
    session_id, user_id, data, created_at, last_accessed, expires_at, ip, user_agent = row
    return SessionData(
        session_id=session_id,
        user_id=str(user_id),
        data=data,
        created_at=from_db(created_at),
        last_accessed=from_db(last_accessed),
        expires_at=_from_db_optional(expires_at),
        ip_address=ip,
        user_agent=user_agent,
    )


def session_fields(model: type[models.Model], session: SessionData) -> dict[str, Any]:
    """The ``Session`` field values of a validated ``session``."""
    return {
        "session_id": session.session_id,
        "user_id": require_user_pk(model, session.user_id),
        "data": session.data,
        "created_at": to_db(session.created_at),
        "last_accessed": to_db(session.last_accessed),
        "expires_at": _to_db_optional(session.expires_at),
        "ip_address": session.ip_address,
        "user_agent": session.user_agent,
    }


# Key-value ------------------------------------------------------------------------------------


def kv_from_row(row: tuple[Any, ...]) -> KVEntry:
    key, value, created_at, expires_at = row
    return KVEntry(
        key=key,
        value=bytes(value),  # PostgreSQL returns a memoryview
        created_at=from_db(created_at),
        expires_at=_from_db_optional(expires_at),
    )


def kv_fields(entry: KVEntry) -> dict[str, Any]:
    """The ``KVEntry`` row values of a validated ``entry``."""
    return {
        "key": entry.key,
        "value": entry.value,
        "created_at": to_db(entry.created_at),
        "expires_at": _to_db_optional(entry.expires_at),
    }


# Audit ----------------------------------------------------------------------------------------


def audit_from_row(row: tuple[Any, ...]) -> AuditEvent:
    event_id, action, outcome, user_id, resource, ip, user_agent, created_at, metadata = row
    return AuditEvent(
        event_id=event_id,
        action=action,
        outcome=outcome,
        user_id=user_id,
        resource=resource,
        ip_address=ip,
        user_agent=user_agent,
        created_at=from_db(created_at),
        metadata=metadata,
    )


def audit_fields(event: AuditEvent) -> dict[str, Any]:
    """The ``AuditLog`` field values of a validated ``event``."""
    return {
        "event_id": event.event_id,
        "action": event.action,
        "outcome": event.outcome,
        "user_id": event.user_id,
        "resource": event.resource,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "created_at": to_db(event.created_at),
        "metadata": event.metadata,
    }
