"""Checking records before they are written, and turning rows back into records.

``*_columns`` name the model columns read with ``values_list`` (no model instances on the read
paths); ``*_from_row`` builds the record from such a row; ``*_fields`` validates a record and
returns the model field values to write. Validation raises :class:`InvalidInput` before any
query, so bad input writes nothing.

Records hold aware UTC datetimes. With ``USE_TZ = False`` Django stores naive local times in
``TIME_ZONE``; :func:`to_db` and :func:`from_db` convert at this boundary so records stay UTC.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from ..exceptions import InvalidInput
from ..records import AuditEvent, AuthToken, KVEntry, SessionData
from ..tokens import MAX_ID_LENGTH, check_id
from .database_queries import user_foreign_key

_DIGEST = re.compile(r"[0-9a-f]{64}")
EVENT_ID_MAX_LENGTH = 64  # AuditLog.event_id; uuid4().hex (32) by default

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


def check_time(value: object, what: str) -> datetime:
    """Return ``value`` converted for the database if it is an aware datetime."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, not {value!r}.")
    return to_db(value)


def _check_optional_time(value: object, what: str) -> datetime | None:
    return None if value is None else check_time(value, what)


def check_ttl(ttl: object) -> timedelta | None:
    """Validate a key-value TTL: None (no expiry) or a positive timedelta."""
    if ttl is None:
        return None
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidInput(f"ttl must be a positive timedelta or None, not {ttl!r}.")
    return ttl


# Scalars --------------------------------------------------------------------------------------


def check_digest(value: object, what: str) -> str:
    """Validate a SHA-256 hex digest (64 lowercase hex characters)."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise InvalidInput(
            f"{what} must be a SHA-256 hex digest (django_authfw.tokens.digest), never a raw token."
        )
    return value


def is_digest(value: object) -> bool:
    """Whether a lookup value can match a stored digest at all."""
    if not isinstance(value, str):
        raise InvalidInput(f"a token digest must be a string, not {type(value).__name__}.")
    return _DIGEST.fullmatch(value) is not None


def _check_text(
    value: object, what: str, max_length: int | None = None, *, blank: bool = True
) -> str:
    # PostgreSQL text cannot hold NUL, so it is refused everywhere for the same behaviour.
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}.")
    if not blank and not value:
        raise InvalidInput(f"{what} must not be empty.")
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(f"{what} must be at most {max_length} characters long.")
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters.")
    return value


def _check_optional_id(value: object, what: str) -> str | None:
    return None if value is None else check_id(value, what)


def check_ip(value: object) -> str | None:
    """Validate an IPv4 or IPv6 address and return it in canonical form."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"ip_address must be a string or None, not {type(value).__name__}.")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidInput(
            "ip_address must be an IPv4 or IPv6 address (or None), as in REMOTE_ADDR."
        ) from None


def _check_json(value: object, what: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    if not isinstance(value, kind):
        raise InvalidInput(f"{what} must be a {kind.__name__}, not {type(value).__name__}.")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must hold only JSON values: {exc}") from None
    return value


def check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be True or False, not {value!r}.")
    return value


def check_count(value: object, what: str, *, minimum: int) -> int:
    """Validate a limit, offset or batch size."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{what} must be an integer >= {minimum}, not {value!r}.")
    return value


# Users ----------------------------------------------------------------------------------------


def user_pk(model: type[models.Model], user_id: object) -> Any | None:
    """Return the user primary key named by ``user_id`` (``str(pk)``), or None if it cannot be one.

    ``model`` is the storage model whose ``user`` foreign key gives the key's type, so custom
    user models with UUID or string keys work too.
    """
    check_id(user_id, "user_id")
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
    """Validate ``token`` and return the ``Token`` field values (``token_id`` included)."""
    if not isinstance(token, AuthToken):
        raise InvalidInput(f"expected an AuthToken record, not {type(token).__name__}.")
    refresh = token.refresh_digest
    fields = {
        "token_id": check_id(token.token_id, "token_id"),
        "user_id": require_user_pk(model, token.user_id),
        "access_token": check_digest(token.access_digest, "access_digest"),
        "refresh_token": None if refresh is None else check_digest(refresh, "refresh_digest"),
        "token_type": _check_text(token.token_type, "token_type", 50, blank=False),
        "family_id": _check_text(token.family_id, "family_id", MAX_ID_LENGTH),
        "expires_at": check_time(token.expires_at, "expires_at"),
        "refresh_expires_at": _check_optional_time(token.refresh_expires_at, "refresh_expires_at"),
        "created_at": check_time(token.created_at, "created_at"),
        "updated_at": check_time(token.updated_at, "updated_at"),
        "revoked_at": _check_optional_time(token.revoked_at, "revoked_at"),
        "replaced_by": _check_optional_id(token.replaced_by, "replaced_by"),
        "permissions": _check_json(token.permissions, "permissions", list),
        "roles": _check_json(token.roles, "roles", list),
        "metadata": _check_json(token.metadata, "metadata", dict),
    }
    fields["retain_until"] = to_db(token.retain_until)
    return fields


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
    """Validate ``session`` and return the ``Session`` field values."""
    if not isinstance(session, SessionData):
        raise InvalidInput(f"expected a SessionData record, not {type(session).__name__}.")
    return {
        "session_id": check_id(session.session_id, "session_id"),
        "user_id": require_user_pk(model, session.user_id),
        "data": _check_json(session.data, "data", dict),
        "created_at": check_time(session.created_at, "created_at"),
        "last_accessed": check_time(session.last_accessed, "last_accessed"),
        "expires_at": _check_optional_time(session.expires_at, "expires_at"),
        "ip_address": check_ip(session.ip_address),
        "user_agent": _check_text(session.user_agent, "user_agent"),
    }


# Key-value ------------------------------------------------------------------------------------


def check_value(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidInput(
            f"value must be bytes, not {type(value).__name__}; encode text first "
            "(for example value.encode())."
        )
    return value


def kv_from_row(row: tuple[Any, ...]) -> KVEntry:
    key, value, created_at, expires_at = row
    return KVEntry(
        key=key,
        value=bytes(value),  # PostgreSQL returns a memoryview
        created_at=from_db(created_at),
        expires_at=_from_db_optional(expires_at),
    )


def kv_fields(entry: KVEntry) -> dict[str, Any]:
    if not isinstance(entry, KVEntry):
        raise InvalidInput(f"expected a KVEntry record, not {type(entry).__name__}.")
    return {
        "key": check_id(entry.key, "key"),
        "value": check_value(entry.value),
        "created_at": check_time(entry.created_at, "created_at"),
        "expires_at": _check_optional_time(entry.expires_at, "expires_at"),
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
    if not isinstance(event, AuditEvent):
        raise InvalidInput(f"expected an AuditEvent record, not {type(event).__name__}.")
    resource = event.resource
    return {
        "event_id": check_id(event.event_id, "event_id", EVENT_ID_MAX_LENGTH),
        "action": _check_text(event.action, "action", 100, blank=False),
        "outcome": check_bool(event.outcome, "outcome"),
        "user_id": _check_optional_id(event.user_id, "user_id"),
        "resource": None if resource is None else _check_text(resource, "resource", 255),
        "ip_address": check_ip(event.ip_address),
        "user_agent": _check_text(event.user_agent, "user_agent"),
        "created_at": check_time(event.created_at, "created_at"),
        "metadata": _check_json(event.metadata, "metadata", dict),
    }
