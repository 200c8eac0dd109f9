"""Token pairs as the framework issues and reads them, shared by login.py and rotation.py.

A pair is minted in this process, stored, audited, and only then handed out: if the audit log
cannot record the issue, the stored record is withdrawn (:func:`audit_grant`), so a token whose
issue went unrecorded is never usable. The raw secrets live only in frames marked with
``sensitive_variables``, so that Django's error reports never show them.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.views.decorators.debug import sensitive_variables

from . import tokens
from .audit import AuditWriter, grant_event
from .conf import conf
from .exceptions import InvalidInput, InvalidToken, StorageUnavailable
from .records import AuthToken, utcnow
from .request_info import RequestInfo
from .tokens import IssuedToken

logger = logging.getLogger("django_authfw")


@dataclass(frozen=True, slots=True)
class Grant:
    """A freshly minted token pair: what the client gets and what the storage keeps."""

    issued: IssuedToken
    record: AuthToken


@sensitive_variables()  # the raw tokens
def mint(
    user_id: str,
    permissions: list[str],
    roles: list[str],
    *,
    family_id: str | None,
    metadata: dict[str, Any],
) -> Grant:
    """A new pair for ``user_id``, with the lifetimes of ``AUTHFW`` at this moment.

    The token id is derived from the access digest (:func:`~django_authfw.tokens.token_id_for`)
    and ``family_id`` None (a new login) names the family after this first token: that lets a
    store key the record by the digest it is looked up by (see docs/backends.md).
    """
    now = utcnow()
    access = tokens.new_secret(tokens.ACCESS_PREFIX)
    refresh = tokens.new_secret(tokens.REFRESH_PREFIX)
    access_digest = tokens.digest(access)
    token_id = tokens.token_id_for(access_digest)
    record = AuthToken(
        token_id=token_id,
        user_id=user_id,
        access_digest=access_digest,
        expires_at=now + conf.ACCESS_TOKEN_TTL,
        refresh_digest=tokens.digest(refresh),
        refresh_expires_at=now + conf.REFRESH_TOKEN_TTL,
        family_id=family_id or token_id,
        created_at=now,
        updated_at=now,
        permissions=list(permissions),
        roles=list(roles),
        metadata=metadata,
    )
    return Grant(issued(record, access, refresh), record)


@sensitive_variables()  # the raw tokens
def issued(record: AuthToken, access: str, refresh: str | None) -> IssuedToken:
    """The client's copy of ``record``, with its raw tokens."""
    return IssuedToken(
        access_token=access,
        refresh_token=refresh,
        token_type=record.token_type,
        expires_at=record.expires_at,
        refresh_expires_at=record.refresh_expires_at,
        token_id=record.token_id,
        user_id=record.user_id,
        permissions=tuple(record.permissions),
        roles=tuple(record.roles),
        # The moment the access token's lifetime counts from: minted now, or renewed in place.
        issued_at=record.updated_at,
    )


def client_metadata(info: RequestInfo) -> dict[str, Any]:
    """What a new token records of the client: its address and user agent, when known."""
    meta: dict[str, Any] = {}
    if info.ip_address:
        meta["ip_address"] = info.ip_address
    if info.user_agent:
        meta["user_agent"] = info.user_agent
    return meta


def audit_grant(
    audit: AuditWriter,
    action: str,
    grant: Grant,
    info: RequestInfo,
    *,
    undo: Callable[[str], object],
    extra: dict[str, Any] | None = None,
) -> None:
    """Audit an issued token; if the audit log fails, the token is withdrawn first.

    The raw secrets have not left this process yet, so a token whose issue could not be
    recorded is never usable by anyone; deleting the record keeps the storage clean.
    """
    try:
        audit.write(grant_event(action, grant.record, info, extra))
    except StorageUnavailable:
        try:
            undo(grant.record.token_id)
        except Exception:
            logger.exception("Could not delete unaudited token %s", grant.record.token_id)
        raise


async def aaudit_grant(
    audit: AuditWriter,
    action: str,
    grant: Grant,
    info: RequestInfo,
    *,
    undo: Callable[[str], Awaitable[object]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Async twin of :func:`audit_grant`."""
    try:
        await audit.awrite(grant_event(action, grant.record, info, extra))
    except StorageUnavailable:
        try:
            await undo(grant.record.token_id)
        except Exception:
            logger.exception("Could not delete unaudited token %s", grant.record.token_id)
        raise


def same(stored: str | None, presented: str) -> bool:
    """Whether a found record's digest is the presented one, compared in constant time."""
    # The lookup already matched the digest; comparing again in constant time guards against a
    # storage that matched loosely (collation, prefix index) without leaking timing.
    return stored is not None and hmac.compare_digest(stored, presented)


def split_token(token: object) -> tuple[str, str] | None:
    """``("access"|"refresh", digest)`` for a well-formed token, None for junk (RFC 7009)."""
    if not isinstance(token, str):
        raise InvalidInput("token must be a string (an access or a refresh token).")
    for kind, prefix in (("access", tokens.ACCESS_PREFIX), ("refresh", tokens.REFRESH_PREFIX)):
        if token.startswith(prefix):
            try:
                return kind, tokens.digest(tokens.check_token_format(token, prefix))
            except InvalidToken:
                return None
    return None
