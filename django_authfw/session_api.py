"""The session and key-value half of :class:`~django_authfw.AuthFramework`.

A mixin so that framework.py stays about tokens; it uses the framework's ``storage`` and audit
writer. Session ids are 256-bit random strings; sessions expire after ``AUTHFW["SESSION_TTL"]``
unless a ``ttl`` is given, and :meth:`touch_session` slides the expiry by the session's lifetime.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import validate
from .audit import AuditWriter, session_event
from .conf import conf
from .exceptions import InvalidCredentials, InvalidInput
from .lockout import RESERVED_PREFIX
from .records import AuditEvent, SessionData, utcnow
from .request_info import RequestInfo, request_info_of
from .tokens import check_id
from .users import aresolve_user, aresolve_user_id, can_authenticate, resolve_user, resolve_user_id
from .users import user_id_of as _user_id_of

if TYPE_CHECKING:
    from .storage import AuthStorage


def _data(data: object) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput("session data must be a dict of JSON-serialisable values.")
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        raise InvalidInput("session data must be a dict of JSON-serialisable values.") from None
    return data


def _kv_key(key: object) -> str:
    key = check_id(key, "key")
    if key.startswith(RESERVED_PREFIX):
        raise InvalidInput(
            f"keys starting with {RESERVED_PREFIX!r} are reserved for django_authfw; "
            "choose another prefix."
        )
    return key


def _new_session(
    user_id: str, data: dict[str, Any], ttl: timedelta | None, info: RequestInfo
) -> SessionData:
    now = utcnow()
    return SessionData(
        session_id=secrets.token_urlsafe(32),
        user_id=user_id,
        data=data,
        created_at=now,
        last_accessed=now,
        expires_at=now + (ttl or conf.SESSION_TTL),
        ip_address=info.ip_address,
        user_agent=info.user_agent,
    )


def _slid_expiry(session: SessionData) -> tuple[Any, Any]:
    """New ``last_accessed`` and expiry: the session keeps the lifetime it was given."""
    now = utcnow()
    if session.expires_at is None:
        return now, None
    return now, now + (session.expires_at - session.last_accessed)


class SessionAPI:
    """Sessions and key-value helpers, mixed into AuthFramework."""

    storage: AuthStorage
    _audit: AuditWriter

    # Sessions ---------------------------------------------------------------------------------

    def create_session(
        self,
        user: Any,
        data: dict[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
        request_info: RequestInfo | None = None,
    ) -> SessionData:
        """Start a server-side session for an active user; audited as ``session_create``."""
        data, ttl, info = _data(data), validate.ttl(ttl), request_info_of(request_info)
        found = resolve_user(user)
        if not can_authenticate(found):
            raise InvalidCredentials("This account is inactive; it cannot start a session.")
        session = _new_session(_user_id_of(found), data, ttl, info)
        self.storage.store_session(session)
        self._audit.write(
            self._session_event(
                session.user_id, True, info, created=True, session_id=session.session_id
            )
        )
        return session

    async def acreate_session(
        self,
        user: Any,
        data: dict[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
        request_info: RequestInfo | None = None,
    ) -> SessionData:
        """Async twin of :meth:`create_session`."""
        data, ttl, info = _data(data), validate.ttl(ttl), request_info_of(request_info)
        found = await aresolve_user(user)
        if not can_authenticate(found):
            raise InvalidCredentials("This account is inactive; it cannot start a session.")
        session = _new_session(_user_id_of(found), data, ttl, info)
        await self.storage.astore_session(session)
        await self._audit.awrite(
            self._session_event(
                session.user_id, True, info, created=True, session_id=session.session_id
            )
        )
        return session

    _session_event = staticmethod(session_event)

    def get_session(self, session_id: str) -> SessionData | None:
        """The session, or None if unknown or expired."""
        return self.storage.get_session(check_id(session_id, "session_id"))

    async def aget_session(self, session_id: str) -> SessionData | None:
        """Async twin of :meth:`get_session`."""
        return await self.storage.aget_session(check_id(session_id, "session_id"))

    def touch_session(self, session_id: str) -> bool:
        """Mark the session used now and slide its expiry; False if it is gone or expired."""
        session = self.get_session(session_id)
        if session is None:
            return False
        at, expires_at = _slid_expiry(session)
        return self.storage.touch_session(session.session_id, at=at, expires_at=expires_at)

    async def atouch_session(self, session_id: str) -> bool:
        """Async twin of :meth:`touch_session`."""
        session = await self.aget_session(session_id)
        if session is None:
            return False
        at, expires_at = _slid_expiry(session)
        return await self.storage.atouch_session(session.session_id, at=at, expires_at=expires_at)

    def end_session(
        self,
        session_id: str,
        *,
        request_info: RequestInfo | None = None,
        audit_metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Delete a session; return whether it existed. Audited as ``session_end``.

        ``audit_metadata`` is added to the event's metadata (the admin records who ended it).
        """
        info = request_info_of(request_info)
        session = self.get_session(session_id)
        if session is None:
            return False
        event = self._end_event(session, info, audit_metadata)
        if not self.storage.delete_session(session.session_id):
            return False
        self._audit.write(event)
        return True

    async def aend_session(
        self,
        session_id: str,
        *,
        request_info: RequestInfo | None = None,
        audit_metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Async twin of :meth:`end_session`."""
        info = request_info_of(request_info)
        session = await self.aget_session(session_id)
        if session is None:
            return False
        event = self._end_event(session, info, audit_metadata)
        if not await self.storage.adelete_session(session.session_id):
            return False
        await self._audit.awrite(event)
        return True

    def _end_event(
        self, session: SessionData, info: RequestInfo, extra: dict[str, Any] | None
    ) -> AuditEvent:
        # Built (and so checked) before the session is deleted: metadata that cannot be
        # recorded changes nothing.
        return self._session_event(
            session.user_id,
            True,
            info,
            created=False,
            session_id=session.session_id,
            extra=extra,
        )

    def list_sessions(self, user: Any) -> list[SessionData]:
        """The user's unexpired sessions, oldest first."""
        return self.storage.list_user_sessions(resolve_user_id(user))

    async def alist_sessions(self, user: Any) -> list[SessionData]:
        """Async twin of :meth:`list_sessions`."""
        return await self.storage.alist_user_sessions(await aresolve_user_id(user))

    def end_user_sessions(self, user: Any, *, request_info: RequestInfo | None = None) -> int:
        """Delete every session of a user; return how many. Audited as ``session_end``."""
        info = request_info_of(request_info)
        user_id = resolve_user_id(user)
        count = self.storage.delete_user_sessions(user_id)
        if count:
            self._audit.write(self._session_event(user_id, True, info, created=False, count=count))
        return count

    async def aend_user_sessions(
        self, user: Any, *, request_info: RequestInfo | None = None
    ) -> int:
        """Async twin of :meth:`end_user_sessions`."""
        info = request_info_of(request_info)
        user_id = await aresolve_user_id(user)
        count = await self.storage.adelete_user_sessions(user_id)
        if count:
            await self._audit.awrite(
                self._session_event(user_id, True, info, created=False, count=count)
            )
        return count

    # Key-value --------------------------------------------------------------------------------

    def kv_set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        """Store bytes under ``key`` (``authfw:`` keys are reserved); no ``ttl`` = persist."""
        if not isinstance(value, bytes):
            raise InvalidInput("value must be bytes; encode text first (value.encode()).")
        self.storage.kv_set(_kv_key(key), value, validate.ttl(ttl))

    async def akv_set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        """Async twin of :meth:`kv_set`."""
        if not isinstance(value, bytes):
            raise InvalidInput("value must be bytes; encode text first (value.encode()).")
        await self.storage.akv_set(_kv_key(key), value, validate.ttl(ttl))

    def kv_get(self, key: str) -> bytes | None:
        """The value, or None if unknown or expired."""
        return self.storage.kv_get(_kv_key(key))

    async def akv_get(self, key: str) -> bytes | None:
        """Async twin of :meth:`kv_get`."""
        return await self.storage.akv_get(_kv_key(key))

    def kv_delete(self, key: str) -> bool:
        """Delete a key; return whether it existed."""
        return self.storage.kv_delete(_kv_key(key))

    async def akv_delete(self, key: str) -> bool:
        """Async twin of :meth:`kv_delete`."""
        return await self.storage.akv_delete(_kv_key(key))
