"""Login: the password check between the lockout's count and the issue of a token pair.

The order matters (docs/security.md, "Lockout"): the attempt is counted before the
password is checked, so concurrent guesses cannot overtake the count, and past the threshold an
attempt is refused unchecked (see lockout.py). The token is stored before the user row is read
again, so that either that read or the signal receivers' pass after a password change's commit
sees it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.views.decorators.debug import sensitive_variables

from . import actions, tokens
from .audit import AuditWriter, lockout_event, login_failure_event, unlock_event
from .exceptions import AccountLocked, InvalidCredentials
from .grants import aaudit_grant, audit_grant, client_metadata, mint
from .lockout import Attempt, Lockout
from .passwords import acheck_user_password, check_user_password
from .records import AuditEvent, replace
from .request_info import RequestInfo, request_info_of
from .storage import AuthStorage
from .tokens import IssuedToken
from .users import (
    aget_by_username,
    agrants_of,
    aunchanged_since_check,
    can_authenticate,
    get_by_username,
    grants_of,
    unchanged_since_check,
    user_id_of,
    user_model,
)

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

# One message for every failed login, so a caller cannot tell which accounts exist.
BAD_CREDENTIALS = "Invalid username or password."
# Login failure reason: the password changed (or the user was deactivated) while it was being
# checked. The token is stored before the row is read again, so that either this read or the
# signal receivers' pass after the change's commit sees it (docs/security.md).
_CHANGED = "changed_during_login"


def login_username(username: object) -> str:
    """The username as registration stores it: checked, then normalised.

    The user model's ``normalize_username`` (NFKC for Django's models), as ``create_user``
    applies it: "user" typed in fullwidth letters then finds "user", and both spellings
    share one lockout counter.
    """
    checked = tokens.check_id(username, "username")
    return tokens.check_id(user_model().normalize_username(checked), "username")


def lockout_subjects(username: str | None, ip_address: str | None) -> tuple[str | None, str | None]:
    """``username`` and ``ip_address`` normalised as login normalises them, so that they name
    the counters login uses."""
    if username is not None:
        username = login_username(username)
    if ip_address is not None:
        ip_address = RequestInfo(ip_address=ip_address).ip_address
    return username, ip_address


def _locked_error(retry_after: int) -> AccountLocked:
    return AccountLocked(
        f"Too many failed logins; try again in {retry_after} seconds.", retry_after=retry_after
    )


def _reason(user: AbstractBaseUser | None, correct: bool) -> str | None:
    if user is None:
        return "unknown_user"
    if not correct:
        return "wrong_password"
    if not can_authenticate(user):
        return "inactive"
    return None


def _user_id(user: AbstractBaseUser | None) -> str | None:
    return user_id_of(user) if user is not None else None


def _failure(
    user: AbstractBaseUser | None, username: str, reason: str, info: RequestInfo, **extra: Any
) -> AuditEvent:
    return login_failure_event(_user_id(user), username, reason, info, **extra)


def _refused(
    user: AbstractBaseUser | None, username: str, attempt: Attempt, info: RequestInfo
) -> AuditEvent:
    assert attempt.refused_by is not None
    return _failure(user, username, "locked", info, scope=attempt.refused_by.kind)


@sensitive_variables()  # password, and grant: the issued pair
def authenticate(
    storage: AuthStorage,
    audit: AuditWriter,
    lockout: Lockout,
    username: str,
    password: str,
    request_info: RequestInfo | None,
) -> IssuedToken:
    """:meth:`AuthFramework.authenticate <django_authfw.AuthFramework.authenticate>`."""
    username = login_username(username)
    tokens.check_password(password)
    info = request_info_of(request_info)

    # Counted before the password is checked, so concurrent guesses cannot overtake the
    # count: past the threshold an attempt is refused unchecked (see lockout.py).
    attempt = lockout.admit(username, info.ip_address)
    if attempt.refused_by is not None:
        if lockout.first_refusal(attempt):
            audit.write(_refused(get_by_username(username), username, attempt, info))
        raise _locked_error(attempt.retry_after)

    user = get_by_username(username)
    correct = check_user_password(user, password)
    reason = _reason(user, correct)
    if reason is not None:
        locked = lockout.record_failure(attempt)
        audit.write(_failure(user, username, reason, info))
        for kind in locked:
            audit.write(lockout_event(_user_id(user), username, kind, info))
        raise InvalidCredentials(BAD_CREDENTIALS)

    assert user is not None
    lockout.record_success(attempt)
    permissions, roles = grants_of(user)
    grant = mint(
        user_id_of(user),
        permissions,
        roles,
        family_id=None,  # a new login: the family is named after its first token
        metadata=client_metadata(info),
    )
    storage.store_token(grant.record)
    if not unchanged_since_check(user):
        storage.delete_token(grant.record.token_id)
        audit.write(_failure(user, username, _CHANGED, info))
        raise InvalidCredentials(BAD_CREDENTIALS)
    audit_grant(audit, actions.LOGIN, grant, info, undo=storage.delete_token)
    return grant.issued


@sensitive_variables()
async def aauthenticate(
    storage: AuthStorage,
    audit: AuditWriter,
    lockout: Lockout,
    username: str,
    password: str,
    request_info: RequestInfo | None,
) -> IssuedToken:
    """Async twin of :func:`authenticate`; hashing runs in a worker thread."""
    username = login_username(username)
    tokens.check_password(password)
    info = request_info_of(request_info)

    attempt = await lockout.aadmit(username, info.ip_address)
    if attempt.refused_by is not None:
        if await lockout.afirst_refusal(attempt):
            found = await aget_by_username(username)
            await audit.awrite(_refused(found, username, attempt, info))
        raise _locked_error(attempt.retry_after)

    user = await aget_by_username(username)
    correct = await acheck_user_password(user, password)
    reason = _reason(user, correct)
    if reason is not None:
        locked = await lockout.arecord_failure(attempt)
        await audit.awrite(_failure(user, username, reason, info))
        for kind in locked:
            await audit.awrite(lockout_event(_user_id(user), username, kind, info))
        raise InvalidCredentials(BAD_CREDENTIALS)

    assert user is not None
    await lockout.arecord_success(attempt)
    permissions, roles = await agrants_of(user)
    grant = mint(
        user_id_of(user),
        permissions,
        roles,
        family_id=None,  # a new login: the family is named after its first token
        metadata=client_metadata(info),
    )
    await storage.astore_token(grant.record)
    if not await aunchanged_since_check(user):
        await storage.adelete_token(grant.record.token_id)
        await audit.awrite(_failure(user, username, _CHANGED, info))
        raise InvalidCredentials(BAD_CREDENTIALS)
    await aaudit_grant(audit, actions.LOGIN, grant, info, undo=storage.adelete_token)
    return grant.issued


def unlock(
    lockout: Lockout,
    audit: AuditWriter,
    username: str | None,
    ip_address: str | None,
    info: RequestInfo,
    extra: dict[str, Any] | None,
) -> int:
    """Lift the lockout of a username and/or address; audited as ``unlock``.

    The event names the account (``user_id``) when one has that username, so that a search for
    the user finds it beside the failures and the lockout.
    """
    username, ip_address = lockout_subjects(username, ip_address)
    user = get_by_username(username) if username else None
    # Built first: metadata that cannot be recorded changes nothing.
    event = unlock_event(username, ip_address, 0, info, user_id=_user_id(user), extra=extra)
    removed = lockout.reset(username, ip_address)
    audit.write(replace(event, metadata={**event.metadata, "removed": removed}))
    return removed


async def aunlock(
    lockout: Lockout,
    audit: AuditWriter,
    username: str | None,
    ip_address: str | None,
    info: RequestInfo,
    extra: dict[str, Any] | None,
) -> int:
    """Async twin of :func:`unlock`."""
    username, ip_address = lockout_subjects(username, ip_address)
    user = await aget_by_username(username) if username else None
    event = unlock_event(username, ip_address, 0, info, user_id=_user_id(user), extra=extra)
    removed = await lockout.areset(username, ip_address)
    await audit.awrite(replace(event, metadata={**event.metadata, "removed": removed}))
    return removed
