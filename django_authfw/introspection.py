"""RFC 7662 introspection of an access or a refresh token."""

from __future__ import annotations

from typing import Any

from django.views.decorators.debug import sensitive_variables

from .grants import same, split_token
from .records import AuthToken, utcnow
from .storage import AuthStorage
from .users import aload_active_user, load_active_user

INACTIVE: dict[str, Any] = {"active": False}


def _is_active(record: AuthToken, kind: str) -> bool:
    if record.is_revoked:
        return False
    if kind == "access":
        return not record.is_expired()
    return record.refresh_expires_at is not None and utcnow() < record.refresh_expires_at


def _answer(record: AuthToken, kind: str, username: str) -> dict[str, Any]:
    exp = record.expires_at if kind == "access" else record.refresh_expires_at
    assert exp is not None  # a refresh token found by digest has a refresh expiry
    return {
        "active": True,
        "scope": " ".join(record.permissions),
        "username": username,
        # RFC 7662's token_type is the OAuth type ("Bearer") for access tokens; a refresh token
        # says so, so that a resource server never mistakes one for an access token.
        "token_type": record.token_type if kind == "access" else "refresh_token",
        "exp": int(exp.timestamp()),
        "iat": int(record.created_at.timestamp()),
        "sub": record.user_id,
        "jti": record.token_id,
    }


def _live(record: AuthToken | None, kind: str, presented: str) -> AuthToken | None:
    """``record`` if it is the presented token's and the token is active."""
    if record is None:
        return None
    stored = record.access_digest if kind == "access" else record.refresh_digest
    return record if same(stored, presented) and _is_active(record, kind) else None


@sensitive_variables()  # the presented token
def introspect(storage: AuthStorage, token: object) -> dict[str, Any]:
    """:meth:`AuthFramework.introspect <django_authfw.AuthFramework.introspect>`."""
    if not isinstance(token, str) or (split := split_token(token)) is None:
        return dict(INACTIVE)
    kind, presented = split
    if kind == "access":
        record = _live(storage.get_token_by_access(presented), kind, presented)
    else:
        record = _live(storage.get_token_by_refresh(presented), kind, presented)
    user = load_active_user(record.user_id) if record is not None else None
    if record is None or user is None:
        return dict(INACTIVE)
    return _answer(record, kind, user.get_username())


@sensitive_variables()
async def aintrospect(storage: AuthStorage, token: object) -> dict[str, Any]:
    """Async twin of :func:`introspect`."""
    if not isinstance(token, str) or (split := split_token(token)) is None:
        return dict(INACTIVE)
    kind, presented = split
    if kind == "access":
        record = _live(await storage.aget_token_by_access(presented), kind, presented)
    else:
        record = _live(await storage.aget_token_by_refresh(presented), kind, presented)
    user = await aload_active_user(record.user_id) if record is not None else None
    if record is None or user is None:
        return dict(INACTIVE)
    return _answer(record, kind, user.get_username())
