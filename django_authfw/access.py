"""Ending access: one token (its pair or its login), every token of a user in one storage, and
a user's tokens and sessions in every storage alias (:func:`end_user_access`, used by the signal
receivers in signals.py)."""

from __future__ import annotations

import logging
from typing import Any

from django.views.decorators.debug import sensitive_variables

from .audit import AuditWriter, access_ended_event, revoke_all_event, revoke_event
from .conf import conf
from .exceptions import StorageUnavailable
from .grants import same, split_token
from .records import utcnow
from .request_info import RequestInfo, request_info_of
from .storage import AuthStorage, get_storage
from .users import aresolve_user_id, resolve_user_id

logger = logging.getLogger("django_authfw")


@sensitive_variables()  # the presented token
def revoke_token(
    storage: AuthStorage, audit: AuditWriter, token: str, request_info: RequestInfo | None
) -> bool:
    """:meth:`AuthFramework.revoke_token <django_authfw.AuthFramework.revoke_token>`."""
    info = request_info_of(request_info)
    split = split_token(token)
    if split is None:
        return False
    kind, presented = split
    if kind == "access":
        record = storage.get_token_by_access(presented)
        if record is None or not same(record.access_digest, presented):
            return False
        count = int(storage.revoke_token(record.token_id, at=utcnow()))
    else:
        record = storage.get_token_by_refresh(presented)
        if record is None or not same(record.refresh_digest, presented):
            return False
        if record.family_id:  # the whole login
            count = storage.revoke_user_tokens(
                record.user_id, at=utcnow(), family_id=record.family_id
            )
        else:
            count = int(storage.revoke_token(record.token_id, at=utcnow()))
    if count:
        audit.write(revoke_event(record, kind, count, info))
    return count > 0


@sensitive_variables()
async def arevoke_token(
    storage: AuthStorage, audit: AuditWriter, token: str, request_info: RequestInfo | None
) -> bool:
    """Async twin of :func:`revoke_token`."""
    info = request_info_of(request_info)
    split = split_token(token)
    if split is None:
        return False
    kind, presented = split
    if kind == "access":
        record = await storage.aget_token_by_access(presented)
        if record is None or not same(record.access_digest, presented):
            return False
        count = int(await storage.arevoke_token(record.token_id, at=utcnow()))
    else:
        record = await storage.aget_token_by_refresh(presented)
        if record is None or not same(record.refresh_digest, presented):
            return False
        if record.family_id:
            count = await storage.arevoke_user_tokens(
                record.user_id, at=utcnow(), family_id=record.family_id
            )
        else:
            count = int(await storage.arevoke_token(record.token_id, at=utcnow()))
    if count:
        await audit.awrite(revoke_event(record, kind, count, info))
    return count > 0


def revoke_user_tokens(
    storage: AuthStorage, audit: AuditWriter, user: Any, request_info: RequestInfo | None
) -> int:
    """:meth:`AuthFramework.revoke_user_tokens <django_authfw.AuthFramework.revoke_user_tokens>`."""
    info = request_info_of(request_info)
    user_id = resolve_user_id(user)
    count = storage.revoke_user_tokens(user_id, at=utcnow())
    audit.write(revoke_all_event(user_id, count, info))
    return count


async def arevoke_user_tokens(
    storage: AuthStorage, audit: AuditWriter, user: Any, request_info: RequestInfo | None
) -> int:
    """Async twin of :func:`revoke_user_tokens`."""
    info = request_info_of(request_info)
    user_id = await aresolve_user_id(user)
    count = await storage.arevoke_user_tokens(user_id, at=utcnow())
    await audit.awrite(revoke_all_event(user_id, count, info))
    return count


def end_user_access(
    user_id: str,
    *,
    action: str,
    delete: bool = False,
    metadata: dict[str, Any] | None = None,
    audit_nothing_done: bool = True,
) -> dict[str, int]:
    """End a user's tokens and sessions in every storage alias of ``AUTHFW["STORAGES"]``.

    Tokens are revoked (kept until they expire, so a replayed refresh token is still recognised)
    or, with ``delete=True`` (the user is being deleted), deleted; sessions are deleted. One
    audit event ``action`` records the counts. Used by the signal receivers when a user is
    deleted, deactivated or changes their password.

    Every alias is tried even if one fails; then :class:`StorageUnavailable` is raised naming
    the failed aliases, so that the caller (the user's save or delete) does not go through
    while tokens may still be live. ``audit_nothing_done=False`` skips the event when nothing
    was ended and nothing failed (the receivers' second pass after the commit).
    """
    now = utcnow()
    counts = {"tokens": 0, "sessions": 0}
    failed: list[str] = []
    for alias in conf.STORAGES:
        try:
            storage = get_storage(alias)
            if delete:
                counts["tokens"] += storage.delete_user_tokens(user_id)
            else:
                counts["tokens"] += storage.revoke_user_tokens(user_id, at=now)
            counts["sessions"] += storage.delete_user_sessions(user_id)
        except Exception as exc:
            logger.error(
                "Could not end the tokens and sessions of user %s in storage %r: %s: %s",
                user_id,
                alias,
                type(exc).__name__,
                exc,
            )
            failed.append(alias)
    if not (audit_nothing_done or failed or any(counts.values())):
        return counts
    AuditWriter().write(access_ended_event(action, user_id, counts, failed, metadata or {}))
    if failed:
        raise StorageUnavailable(
            f"The tokens and sessions of user {user_id} could not be ended in storage(s) "
            f"{', '.join(map(repr, failed))}, so the change was refused; bring the storage back "
            "and retry."
        )
    return counts
