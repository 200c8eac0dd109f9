"""Audit action names, the events the framework writes, and the writer that stores them.

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

# The action names live in layer 1 (django_authfw.actions, with their labels); they stay
# importable from here, where they were first defined.
from .actions import ACTIONS as ACTIONS
from .actions import LOCKOUT as LOCKOUT
from .actions import LOGIN as LOGIN
from .actions import LOGOUT as LOGOUT
from .actions import PASSWORD_CHANGE as PASSWORD_CHANGE
from .actions import REFRESH as REFRESH
from .actions import REFRESH_GRACE as REFRESH_GRACE
from .actions import REFRESH_REUSE as REFRESH_REUSE
from .actions import REGISTER as REGISTER
from .actions import REVOKE as REVOKE
from .actions import REVOKE_ALL as REVOKE_ALL
from .actions import SESSION_CREATE as SESSION_CREATE
from .actions import SESSION_END as SESSION_END
from .actions import UNLOCK as UNLOCK
from .actions import USER_DEACTIVATED as USER_DEACTIVATED
from .conf import conf
from .exceptions import InvalidInput, StorageError, StorageUnavailable
from .lockout import address_subject
from .records import AuditEvent, AuthToken
from .request_info import EMPTY, RequestInfo
from .storage import AuthStorage, DatabaseStorage, get_storage
from .tokens import check_id, shown_session_id

logger = logging.getLogger("django_authfw.audit")

MAX_ACTION_LENGTH = 100  # the audit_log.action column
MAX_RESOURCE_LENGTH = 255  # the audit_log.resource column
#: What the resource of an event about a username starts with (a failed login, a lockout).
USERNAME_RESOURCE = "username:"


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


# The framework's events --------------------------------------------------------------------------
# One builder per event the framework writes, so that each event's metadata keys (documented in
# docs/security.md, "Audit events") are listed once.


def register_event(user_id: str, info: RequestInfo) -> AuditEvent:
    """``register``: a user was created."""
    return make_event(REGISTER, True, user_id=user_id, request_info=info)


def login_failure_event(
    user_id: str | None, username: str, reason: str, info: RequestInfo, **extra: Any
) -> AuditEvent:
    """``login`` failed for ``reason``; ``user_id`` when the account exists.

    The resource names the attempted username (``username:<name>``), existing or not: the
    dashboard counts failures per username from the index on that column.
    """
    return make_event(
        LOGIN,
        False,
        user_id=user_id,
        request_info=info,
        resource=username_resource(username),
        metadata={"username": username, "reason": reason, **extra},
    )


def lockout_event(user_id: str | None, username: str, scope: str, info: RequestInfo) -> AuditEvent:
    """``lockout``: a failure locked the ``scope`` (``user`` or ``ip``) subject.

    The resource names the locked subject: ``username:<name>``, or ``ip:<address>`` (an IPv6
    client's /64 network, as the lockout counts it).
    """
    # The user id (when the account exists) lets the admin's username search find it.
    if scope == "ip" and info.ip_address:
        resource: str | None = ip_resource(address_subject(info.ip_address))
    else:
        resource = username_resource(username)
    return make_event(
        LOCKOUT,
        False,
        user_id=user_id,
        request_info=info,
        resource=resource,
        metadata={
            "username": username,
            "scope": scope,
            "window": conf.LOCKOUT_WINDOW.total_seconds(),
        },
    )


def grant_event(
    action: str, token: AuthToken, info: RequestInfo, extra: dict[str, Any] | None = None
) -> AuditEvent:
    """``action`` (login, refresh, refresh_grace) issued the pair ``token``."""
    return make_event(
        action,
        True,
        user_id=token.user_id,
        request_info=info,
        metadata={"token_id": token.token_id, "family_id": token.family_id, **(extra or {})},
    )


def refresh_failure_event(token: AuthToken, reason: str, info: RequestInfo) -> AuditEvent:
    """``refresh`` of the found ``token`` refused for ``reason``."""
    return make_event(
        REFRESH,
        False,
        user_id=token.user_id,
        request_info=info,
        metadata={"token_id": token.token_id, "reason": reason},
    )


def refresh_unknown_event(reason: str, info: RequestInfo) -> AuditEvent:
    """``refresh`` refused before any token was found: ``reason`` is ``malformed`` or
    ``unknown`` (never stored, already cleaned up, or guessed). No user: none is known."""
    return make_event(REFRESH, False, request_info=info, metadata={"reason": reason})


def reuse_event(token: AuthToken, revoked: int, info: RequestInfo) -> AuditEvent:
    """``refresh_reuse``: the rotated ``token`` came back; ``revoked`` tokens of its family."""
    return make_event(
        REFRESH_REUSE,
        False,
        user_id=token.user_id,
        request_info=info,
        metadata={
            "token_id": token.token_id,
            "family_id": token.family_id,
            "replaced_by": token.replaced_by,
            "revoked": revoked,
        },
    )


def revoke_event(token: AuthToken, kind: str, count: int, info: RequestInfo) -> AuditEvent:
    """``revoke``: the ``kind`` ("access" or "refresh") token of ``token`` ended ``count``."""
    return make_event(
        REVOKE,
        True,
        user_id=token.user_id,
        request_info=info,
        resource=token_resource(token.token_id),
        metadata={"token_id": token.token_id, "token_type_hint": f"{kind}_token", "count": count},
    )


def revoke_all_event(user_id: str, count: int, info: RequestInfo) -> AuditEvent:
    """``revoke_all``: every token of a user in one storage, ``count`` of them."""
    return make_event(
        REVOKE_ALL, True, user_id=user_id, request_info=info, metadata={"count": count}
    )


def session_event(
    user_id: str,
    outcome: bool,
    info: RequestInfo,
    *,
    created: bool,
    count: int = 1,
    session_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> AuditEvent:
    """``session_create`` (``created``) or ``session_end`` of ``count`` sessions of a user.

    With ``session_id`` (one session), the resource names it by its first characters only: a
    session id is the session's credential.
    """
    action = SESSION_CREATE if created else SESSION_END
    return make_event(
        action,
        outcome,
        user_id=user_id,
        request_info=info,
        resource=session_resource(session_id) if session_id else None,
        metadata={**_extra(extra), "count": count},
    )


def unlock_event(
    username: str | None,
    ip_address: str | None,
    removed: int,
    info: RequestInfo,
    *,
    user_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> AuditEvent:
    """``unlock``: the lockout of a username and/or address was lifted; ``removed`` entries."""
    subjects = [username_resource(username) if username else "", ip_resource(ip_address or "")]
    resource = " ".join(part for part in subjects if part)
    metadata: dict[str, Any] = {**_extra(extra), "removed": removed}
    if username:
        metadata["username"] = username
    if ip_address:
        metadata["ip"] = ip_address
    return make_event(
        UNLOCK,
        True,
        user_id=user_id,
        request_info=info,
        resource=resource[:MAX_RESOURCE_LENGTH],
        metadata=metadata,
    )


def _extra(extra: object) -> dict[str, Any]:
    # What a caller adds to an event's metadata (``audit_metadata``): checked before the
    # framework's own keys are merged in, which win.
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise InvalidInput("audit_metadata must be a dict of JSON-serialisable values or None.")
    return extra


def username_resource(username: str) -> str:
    """The ``resource`` of an event about a username (a login, a lockout): ``username:<name>``.

    Cut at the column's 255 characters (a username may be as long).
    """
    return f"{USERNAME_RESOURCE}{username}"[:MAX_RESOURCE_LENGTH]


def ip_resource(address: str) -> str:
    """The ``resource`` of an event about an address (a lockout): ``ip:<address>``."""
    return f"ip:{address}" if address else ""


def token_resource(token_id: str) -> str:
    """The ``resource`` of an event about one token: ``token:<token id>``."""
    return f"token:{token_id}"[:MAX_RESOURCE_LENGTH]


def session_resource(session_id: str) -> str:
    """The ``resource`` of an event about one session: ``session:<first characters>…``."""
    return f"session:{shown_session_id(session_id)}"


def access_ended_event(
    action: str, user_id: str, counts: dict[str, int], failed: list[str], metadata: dict[str, Any]
) -> AuditEvent:
    """``action`` (user_deactivated, password_change) ended a user's tokens and sessions in
    every storage alias; a failure when some alias (``failed_storages``) could not."""
    event_metadata: dict[str, Any] = {**metadata, **counts}
    if failed:
        event_metadata["failed_storages"] = failed
    return make_event(action, not failed, user_id=user_id, metadata=event_metadata)


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
