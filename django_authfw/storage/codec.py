"""JSON form of records for stores that keep text (Redis), and the time arithmetic they share.

Values are compact JSON with ISO 8601 timestamps, so ``redis-cli GET auth:token:<id>`` shows a
readable record. Field order is fixed (the order of the dataclass fields), which lets a store
compare two encodings byte for byte: the compare-and-set scripts rely on it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ..exceptions import InvalidInput, StorageError
from ..records import AuditEvent, AuthToken, SessionData

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exact (no float rounding)."""
    return (moment - EPOCH) // _ONE_US


def remaining_ms(deadline: datetime, now: datetime) -> int:
    """Milliseconds from ``now`` until ``deadline``, rounded up; <= 0 when already past.

    Rounding up means a key never vanishes before its record is over; readers still compare
    the record's own timestamp, so the sub-millisecond tail is invisible.
    """
    return -(-((deadline - now) // _ONE_US) // 1000)


def ttl_ms(ttl: timedelta) -> int:
    """A duration in milliseconds, rounded up; <= 0 for a zero or negative duration."""
    return -(-(ttl // _ONE_US) // 1000)


def _dt(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    # ISO 8601's "Z" for UTC: 5 bytes less per timestamp; fromisoformat reads it back as UTC.
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _parse_dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def dumps(payload: dict[str, Any], what: str) -> bytes:
    """Compact UTF-8 JSON; a value JSON cannot hold raises :class:`InvalidInput`."""
    try:
        return json.dumps(
            payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must hold only JSON-serialisable values: {exc}") from exc


def _loads(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StorageError(
            f"A stored {what} is not valid JSON; delete the key or restore it."
        ) from exc
    if not isinstance(value, dict):
        raise StorageError(f"A stored {what} is not a JSON object; delete the key or restore it.")
    return value


# Token fields left out of the JSON while they hold these values, which a reader restores (and
# ``updated_at`` while it equals ``created_at``): most tokens are never revoked, rotated or
# updated and carry no permissions, so their records shrink by a quarter.
_TOKEN_DEFAULTS: dict[str, Any] = {
    "refresh_digest": None,
    "refresh_expires_at": None,
    "token_type": "Bearer",
    "family_id": "",
    "revoked_at": None,
    "replaced_by": None,
    "permissions": [],
    "roles": [],
    "metadata": {},
}


def encode_token(token: AuthToken) -> bytes:
    """The token as JSON; fields that hold their default value are left out."""
    fields: dict[str, Any] = {
        "token_id": token.token_id,
        "user_id": token.user_id,
        "access_digest": token.access_digest,
        "refresh_digest": token.refresh_digest,
        "token_type": token.token_type,
        "family_id": token.family_id,
        "expires_at": _dt(token.expires_at),
        "refresh_expires_at": _dt(token.refresh_expires_at),
        "created_at": _dt(token.created_at),
        "updated_at": _dt(token.updated_at),
        "revoked_at": _dt(token.revoked_at),
        "replaced_by": token.replaced_by,
        "permissions": token.permissions,
        "roles": token.roles,
        "metadata": token.metadata,
    }
    payload = {
        name: value
        for name, value in fields.items()
        if name not in _TOKEN_DEFAULTS or value != _TOKEN_DEFAULTS[name]
    }
    if token.updated_at == token.created_at:  # never changed since it was issued
        del payload["updated_at"]
    return dumps(payload, "a token's permissions, roles and metadata")


def decode_token(raw: bytes | str) -> AuthToken:
    data = _loads(raw, "token")
    get = data.get
    try:
        created_at = datetime.fromisoformat(data["created_at"])
        return AuthToken(
            token_id=data["token_id"],
            user_id=data["user_id"],
            access_digest=data["access_digest"],
            refresh_digest=get("refresh_digest"),
            token_type=get("token_type", "Bearer"),
            family_id=get("family_id", ""),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            refresh_expires_at=_parse_dt(get("refresh_expires_at")),
            created_at=created_at,
            updated_at=_parse_dt(get("updated_at")) or created_at,
            revoked_at=_parse_dt(get("revoked_at")),
            replaced_by=get("replaced_by"),
            permissions=get("permissions", []),
            roles=get("roles", []),
            metadata=get("metadata", {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"A stored token lacks or garbles field {exc}; restore it.") from exc


def encode_session(session: SessionData) -> bytes:
    return dumps(
        {
            "session_id": session.session_id,
            "user_id": session.user_id,
            "data": session.data,
            "created_at": _dt(session.created_at),
            "last_accessed": _dt(session.last_accessed),
            "expires_at": _dt(session.expires_at),
            "ip_address": session.ip_address,
            "user_agent": session.user_agent,
        },
        "session data",
    )


def decode_session(raw: bytes | str) -> SessionData:
    data = _loads(raw, "session")
    try:
        return SessionData(
            session_id=data["session_id"],
            user_id=data["user_id"],
            data=data["data"],
            created_at=datetime.fromisoformat(data["created_at"]),
            last_accessed=datetime.fromisoformat(data["last_accessed"]),
            expires_at=_parse_dt(data["expires_at"]),
            ip_address=data["ip_address"],
            user_agent=data["user_agent"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"A stored session lacks or garbles field {exc}; restore it.") from exc


def encode_event(event: AuditEvent) -> bytes:
    return dumps(
        {
            "event_id": event.event_id,
            "action": event.action,
            "outcome": event.outcome,
            "user_id": event.user_id,
            "resource": event.resource,
            "ip_address": event.ip_address,
            "user_agent": event.user_agent,
            "created_at": _dt(event.created_at),
            "metadata": event.metadata,
        },
        "audit metadata",
    )


def decode_event(raw: bytes | str) -> AuditEvent:
    data = _loads(raw, "audit event")
    try:
        return AuditEvent(
            event_id=data["event_id"],
            action=data["action"],
            outcome=data["outcome"],
            user_id=data["user_id"],
            resource=data["resource"],
            ip_address=data["ip_address"],
            user_agent=data["user_agent"],
            created_at=datetime.fromisoformat(data["created_at"]),
            metadata=data["metadata"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"A stored audit event lacks field {exc}; restore it.") from exc


def clone_json(value: Any) -> Any:
    """A deep copy of plain JSON data (dicts, lists, scalars), much faster than ``deepcopy``."""
    if isinstance(value, dict):
        return {key: clone_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone_json(item) for item in value]
    return value
