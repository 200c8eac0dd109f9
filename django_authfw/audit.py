"""Audit action names and the writer that sends events to the audit storage.

Where events go: the ``audit_storage`` given to :class:`~django_authfw.AuthFramework`, else the
``AUTHFW["AUDIT_STORAGE"]`` alias, else a :class:`~django_authfw.storage.DatabaseStorage` on the
default database (the ``auth_audit_log`` table). Nothing is written when
``AUTHFW["ENABLE_AUDIT_LOG"]`` is False.

A failed write is never swallowed: it is logged at ERROR on the ``django_authfw.audit`` logger
and raised as :class:`~django_authfw.exceptions.StorageUnavailable`, so that the framework can
refuse (or undo) a decision it could not record. See docs/security.md.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .conf import conf
from .exceptions import InvalidInput, StorageError, StorageUnavailable
from .records import AuditEvent
from .request_info import EMPTY, RequestInfo
from .storage import AuthStorage, DatabaseStorage, get_storage
from .tokens import check_id

logger = logging.getLogger("django_authfw.audit")

REGISTER = "register"
LOGIN = "login"
REFRESH = "refresh"
REFRESH_REUSE = "refresh_reuse"
#: A rotated refresh token replayed within AUTHFW["REFRESH_REUSE_GRACE"]: a new pair, no revocation.
REFRESH_GRACE = "refresh_grace"
REVOKE = "revoke"
REVOKE_ALL = "revoke_all"
LOGOUT = "logout"
LOCKOUT = "lockout"
SESSION_CREATE = "session_create"
SESSION_END = "session_end"
PASSWORD_CHANGE = "password_change"
USER_DEACTIVATED = "user_deactivated"

#: Every action the framework itself writes. :meth:`AuthFramework.audit` accepts others too.
ACTIONS = frozenset(
    {
        REGISTER,
        LOGIN,
        REFRESH,
        REFRESH_REUSE,
        REFRESH_GRACE,
        REVOKE,
        REVOKE_ALL,
        LOGOUT,
        LOCKOUT,
        SESSION_CREATE,
        SESSION_END,
        PASSWORD_CHANGE,
        USER_DEACTIVATED,
    }
)

MAX_ACTION_LENGTH = 100  # the audit_log.action column


def make_event(
    action: str,
    outcome: bool,
    *,
    user_id: str | None = None,
    request_info: RequestInfo | None = None,
    resource: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditEvent:
    """Validate the parts of an audit event and build it.

    ``metadata`` must be a JSON-serialisable dict; callers never put a password or a raw token
    in it.
    """
    check_id(action, "action", MAX_ACTION_LENGTH)
    if not isinstance(outcome, bool):
        raise InvalidInput("outcome must be True (success) or False (failure).")
    if user_id is not None:
        check_id(user_id, "user_id")
    if resource is not None:
        check_id(resource, "resource")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a dict of JSON-serialisable values.")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError):
        raise InvalidInput("metadata must be a dict of JSON-serialisable values.") from None
    info = request_info or EMPTY
    return AuditEvent(
        action=action,
        outcome=outcome,
        user_id=user_id,
        resource=resource,
        ip_address=info.ip_address,
        user_agent=info.user_agent,
        metadata=metadata,
    )


# The database audit table is the default target; DatabaseStorage holds no state besides its
# options, so one instance per process is enough.
_default_audit_storage: DatabaseStorage | None = None


def default_audit_storage() -> AuthStorage:
    """The audit target when nothing else is configured: the default database's table."""
    global _default_audit_storage
    if _default_audit_storage is None:
        _default_audit_storage = DatabaseStorage()
    return _default_audit_storage


class AuditWriter:
    """Sends audit events to one storage, resolved at each write so settings apply live."""

    def __init__(self, storage: str | AuthStorage | None = None) -> None:
        self._storage = storage

    @property
    def storage(self) -> AuthStorage:
        """The storage events go to now."""
        if isinstance(self._storage, AuthStorage):
            return self._storage
        alias = self._storage or conf.AUDIT_STORAGE
        if alias:
            return get_storage(alias)
        return default_audit_storage()

    @staticmethod
    def enabled() -> bool:
        return conf.ENABLE_AUDIT_LOG

    def write(self, event: AuditEvent) -> None:
        """Append ``event``; raise :class:`StorageUnavailable` if that fails."""
        if not self.enabled():
            return
        try:
            self.storage.append_audit(event)
        except Exception as exc:
            raise self._failed(event, exc) from exc

    async def awrite(self, event: AuditEvent) -> None:
        """Async twin of :meth:`write`."""
        if not self.enabled():
            return
        try:
            await self.storage.aappend_audit(event)
        except Exception as exc:
            raise self._failed(event, exc) from exc

    @staticmethod
    def _failed(event: AuditEvent, exc: Exception) -> StorageUnavailable:
        # Events hold no secrets, so the event's fields may be logged; they let an operator
        # reconstruct what went unrecorded.
        logger.error(
            "Audit event %s (outcome=%s, user_id=%s, ip=%s, event_id=%s) could not be written: "
            "%s: %s",
            event.action,
            event.outcome,
            event.user_id,
            event.ip_address,
            event.event_id,
            type(exc).__name__,
            exc,
        )
        # A storage's own message says what failed and what to do (it holds no secrets).
        cause = f" {exc}" if isinstance(exc, StorageError) else ""
        return StorageUnavailable(
            f"The audit log could not record the {event.action!r} event (see the "
            "'django_authfw.audit' log); check the audit storage (AUTHFW['AUDIT_STORAGE']) "
            f"and retry.{cause}"
        )
