"""Argument checks shared by the cache-backed storages.

Every public method validates before it touches a store, so bad input raises
:class:`~django_authfw.exceptions.InvalidInput` and changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from ..exceptions import InvalidInput
from ..records import AuditEvent, AuthToken, SessionData
from ..tokens import check_id


def aware(value: object, what: str) -> datetime:
    """A timezone-aware datetime, or :class:`InvalidInput` saying how to fix it."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime, not {type(value).__name__}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be timezone-aware (use django_authfw.records.utcnow()).")
    return value


def optional_aware(value: object, what: str) -> datetime | None:
    return None if value is None else aware(value, what)


def optional_id(value: object, what: str) -> str | None:
    return None if value is None else check_id(value, what)


def positive_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"{what} must be a positive integer, not {value!r}.")
    return value


def non_negative_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer, not {value!r}.")
    return value


def kv_value(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidInput(
        f"A key-value entry's value must be bytes, not {type(value).__name__}; encode it first."
    )


def _string_list(value: object, what: str) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{what} must be a list of strings.")


def token(value: object) -> AuthToken:
    if not isinstance(value, AuthToken):
        raise InvalidInput(f"Expected an AuthToken, not {type(value).__name__}.")
    check_id(value.token_id, "token_id")
    check_id(value.user_id, "user_id")
    check_id(value.access_digest, "access_digest")
    optional_id(value.refresh_digest, "refresh_digest")
    check_id(value.token_type, "token_type")
    if not isinstance(value.family_id, str) or len(value.family_id) > 255:
        raise InvalidInput("family_id must be a string of at most 255 characters.")
    aware(value.expires_at, "expires_at")
    optional_aware(value.refresh_expires_at, "refresh_expires_at")
    aware(value.created_at, "created_at")
    aware(value.updated_at, "updated_at")
    optional_aware(value.revoked_at, "revoked_at")
    optional_id(value.replaced_by, "replaced_by")
    _string_list(value.permissions, "permissions")
    _string_list(value.roles, "roles")
    if not isinstance(value.metadata, dict):
        raise InvalidInput("metadata must be a dict.")
    return value


def session(value: object) -> SessionData:
    if not isinstance(value, SessionData):
        raise InvalidInput(f"Expected a SessionData, not {type(value).__name__}.")
    check_id(value.session_id, "session_id")
    check_id(value.user_id, "user_id")
    if not isinstance(value.data, dict):
        raise InvalidInput("Session data must be a dict.")
    aware(value.created_at, "created_at")
    aware(value.last_accessed, "last_accessed")
    optional_aware(value.expires_at, "expires_at")
    optional_id(value.ip_address, "ip_address")
    if not isinstance(value.user_agent, str):
        raise InvalidInput("user_agent must be a string.")
    return value


def event(value: object) -> AuditEvent:
    if not isinstance(value, AuditEvent):
        raise InvalidInput(f"Expected an AuditEvent, not {type(value).__name__}.")
    check_id(value.event_id, "event_id")
    check_id(value.action, "action", max_length=100)
    if not isinstance(value.outcome, bool):
        raise InvalidInput("outcome must be True or False.")
    optional_id(value.user_id, "user_id")
    optional_id(value.resource, "resource")
    optional_id(value.ip_address, "ip_address")
    if not isinstance(value.user_agent, str):
        raise InvalidInput("user_agent must be a string.")
    aware(value.created_at, "created_at")
    if not isinstance(value.metadata, dict):
        raise InvalidInput("metadata must be a dict.")
    return value
