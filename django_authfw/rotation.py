"""Refresh: rotation, reuse detection and the refresh-reuse grace.

With ``ROTATE_REFRESH_TOKENS`` (the default) a refresh revokes the presented pair and issues a
new one of the same family (``family_id``, one per login); the storage's atomic revoke picks
the single winner among concurrent refreshes. A rotated refresh token that comes back is reuse
(RFC 9700, section 4.14.2): its whole family is revoked, audited as ``refresh_reuse``. With
``REFRESH_REUSE_GRACE`` set, a replay within the window gets a new pair instead, by the rules of
:mod:`django_authfw.refresh_grace`. Without rotation, a refresh gives a new access token on the
same record and refresh token.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.views.decorators.debug import sensitive_variables

from . import audit as actions
from . import refresh_grace, tokens
from .audit import AuditWriter, refresh_failure_event, refresh_unknown_event, reuse_event
from .conf import conf
from .exceptions import InvalidToken, TokenExpired, TokenRevoked
from .grants import Grant, aaudit_grant, audit_grant, client_metadata, issued, mint, same
from .records import AuthToken, replace, utcnow
from .request_info import RequestInfo, request_info_of
from .storage import AuthStorage
from .tokens import IssuedToken
from .users import agrants_of, aload_active_user, grants_of, load_active_user

_BAD_REFRESH = "The refresh token is not valid; log in again to get a new one."
_REUSED = (
    "This refresh token was already used, so every token of this login has been revoked "
    "as a precaution; log in again."
)
_REVOKED = "The refresh token was revoked; log in again."
_GONE = "The token's user no longer exists or cannot log in; log in again."


def _refresh_digest(refresh_token: object) -> str:
    return tokens.digest(tokens.check_token_format(refresh_token, tokens.REFRESH_PREFIX))


def _refusal(record: AuthToken) -> tuple[str, InvalidToken] | None:
    """Why a found refresh token cannot be used (reuse is handled by the caller)."""
    if record.is_revoked:
        return "revoked", TokenRevoked(_REVOKED)
    if record.refresh_expires_at is None or utcnow() >= record.refresh_expires_at:
        return "expired", TokenExpired("The refresh token has expired; log in again.")
    return None


def _rotated(
    record: AuthToken, permissions: list[str], roles: list[str], info: RequestInfo
) -> Grant:
    """The pair a rotation of ``record`` issues: same family, ``parent_id`` the old pair."""
    return mint(
        record.user_id,
        permissions,
        roles,
        family_id=record.family_id or record.token_id,
        metadata={
            **refresh_grace.rotated_metadata(record.metadata),
            **client_metadata(info),
            "parent_id": record.token_id,
        },
    )


@sensitive_variables()  # the new access token
def _in_place(record: AuthToken, permissions: list[str], roles: list[str]) -> tuple[str, AuthToken]:
    now = utcnow()
    access = tokens.new_secret(tokens.ACCESS_PREFIX)
    updated = replace(
        record,
        access_digest=tokens.digest(access),
        expires_at=now + conf.ACCESS_TOKEN_TTL,
        updated_at=now,
        permissions=permissions,
        roles=roles,
    )
    return access, updated


def _reissue(
    record: AuthToken,
    head: AuthToken,
    origin: datetime,
    permissions: list[str],
    roles: list[str],
    info: RequestInfo,
) -> Grant:
    """A grace reissue: a new pair in place of the live ``head``, for the replayed ``record``."""
    return mint(
        head.user_id,
        permissions,
        roles,
        family_id=head.family_id or head.token_id,
        metadata=refresh_grace.reissued_metadata(
            head, client_metadata(info), presented=record, origin=origin
        ),
    )


def _grace_extra(record: AuthToken, head: AuthToken, origin: datetime) -> dict[str, Any]:
    return {
        "presented": record.token_id,
        "replaced": head.token_id,
        "rotated_at": origin.isoformat(),
    }


def _grace_start(record: AuthToken, head: AuthToken, now: datetime) -> datetime | None:
    """The rotation the grace window of the replayed ``record`` counts from, if ``now`` is
    within the window; ``head`` is the token ``record`` was rotated into."""
    origin = refresh_grace.origin_of(record, head)
    if not refresh_grace.in_window(origin, now, conf.REFRESH_REUSE_GRACE):
        return None
    return origin


def _grace_on() -> bool:
    return timedelta(0) < conf.REFRESH_REUSE_GRACE


class Rotation:
    """Refresh over one storage, auditing to one writer; made per call by the framework."""

    def __init__(self, storage: AuthStorage, audit: AuditWriter) -> None:
        self.storage = storage
        self.audit = audit

    # Refresh ----------------------------------------------------------------------------------

    @sensitive_variables()  # the presented and issued tokens
    def refresh(self, refresh_token: str, request_info: RequestInfo | None) -> IssuedToken:
        """:meth:`AuthFramework.refresh <django_authfw.AuthFramework.refresh>`."""
        info = request_info_of(request_info)
        try:
            presented = _refresh_digest(refresh_token)
        except InvalidToken:
            self.audit.write(refresh_unknown_event("malformed", info))
            raise
        record = self.storage.get_token_by_refresh(presented)
        if record is None or not same(record.refresh_digest, presented):
            self.audit.write(refresh_unknown_event("unknown", info))
            raise InvalidToken(_BAD_REFRESH)
        if record.is_revoked and record.replaced_by is not None:
            return self._grace_or_reuse(record, info)
        refusal = _refusal(record)
        if refusal is not None:
            self.audit.write(refresh_failure_event(record, refusal[0], info))
            raise refusal[1]
        permissions, roles = self._user_grants(record, info)

        if not conf.ROTATE_REFRESH_TOKENS:
            return self._refresh_in_place(record, refresh_token, permissions, roles, info)

        grant = _rotated(record, permissions, roles, info)
        self.storage.store_token(grant.record)
        # The storage's atomic revoke picks the single winner among concurrent refreshes.
        if not self.storage.revoke_token(
            record.token_id, at=utcnow(), replaced_by=grant.record.token_id
        ):
            self.storage.delete_token(grant.record.token_id)
            current = self.storage.get_token(record.token_id) or record
            if current.replaced_by is not None:
                return self._grace_or_reuse(current, info)
            self.audit.write(refresh_failure_event(record, "revoked", info))
            raise TokenRevoked(_REVOKED)
        audit_grant(self.audit, actions.REFRESH, grant, info, undo=self.storage.delete_token)
        return grant.issued

    @sensitive_variables()  # the presented and issued tokens
    async def arefresh(self, refresh_token: str, request_info: RequestInfo | None) -> IssuedToken:
        """Async twin of :meth:`refresh`."""
        info = request_info_of(request_info)
        try:
            presented = _refresh_digest(refresh_token)
        except InvalidToken:
            await self.audit.awrite(refresh_unknown_event("malformed", info))
            raise
        record = await self.storage.aget_token_by_refresh(presented)
        if record is None or not same(record.refresh_digest, presented):
            await self.audit.awrite(refresh_unknown_event("unknown", info))
            raise InvalidToken(_BAD_REFRESH)
        if record.is_revoked and record.replaced_by is not None:
            return await self._agrace_or_reuse(record, info)
        refusal = _refusal(record)
        if refusal is not None:
            await self.audit.awrite(refresh_failure_event(record, refusal[0], info))
            raise refusal[1]
        permissions, roles = await self._auser_grants(record, info)

        if not conf.ROTATE_REFRESH_TOKENS:
            return await self._arefresh_in_place(record, refresh_token, permissions, roles, info)

        grant = _rotated(record, permissions, roles, info)
        await self.storage.astore_token(grant.record)
        if not await self.storage.arevoke_token(
            record.token_id, at=utcnow(), replaced_by=grant.record.token_id
        ):
            await self.storage.adelete_token(grant.record.token_id)
            current = await self.storage.aget_token(record.token_id) or record
            if current.replaced_by is not None:
                return await self._agrace_or_reuse(current, info)
            await self.audit.awrite(refresh_failure_event(record, "revoked", info))
            raise TokenRevoked(_REVOKED)
        await aaudit_grant(
            self.audit, actions.REFRESH, grant, info, undo=self.storage.adelete_token
        )
        return grant.issued

    def _user_grants(self, record: AuthToken, info: RequestInfo) -> tuple[list[str], list[str]]:
        """The permissions and roles of ``record``'s user, read afresh; a user who is gone or
        cannot log in has ``record`` revoked and gets :class:`InvalidToken`."""
        user = load_active_user(record.user_id)
        if user is None:
            self.storage.revoke_token(record.token_id, at=utcnow())
            self.audit.write(refresh_failure_event(record, "inactive_user", info))
            raise InvalidToken(_GONE)
        return grants_of(user)

    async def _auser_grants(
        self, record: AuthToken, info: RequestInfo
    ) -> tuple[list[str], list[str]]:
        user = await aload_active_user(record.user_id)
        if user is None:
            await self.storage.arevoke_token(record.token_id, at=utcnow())
            await self.audit.awrite(refresh_failure_event(record, "inactive_user", info))
            raise InvalidToken(_GONE)
        return await agrants_of(user)

    # Without rotation -------------------------------------------------------------------------

    @sensitive_variables()
    def _refresh_in_place(
        self,
        record: AuthToken,
        refresh_token: str,
        permissions: list[str],
        roles: list[str],
        info: RequestInfo,
    ) -> IssuedToken:
        """A new access token on the same record and refresh token."""
        access, updated = _in_place(record, permissions, roles)
        if not self.storage.update_token(updated):
            raise InvalidToken(_BAD_REFRESH)
        grant = Grant(issued(updated, access, refresh_token), updated)
        audit_grant(
            self.audit,
            actions.REFRESH,
            grant,
            info,
            undo=lambda _id: self.storage.update_token(record),
        )
        return grant.issued

    @sensitive_variables()
    async def _arefresh_in_place(
        self,
        record: AuthToken,
        refresh_token: str,
        permissions: list[str],
        roles: list[str],
        info: RequestInfo,
    ) -> IssuedToken:
        access, updated = _in_place(record, permissions, roles)
        if not await self.storage.aupdate_token(updated):
            raise InvalidToken(_BAD_REFRESH)
        grant = Grant(issued(updated, access, refresh_token), updated)

        async def undo(_id: str) -> bool:
            return await self.storage.aupdate_token(record)

        await aaudit_grant(self.audit, actions.REFRESH, grant, info, undo=undo)
        return grant.issued

    # Reuse ------------------------------------------------------------------------------------

    def _reuse(self, record: AuthToken, info: RequestInfo) -> TokenRevoked:
        """A rotated refresh token came back: revoke its family, audit, return the error."""
        revoked = self.storage.revoke_user_tokens(
            record.user_id, at=utcnow(), family_id=record.family_id or None
        )
        self.audit.write(reuse_event(record, revoked, info))
        return TokenRevoked(_REUSED)

    async def _areuse(self, record: AuthToken, info: RequestInfo) -> TokenRevoked:
        revoked = await self.storage.arevoke_user_tokens(
            record.user_id, at=utcnow(), family_id=record.family_id or None
        )
        await self.audit.awrite(reuse_event(record, revoked, info))
        return TokenRevoked(_REUSED)

    # Refresh-reuse grace (AUTHFW["REFRESH_REUSE_GRACE"]; rules in refresh_grace.py) -----------

    def _grace_head(self, record: AuthToken) -> tuple[AuthToken, datetime] | None:
        """The live token a grace reissue for the rotated ``record`` replaces, and the time of
        the rotation its window counts from; None when the replay is plain reuse."""
        if not _grace_on() or record.replaced_by is None:
            return None
        head = self.storage.get_token(record.replaced_by)
        if head is None:
            return None
        now = utcnow()
        origin = _grace_start(record, head, now)
        if origin is None:
            return None
        # Each grace reissue adds one link to walk: MAX_REISSUES links reach the live token
        # only while fewer than MAX_REISSUES reissues followed the rotation.
        for _ in range(refresh_grace.MAX_REISSUES):
            if not head.is_revoked:
                return (head, origin) if refresh_grace.refreshable(head, now) else None
            following = self.storage.get_token(head.replaced_by) if head.replaced_by else None
            if following is None or refresh_grace.marked_origin(following) != origin:
                return None  # revoked, or rotated normally since: not the latest rotation
            head = following
        return None

    async def _agrace_head(self, record: AuthToken) -> tuple[AuthToken, datetime] | None:
        if not _grace_on() or record.replaced_by is None:
            return None
        head = await self.storage.aget_token(record.replaced_by)
        if head is None:
            return None
        now = utcnow()
        origin = _grace_start(record, head, now)
        if origin is None:
            return None
        for _ in range(refresh_grace.MAX_REISSUES):
            if not head.is_revoked:
                return (head, origin) if refresh_grace.refreshable(head, now) else None
            following = (
                await self.storage.aget_token(head.replaced_by) if head.replaced_by else None
            )
            if following is None or refresh_grace.marked_origin(following) != origin:
                return None
            head = following
        return None

    @sensitive_variables()  # the issued tokens
    def _grace_or_reuse(self, record: AuthToken, info: RequestInfo) -> IssuedToken:
        """A rotated refresh token came back: a new pair within the grace, else reuse."""
        # One more round than reissues allowed: a round is lost only to another reissue.
        for _ in range(refresh_grace.MAX_REISSUES + 1):
            found = self._grace_head(record)
            if found is None:
                break
            head, origin = found
            permissions, roles = self._user_grants(head, info)
            grant = _reissue(record, head, origin, permissions, roles, info)
            self.storage.store_token(grant.record)
            # The same atomic revoke as a rotation: one winner among concurrent replays.
            if self.storage.revoke_token(
                head.token_id, at=utcnow(), replaced_by=grant.record.token_id
            ):
                audit_grant(
                    self.audit,
                    actions.REFRESH_GRACE,
                    grant,
                    info,
                    undo=self.storage.delete_token,
                    extra=_grace_extra(record, head, origin),
                )
                return grant.issued
            self.storage.delete_token(grant.record.token_id)
        raise self._reuse(record, info)

    @sensitive_variables()  # the issued tokens
    async def _agrace_or_reuse(self, record: AuthToken, info: RequestInfo) -> IssuedToken:
        for _ in range(refresh_grace.MAX_REISSUES + 1):
            found = await self._agrace_head(record)
            if found is None:
                break
            head, origin = found
            permissions, roles = await self._auser_grants(head, info)
            grant = _reissue(record, head, origin, permissions, roles, info)
            await self.storage.astore_token(grant.record)
            if await self.storage.arevoke_token(
                head.token_id, at=utcnow(), replaced_by=grant.record.token_id
            ):
                await aaudit_grant(
                    self.audit,
                    actions.REFRESH_GRACE,
                    grant,
                    info,
                    undo=self.storage.adelete_token,
                    extra=_grace_extra(record, head, origin),
                )
                return grant.issued
            await self.storage.adelete_token(grant.record.token_id)
        raise await self._areuse(record, info)
