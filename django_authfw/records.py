"""Plain records that every storage backend stores and returns.

They hold no ORM or cache state, so a record read from one backend can be written to another
(migration, backup). Times are timezone-aware UTC datetimes; token secrets appear only as
SHA-256 digests.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass(slots=True)
class AuthToken:
    """One issued token pair: an access token and, optionally, its refresh token.

    ``access_digest`` and ``refresh_digest`` are SHA-256 hex digests of the raw secrets, which
    are only ever returned to the client once (see :class:`django_authfw.tokens.IssuedToken`).
    ``family_id`` ties together every token produced by refreshing one login, so a replayed
    refresh token can revoke the whole family. ``replaced_by`` is the ``token_id`` of the token a
    refresh rotated this one into.
    """

    token_id: str
    user_id: str
    access_digest: str
    expires_at: datetime
    refresh_digest: str | None = None
    refresh_expires_at: datetime | None = None
    token_type: str = "Bearer"
    family_id: str = ""
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    revoked_at: datetime | None = None
    replaced_by: str | None = None
    permissions: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the access token's lifetime is over."""
        return (now or utcnow()) >= self.expires_at

    @property
    def retain_until(self) -> datetime:
        """When the record may be forgotten: the later of the access and refresh expiries.

        A rotated or revoked token is kept until then so that a replayed refresh token is
        recognised as reuse rather than as an unknown token.
        """
        if self.refresh_expires_at and self.refresh_expires_at > self.expires_at:
            return self.refresh_expires_at
        return self.expires_at

    def is_active(self, now: datetime | None = None) -> bool:
        return not self.is_revoked and not self.is_expired(now)


@dataclass(slots=True)
class SessionData:
    """A server-side session: arbitrary JSON ``data`` belonging to one user."""

    session_id: str
    user_id: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    last_accessed: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    ip_address: str | None = None
    user_agent: str = ""

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at


@dataclass(slots=True)
class KVEntry:
    """A key-value entry; ``value`` is raw bytes, ``expires_at`` None means it persists."""

    key: str
    value: bytes
    created_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at


@dataclass(slots=True)
class AuditEvent:
    """One auth decision: who, what, whether it succeeded, from where.

    ``event_id`` is unique in every backend, so migrating or restoring the log twice adds nothing.
    ``user_id`` is the user's primary key as a string when the user is known; ``metadata`` may
    carry the attempted username for failures, never a password or a token.
    """

    action: str
    outcome: bool
    user_id: str | None = None
    resource: str | None = None
    ip_address: str | None = None
    user_agent: str = ""
    created_at: datetime = field(default_factory=utcnow)
    metadata: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class StorageStatistics(TypedDict):
    """What :meth:`AuthStorage.statistics` returns; keys are named as in the guide."""

    backend: str
    total_tokens: int
    active_tokens: int
    expired_tokens: int
    revoked_tokens: int
    active_sessions: int
    total_sessions: int
    kv_entries: int
    audit_events: int
    database_size_mb: float | None
    memory_used_bytes: int | None


class CleanupCounts(TypedDict):
    """What :meth:`AuthStorage.cleanup_expired` returns: records removed per kind."""

    tokens: int
    sessions: int
    kv: int


def replace(record: Any, **changes: Any) -> Any:
    """Return a copy of a record with some fields changed (``dataclasses.replace``)."""
    return dataclasses.replace(record, **changes)
