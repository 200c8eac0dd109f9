"""AuthFramework: registration, login, bearer tokens, rotation, revocation, lockout, audit.

Policy lives here; storages only store. Every public method has an async twin with an ``a``
prefix that uses the storage's async twins and Django's async auth APIs, runs password hashing
in worker threads and user-model writes through ``sync_to_async``.

See docs/security.md for the security model this module implements.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction
from django.views.decorators.debug import sensitive_variables

from . import audit as actions
from . import refresh_grace, tokens
from .audit import AuditWriter, make_event
from .conf import conf
from .exceptions import (
    AccountLocked,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    StorageUnavailable,
    TokenExpired,
    TokenRevoked,
    UserExists,
)
from .lockout import Attempt, Lockout
from .passwords import acheck_user_password, ahash_password, check_user_password
from .records import AuthToken, replace, utcnow
from .request_info import EMPTY, RequestInfo
from .session_api import SessionAPI
from .storage import AuthStorage, get_storage
from .storage.database_errors import database_errors
from .tokens import IssuedToken
from .users import (
    aget_by_username,
    agrants_of,
    aload_active_user,
    aresolve_user_id,
    aunchanged_since_check,
    can_authenticate,
    get_by_username,
    grants_of,
    load_active_user,
    resolve_user_id,
    unchanged_since_check,
    user_id_of,
    user_model,
)

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

__all__ = [
    "BAD_CREDENTIALS",
    "AuthFramework",
    "RequestInfo",
    "end_user_access",
    "validate_new_password",
]

logger = logging.getLogger("django_authfw")

# One message for every failed login, so a caller cannot tell which accounts exist.
BAD_CREDENTIALS = "Invalid username or password."
# Login failure reason: the password changed (or the user was deactivated) while it was being
# checked. The token is stored before the row is read again, so that either this read or the
# signal receivers' pass after the change's commit sees it (docs/security.md).
_CHANGED = "changed_during_login"
_BAD_ACCESS = "The access token is not valid; log in again to get a new one."
_BAD_REFRESH = "The refresh token is not valid; log in again to get a new one."
_REUSED = (
    "This refresh token was already used, so every token of this login has been revoked "
    "as a precaution; log in again."
)


def _request_info(value: object) -> RequestInfo:
    if value is None:
        return EMPTY
    if not isinstance(value, RequestInfo):
        raise InvalidInput(
            "request_info must be a RequestInfo (RequestInfo.from_request(request))."
        )
    return value


def _same(stored: str | None, presented: str) -> bool:
    # The lookup already matched the digest; comparing again in constant time guards against a
    # storage that matched loosely (collation, prefix index) without leaking timing.
    return stored is not None and hmac.compare_digest(stored, presented)


def _check_access(record: AuthToken | None, presented: str) -> AuthToken:
    if record is None or not _same(record.access_digest, presented):
        raise InvalidToken(_BAD_ACCESS)
    if record.is_revoked:
        raise TokenRevoked("The access token was revoked; log in again.")
    if record.is_expired():
        raise TokenExpired("The access token has expired; refresh it or log in again.")
    return record


def _refresh_digest(refresh_token: object) -> str:
    return tokens.digest(tokens.check_token_format(refresh_token, tokens.REFRESH_PREFIX))


def _split_token(token: object) -> tuple[str, str] | None:
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


@dataclass(frozen=True, slots=True)
class _Grant:
    """A freshly minted token pair: what the client gets and what the storage keeps."""

    issued: IssuedToken
    record: AuthToken


@sensitive_variables()  # the raw tokens
def _mint(
    user_id: str,
    permissions: list[str],
    roles: list[str],
    *,
    family_id: str,
    metadata: dict[str, Any],
) -> _Grant:
    now = utcnow()
    access = tokens.new_secret(tokens.ACCESS_PREFIX)
    refresh = tokens.new_secret(tokens.REFRESH_PREFIX)
    record = AuthToken(
        token_id=tokens.new_id(),
        user_id=user_id,
        access_digest=tokens.digest(access),
        expires_at=now + conf.ACCESS_TOKEN_TTL,
        refresh_digest=tokens.digest(refresh),
        refresh_expires_at=now + conf.REFRESH_TOKEN_TTL,
        family_id=family_id,
        created_at=now,
        updated_at=now,
        permissions=list(permissions),
        roles=list(roles),
        metadata=metadata,
    )
    return _Grant(_issued(record, access, refresh), record)


@sensitive_variables()  # the raw tokens
def _issued(record: AuthToken, access: str, refresh: str | None) -> IssuedToken:
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
    )


def _client_metadata(info: RequestInfo) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if info.ip_address:
        meta["ip_address"] = info.ip_address
    if info.user_agent:
        meta["user_agent"] = info.user_agent
    return meta


def _locked_error(retry_after: int) -> AccountLocked:
    return AccountLocked(
        f"Too many failed logins; try again in {retry_after} seconds.", retry_after=retry_after
    )


def _introspection(record: AuthToken, kind: str, username: str) -> dict[str, Any]:
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


def _is_active(record: AuthToken, kind: str) -> bool:
    if record.is_revoked:
        return False
    if kind == "access":
        return not record.is_expired()
    return record.refresh_expires_at is not None and utcnow() < record.refresh_expires_at


def _wants_validation(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("password_validation must be True or False.")
    return value


@sensitive_variables("password")
def validate_new_password(
    password: str, username: str, extra_fields: Mapping[str, Any] | None = None
) -> None:
    """Run the project's ``AUTH_PASSWORD_VALIDATORS`` on a new account's password.

    The validators see an unsaved user with the username and ``extra_fields`` (so that
    ``UserAttributeSimilarityValidator`` compares with them, as in ``UserCreationForm``).
    Raises :class:`InvalidInput` with ``"password: "`` and the validators' messages. Used by
    :meth:`AuthFramework.register_user` and so by the ``register/`` endpoint.
    """
    model: Any = user_model()  # USERNAME_FIELD is on concrete user models only
    name = model.normalize_username(username)
    try:
        candidate = model(**{model.USERNAME_FIELD: name, **(extra_fields or {})})
    except (TypeError, ValueError):  # a field the constructor refuses: create_user reports it
        candidate = model(**{model.USERNAME_FIELD: name})
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise InvalidInput("password: " + " ".join(exc.messages)) from None


class AuthFramework(SessionAPI):
    """The auth API over one storage alias (or instance).

    ``AuthFramework()`` uses the ``"default"`` alias of ``AUTHFW["STORAGES"]``;
    ``AuthFramework(storage="redis")`` another alias; ``AuthFramework(storage=instance)`` a
    storage built in code. Audit events go to ``audit_storage`` if given, else to the
    ``AUTHFW["AUDIT_STORAGE"]`` alias, else to the database audit table.
    """

    storage: AuthStorage

    def __init__(
        self,
        storage: str | AuthStorage = "default",
        *,
        audit_storage: str | AuthStorage | None = None,
    ) -> None:
        if isinstance(storage, AuthStorage):
            self.storage = storage
        elif isinstance(storage, str):
            self.storage = get_storage(storage)
        else:
            raise InvalidInput("storage must be an alias of AUTHFW['STORAGES'] or an AuthStorage.")
        if audit_storage is not None and not isinstance(audit_storage, str | AuthStorage):
            raise InvalidInput("audit_storage must be an alias, an AuthStorage or None.")
        self._audit = AuditWriter(audit_storage)
        self._lockout = Lockout(lambda: self.storage)

    def __repr__(self) -> str:
        return f"<AuthFramework storage={self.storage!r}>"

    # Audit ------------------------------------------------------------------------------------

    def audit(
        self,
        action: str,
        outcome: bool,
        *,
        user_id: str | None = None,
        request_info: RequestInfo | None = None,
        resource: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record an audit event (no-op when ``AUTHFW["ENABLE_AUDIT_LOG"]`` is False).

        Raises :class:`StorageUnavailable` if the audit storage cannot take it.
        """
        self._audit.write(
            make_event(
                action,
                outcome,
                user_id=user_id,
                request_info=_request_info(request_info),
                resource=resource,
                metadata=metadata,
            )
        )

    async def aaudit(
        self,
        action: str,
        outcome: bool,
        *,
        user_id: str | None = None,
        request_info: RequestInfo | None = None,
        resource: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Async twin of :meth:`audit`."""
        await self._audit.awrite(
            make_event(
                action,
                outcome,
                user_id=user_id,
                request_info=_request_info(request_info),
                resource=resource,
                metadata=metadata,
            )
        )

    # Registration -----------------------------------------------------------------------------

    def _create_user(
        self,
        username: str,
        encoded: str,
        extra_fields: dict[str, Any],
        info: RequestInfo,
    ) -> AbstractBaseUser:
        """Create the user with the hash ``encoded`` and write the audit event in one transaction.

        The password was hashed before this is called, so that no writer holds the database's
        write lock while a slow hasher runs (on SQLite every other writer would wait for it, or
        fail with "database is locked").
        """
        model = user_model()
        manager: Any = model._default_manager
        normalized = model.normalize_username(username)
        alias = router.db_for_write(model)
        with database_errors(alias):
            try:
                with transaction.atomic(using=alias):
                    if get_by_username(normalized) is not None:
                        raise UserExists(
                            f"A user named {normalized!r} already exists; choose another username."
                        )
                    try:
                        # password=None: the manager stores an unusable password, at no hashing
                        # cost; the real hash is set just below, in the same transaction.
                        user = manager.create_user(username, password=None, **extra_fields)
                    except (TypeError, ValueError) as exc:
                        raise InvalidInput(f"The user could not be created: {exc}") from None
                    # An UPDATE rather than save(): it sends no pre_save signal, so a new
                    # account's first password is never taken for a password change.
                    model._base_manager.using(user._state.db).filter(pk=user.pk).update(
                        password=encoded
                    )
                    user.password = encoded
                    self._audit.write(
                        make_event(
                            actions.REGISTER, True, user_id=user_id_of(user), request_info=info
                        )
                    )
            except IntegrityError:
                raise UserExists(
                    f"A user named {normalized!r} (or with the same unique fields) already "
                    "exists; choose another username."
                ) from None
        return user

    @sensitive_variables("password", "encoded")
    def register_user(
        self,
        username: str,
        password: str,
        *,
        request_info: RequestInfo | None = None,
        password_validation: bool = True,
        **extra_fields: Any,
    ) -> AbstractBaseUser:
        """Create a user with the user model manager's ``create_user``; audited as ``register``.

        The username and password are checked before any hashing (:class:`InvalidInput`): the
        framework's limits, then, unless ``password_validation=False``, the project's
        ``AUTH_PASSWORD_VALIDATORS`` (as the ``register/`` endpoint and Django's
        ``UserCreationForm`` do). A taken username raises :class:`UserExists`; a database that
        is locked or down raises :class:`StorageUnavailable`. Nothing is written when any of
        these happens. ``extra_fields`` go to ``create_user``.
        """
        username = tokens.check_id(username, "username")
        tokens.check_password(password)
        info = _request_info(request_info)
        if _wants_validation(password_validation):
            validate_new_password(password, username, extra_fields)
        encoded = make_password(password)
        return self._create_user(username, encoded, extra_fields, info)

    @sensitive_variables("password", "encoded")
    async def aregister_user(
        self,
        username: str,
        password: str,
        *,
        request_info: RequestInfo | None = None,
        password_validation: bool = True,
        **extra_fields: Any,
    ) -> AbstractBaseUser:
        """Async twin of :meth:`register_user`; the password is hashed in a worker thread."""
        username = tokens.check_id(username, "username")
        tokens.check_password(password)
        info = _request_info(request_info)
        if _wants_validation(password_validation):
            # Validators may query the database (a password history): not on the event loop.
            await sync_to_async(validate_new_password)(password, username, extra_fields)
        encoded = await ahash_password(password)
        # The user row and its audit event share one transaction, which must stay on one
        # thread: hence one sync_to_async call for both.
        return await sync_to_async(self._create_user)(username, encoded, extra_fields, info)

    # Login ------------------------------------------------------------------------------------

    @staticmethod
    def _login_username(username: object) -> str:
        """The username as registration stores it: checked, then normalised.

        The user model's ``normalize_username`` (NFKC for Django's models), as ``create_user``
        applies it: "user" typed in fullwidth letters then finds "user", and both spellings
        share one lockout counter.
        """
        checked = tokens.check_id(username, "username")
        return tokens.check_id(user_model().normalize_username(checked), "username")

    def _failure_event(
        self,
        user: AbstractBaseUser | None,
        username: str,
        reason: str,
        info: RequestInfo,
        **extra: Any,
    ) -> Any:
        return make_event(
            actions.LOGIN,
            False,
            user_id=user_id_of(user) if user is not None else None,
            request_info=info,
            metadata={"username": username, "reason": reason, **extra},
        )

    @staticmethod
    def _lockout_event(
        user: AbstractBaseUser | None, username: str, kind: str, info: RequestInfo
    ) -> Any:
        # The user id (when the account exists) lets the admin's username search find it.
        return make_event(
            actions.LOCKOUT,
            False,
            user_id=user_id_of(user) if user is not None else None,
            request_info=info,
            metadata={
                "username": username,
                "scope": kind,
                "window": conf.LOCKOUT_WINDOW.total_seconds(),
            },
        )

    def _refused_event(self, username: str, attempt: Attempt, info: RequestInfo) -> Any:
        assert attempt.refused_by is not None
        return self._failure_event(
            get_by_username(username), username, "locked", info, scope=attempt.refused_by.kind
        )

    async def _arefused_event(self, username: str, attempt: Attempt, info: RequestInfo) -> Any:
        assert attempt.refused_by is not None
        return self._failure_event(
            await aget_by_username(username),
            username,
            "locked",
            info,
            scope=attempt.refused_by.kind,
        )

    @staticmethod
    def _reason(user: AbstractBaseUser | None, correct: bool) -> str | None:
        if user is None:
            return "unknown_user"
        if not correct:
            return "wrong_password"
        if not can_authenticate(user):
            return "inactive"
        return None

    @sensitive_variables()  # password, and grant: the issued pair
    def authenticate(
        self, username: str, password: str, *, request_info: RequestInfo | None = None
    ) -> IssuedToken:
        """Check the password and issue a token pair (``access_token``, ``refresh_token``).

        The username is normalised as registration normalises it (the user model's
        ``normalize_username``). Raises :class:`InvalidInput` for malformed input (nothing
        written, nothing hashed), :class:`AccountLocked` while the username or address is
        locked out or past its threshold (nothing hashed), and :class:`InvalidCredentials` (one
        message for every reason) otherwise. Successes and failures are audited as ``login``;
        refusals while locked at most once a minute per locked subject; an audit failure
        refuses the login.
        """
        username = self._login_username(username)
        tokens.check_password(password)
        info = _request_info(request_info)

        # Counted before the password is checked, so concurrent guesses cannot overtake the
        # count: past the threshold an attempt is refused unchecked (see lockout.py).
        attempt = self._lockout.admit(username, info.ip_address)
        if attempt.refused_by is not None:
            if self._lockout.first_refusal(attempt):
                self._audit.write(self._refused_event(username, attempt, info))
            raise _locked_error(attempt.retry_after)

        user = get_by_username(username)
        correct = check_user_password(user, password)
        reason = self._reason(user, correct)
        if reason is not None:
            locked = self._lockout.record_failure(attempt)
            self._audit.write(self._failure_event(user, username, reason, info))
            for kind in locked:
                self._audit.write(self._lockout_event(user, username, kind, info))
            raise InvalidCredentials(BAD_CREDENTIALS)

        assert user is not None
        self._lockout.record_success(attempt)
        permissions, roles = grants_of(user)
        grant = _mint(
            user_id_of(user),
            permissions,
            roles,
            family_id=tokens.new_id(),
            metadata=_client_metadata(info),
        )
        self.storage.store_token(grant.record)
        if not unchanged_since_check(user):
            self.storage.delete_token(grant.record.token_id)
            self._audit.write(self._failure_event(user, username, _CHANGED, info))
            raise InvalidCredentials(BAD_CREDENTIALS)
        self._audit_grant(actions.LOGIN, grant, info, undo=self.storage.delete_token)
        return grant.issued

    @sensitive_variables()
    async def aauthenticate(
        self, username: str, password: str, *, request_info: RequestInfo | None = None
    ) -> IssuedToken:
        """Async twin of :meth:`authenticate`; hashing runs in a worker thread."""
        username = self._login_username(username)
        tokens.check_password(password)
        info = _request_info(request_info)

        attempt = await self._lockout.aadmit(username, info.ip_address)
        if attempt.refused_by is not None:
            if await self._lockout.afirst_refusal(attempt):
                await self._audit.awrite(await self._arefused_event(username, attempt, info))
            raise _locked_error(attempt.retry_after)

        user = await aget_by_username(username)
        correct = await acheck_user_password(user, password)
        reason = self._reason(user, correct)
        if reason is not None:
            locked = await self._lockout.arecord_failure(attempt)
            await self._audit.awrite(self._failure_event(user, username, reason, info))
            for kind in locked:
                await self._audit.awrite(self._lockout_event(user, username, kind, info))
            raise InvalidCredentials(BAD_CREDENTIALS)

        assert user is not None
        await self._lockout.arecord_success(attempt)
        permissions, roles = await agrants_of(user)
        grant = _mint(
            user_id_of(user),
            permissions,
            roles,
            family_id=tokens.new_id(),
            metadata=_client_metadata(info),
        )
        await self.storage.astore_token(grant.record)
        if not await aunchanged_since_check(user):
            await self.storage.adelete_token(grant.record.token_id)
            await self._audit.awrite(self._failure_event(user, username, _CHANGED, info))
            raise InvalidCredentials(BAD_CREDENTIALS)
        await self._aaudit_grant(actions.LOGIN, grant, info, undo=self.storage.adelete_token)
        return grant.issued

    def _grant_event(
        self, action: str, grant: _Grant, info: RequestInfo, extra: dict[str, Any] | None = None
    ) -> Any:
        return make_event(
            action,
            True,
            user_id=grant.record.user_id,
            request_info=info,
            metadata={
                "token_id": grant.record.token_id,
                "family_id": grant.record.family_id,
                **(extra or {}),
            },
        )

    def _audit_grant(
        self,
        action: str,
        grant: _Grant,
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
            self._audit.write(self._grant_event(action, grant, info, extra))
        except StorageUnavailable:
            try:
                undo(grant.record.token_id)
            except Exception:
                logger.exception("Could not delete unaudited token %s", grant.record.token_id)
            raise

    async def _aaudit_grant(
        self,
        action: str,
        grant: _Grant,
        info: RequestInfo,
        *,
        undo: Callable[[str], Any],
        extra: dict[str, Any] | None = None,
    ) -> None:
        try:
            await self._audit.awrite(self._grant_event(action, grant, info, extra))
        except StorageUnavailable:
            try:
                await undo(grant.record.token_id)
            except Exception:
                logger.exception("Could not delete unaudited token %s", grant.record.token_id)
            raise

    # Verification -----------------------------------------------------------------------------

    def verify_token(self, access_token: str) -> AuthToken:
        """Return the stored record of a valid access token; one storage read, no write.

        Raises :class:`InvalidToken` (malformed or unknown), :class:`TokenRevoked` or
        :class:`TokenExpired`. The user is not loaded: see :meth:`get_user`.
        """
        presented = tokens.digest(tokens.check_token_format(access_token, tokens.ACCESS_PREFIX))
        return _check_access(self.storage.get_token_by_access(presented), presented)

    async def averify_token(self, access_token: str) -> AuthToken:
        """Async twin of :meth:`verify_token`."""
        presented = tokens.digest(tokens.check_token_format(access_token, tokens.ACCESS_PREFIX))
        return _check_access(await self.storage.aget_token_by_access(presented), presented)

    def get_user(self, record: AuthToken) -> AbstractBaseUser | None:
        """The user a token belongs to, or None if deleted or inactive."""
        return load_active_user(record.user_id)

    async def aget_user(self, record: AuthToken) -> AbstractBaseUser | None:
        """Async twin of :meth:`get_user`."""
        return await aload_active_user(record.user_id)

    # Refresh ----------------------------------------------------------------------------------

    def _refresh_failure(self, record: AuthToken, reason: str, info: RequestInfo) -> Any:
        return make_event(
            actions.REFRESH,
            False,
            user_id=record.user_id,
            request_info=info,
            metadata={"token_id": record.token_id, "reason": reason},
        )

    def _reuse_event(self, record: AuthToken, revoked: int, info: RequestInfo) -> Any:
        return make_event(
            actions.REFRESH_REUSE,
            False,
            user_id=record.user_id,
            request_info=info,
            metadata={
                "token_id": record.token_id,
                "family_id": record.family_id,
                "replaced_by": record.replaced_by,
                "revoked": revoked,
            },
        )

    def _reuse(self, record: AuthToken, info: RequestInfo) -> TokenRevoked:
        """A rotated refresh token came back: revoke its family, audit, return the error."""
        revoked = self.storage.revoke_user_tokens(
            record.user_id, at=utcnow(), family_id=record.family_id or None
        )
        self._audit.write(self._reuse_event(record, revoked, info))
        return TokenRevoked(_REUSED)

    async def _areuse(self, record: AuthToken, info: RequestInfo) -> TokenRevoked:
        revoked = await self.storage.arevoke_user_tokens(
            record.user_id, at=utcnow(), family_id=record.family_id or None
        )
        await self._audit.awrite(self._reuse_event(record, revoked, info))
        return TokenRevoked(_REUSED)

    def _refusal(self, record: AuthToken) -> tuple[str, InvalidToken] | None:
        """Why a found refresh token cannot be used (reuse is handled by the caller)."""
        if record.is_revoked:
            return "revoked", TokenRevoked("The refresh token was revoked; log in again.")
        if record.refresh_expires_at is None or utcnow() >= record.refresh_expires_at:
            return "expired", TokenExpired("The refresh token has expired; log in again.")
        return None

    def _user_grants(self, record: AuthToken, info: RequestInfo) -> tuple[list[str], list[str]]:
        """The permissions and roles of ``record``'s user, read afresh; a user who is gone or
        cannot log in has ``record`` revoked and gets :class:`InvalidToken`."""
        user = load_active_user(record.user_id)
        if user is None:
            self.storage.revoke_token(record.token_id, at=utcnow())
            self._audit.write(self._refresh_failure(record, "inactive_user", info))
            raise InvalidToken("The token's user no longer exists or cannot log in; log in again.")
        return grants_of(user)

    async def _auser_grants(
        self, record: AuthToken, info: RequestInfo
    ) -> tuple[list[str], list[str]]:
        user = await aload_active_user(record.user_id)
        if user is None:
            await self.storage.arevoke_token(record.token_id, at=utcnow())
            await self._audit.awrite(self._refresh_failure(record, "inactive_user", info))
            raise InvalidToken("The token's user no longer exists or cannot log in; log in again.")
        return await agrants_of(user)

    @sensitive_variables()  # the presented and issued tokens
    def refresh(
        self, refresh_token: str, *, request_info: RequestInfo | None = None
    ) -> IssuedToken:
        """Exchange a refresh token for a new token pair.

        With ``ROTATE_REFRESH_TOKENS`` (the default) the old pair is revoked and the new one
        keeps its ``family_id``; presenting a rotated refresh token again revokes the whole
        family, is audited as ``refresh_reuse`` and raises :class:`TokenRevoked`. With
        ``REFRESH_REUSE_GRACE`` set, a replay within that many seconds of the rotation gets a
        new pair of the same family instead, audited as ``refresh_grace`` (see
        :mod:`django_authfw.refresh_grace`). Permissions and roles are read afresh from the user.
        """
        presented = _refresh_digest(refresh_token)
        info = _request_info(request_info)
        record = self.storage.get_token_by_refresh(presented)
        if record is None or not _same(record.refresh_digest, presented):
            raise InvalidToken(_BAD_REFRESH)
        if record.is_revoked and record.replaced_by is not None:
            return self._grace_or_reuse(record, info)
        refusal = self._refusal(record)
        if refusal is not None:
            self._audit.write(self._refresh_failure(record, refusal[0], info))
            raise refusal[1]
        permissions, roles = self._user_grants(record, info)

        if not conf.ROTATE_REFRESH_TOKENS:
            return self._refresh_in_place(record, refresh_token, permissions, roles, info)

        grant = _mint(
            record.user_id,
            permissions,
            roles,
            family_id=record.family_id or record.token_id,
            metadata={
                **refresh_grace.rotated_metadata(record.metadata),
                **_client_metadata(info),
                "parent_id": record.token_id,
            },
        )
        self.storage.store_token(grant.record)
        # The storage's atomic revoke picks the single winner among concurrent refreshes.
        if not self.storage.revoke_token(
            record.token_id, at=utcnow(), replaced_by=grant.record.token_id
        ):
            self.storage.delete_token(grant.record.token_id)
            current = self.storage.get_token(record.token_id) or record
            if current.replaced_by is not None:
                return self._grace_or_reuse(current, info)
            self._audit.write(self._refresh_failure(record, "revoked", info))
            raise TokenRevoked("The refresh token was revoked; log in again.")
        self._audit_grant(actions.REFRESH, grant, info, undo=self.storage.delete_token)
        return grant.issued

    @sensitive_variables()  # the presented and issued tokens
    async def arefresh(
        self, refresh_token: str, *, request_info: RequestInfo | None = None
    ) -> IssuedToken:
        """Async twin of :meth:`refresh`."""
        presented = _refresh_digest(refresh_token)
        info = _request_info(request_info)
        record = await self.storage.aget_token_by_refresh(presented)
        if record is None or not _same(record.refresh_digest, presented):
            raise InvalidToken(_BAD_REFRESH)
        if record.is_revoked and record.replaced_by is not None:
            return await self._agrace_or_reuse(record, info)
        refusal = self._refusal(record)
        if refusal is not None:
            await self._audit.awrite(self._refresh_failure(record, refusal[0], info))
            raise refusal[1]
        permissions, roles = await self._auser_grants(record, info)

        if not conf.ROTATE_REFRESH_TOKENS:
            return await self._arefresh_in_place(record, refresh_token, permissions, roles, info)

        grant = _mint(
            record.user_id,
            permissions,
            roles,
            family_id=record.family_id or record.token_id,
            metadata={
                **refresh_grace.rotated_metadata(record.metadata),
                **_client_metadata(info),
                "parent_id": record.token_id,
            },
        )
        await self.storage.astore_token(grant.record)
        if not await self.storage.arevoke_token(
            record.token_id, at=utcnow(), replaced_by=grant.record.token_id
        ):
            await self.storage.adelete_token(grant.record.token_id)
            current = await self.storage.aget_token(record.token_id) or record
            if current.replaced_by is not None:
                return await self._agrace_or_reuse(current, info)
            await self._audit.awrite(self._refresh_failure(record, "revoked", info))
            raise TokenRevoked("The refresh token was revoked; log in again.")
        await self._aaudit_grant(actions.REFRESH, grant, info, undo=self.storage.adelete_token)
        return grant.issued

    # Refresh-reuse grace (AUTHFW["REFRESH_REUSE_GRACE"]; rules in refresh_grace.py) -----------

    def _grace_head(self, record: AuthToken) -> tuple[AuthToken, datetime] | None:
        """The live token a grace reissue for the rotated ``record`` replaces, and the time of
        the rotation its window counts from; None when the replay is plain reuse."""
        grace = conf.REFRESH_REUSE_GRACE
        if grace <= timedelta(0) or record.replaced_by is None:
            return None
        head = self.storage.get_token(record.replaced_by)
        if head is None:
            return None
        origin = refresh_grace.origin_of(record, head)
        now = utcnow()
        if not refresh_grace.in_window(origin, now, grace):
            return None
        assert origin is not None  # in_window checked it
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
        grace = conf.REFRESH_REUSE_GRACE
        if grace <= timedelta(0) or record.replaced_by is None:
            return None
        head = await self.storage.aget_token(record.replaced_by)
        if head is None:
            return None
        origin = refresh_grace.origin_of(record, head)
        now = utcnow()
        if not refresh_grace.in_window(origin, now, grace):
            return None
        assert origin is not None
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

    def _reissue(
        self,
        record: AuthToken,
        head: AuthToken,
        origin: datetime,
        permissions: list[str],
        roles: list[str],
        info: RequestInfo,
    ) -> _Grant:
        return _mint(
            head.user_id,
            permissions,
            roles,
            family_id=head.family_id or head.token_id,
            metadata=refresh_grace.reissued_metadata(
                head, _client_metadata(info), presented=record, origin=origin
            ),
        )

    @staticmethod
    def _grace_extra(record: AuthToken, head: AuthToken, origin: datetime) -> dict[str, Any]:
        return {
            "presented": record.token_id,
            "replaced": head.token_id,
            "rotated_at": origin.isoformat(),
        }

    def _grace_or_reuse(self, record: AuthToken, info: RequestInfo) -> IssuedToken:
        """A rotated refresh token came back: a new pair within the grace, else reuse."""
        # One more round than reissues allowed: a round is lost only to another reissue.
        for _ in range(refresh_grace.MAX_REISSUES + 1):
            found = self._grace_head(record)
            if found is None:
                break
            head, origin = found
            permissions, roles = self._user_grants(head, info)
            grant = self._reissue(record, head, origin, permissions, roles, info)
            self.storage.store_token(grant.record)
            # The same atomic revoke as a rotation: one winner among concurrent replays.
            if self.storage.revoke_token(
                head.token_id, at=utcnow(), replaced_by=grant.record.token_id
            ):
                self._audit_grant(
                    actions.REFRESH_GRACE,
                    grant,
                    info,
                    undo=self.storage.delete_token,
                    extra=self._grace_extra(record, head, origin),
                )
                return grant.issued
            self.storage.delete_token(grant.record.token_id)
        raise self._reuse(record, info)

    async def _agrace_or_reuse(self, record: AuthToken, info: RequestInfo) -> IssuedToken:
        for _ in range(refresh_grace.MAX_REISSUES + 1):
            found = await self._agrace_head(record)
            if found is None:
                break
            head, origin = found
            permissions, roles = await self._auser_grants(head, info)
            grant = self._reissue(record, head, origin, permissions, roles, info)
            await self.storage.astore_token(grant.record)
            if await self.storage.arevoke_token(
                head.token_id, at=utcnow(), replaced_by=grant.record.token_id
            ):
                await self._aaudit_grant(
                    actions.REFRESH_GRACE,
                    grant,
                    info,
                    undo=self.storage.adelete_token,
                    extra=self._grace_extra(record, head, origin),
                )
                return grant.issued
            await self.storage.adelete_token(grant.record.token_id)
        raise await self._areuse(record, info)

    @staticmethod
    def _in_place(
        record: AuthToken, permissions: list[str], roles: list[str]
    ) -> tuple[str, AuthToken]:
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

    @sensitive_variables()
    def _refresh_in_place(
        self,
        record: AuthToken,
        refresh_token: str,
        permissions: list[str],
        roles: list[str],
        info: RequestInfo,
    ) -> IssuedToken:
        """Without rotation: a new access token on the same record and refresh token."""
        access, updated = self._in_place(record, permissions, roles)
        if not self.storage.update_token(updated):
            raise InvalidToken(_BAD_REFRESH)
        grant = _Grant(_issued(updated, access, refresh_token), updated)
        self._audit_grant(
            actions.REFRESH, grant, info, undo=lambda _id: self.storage.update_token(record)
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
        access, updated = self._in_place(record, permissions, roles)
        if not await self.storage.aupdate_token(updated):
            raise InvalidToken(_BAD_REFRESH)
        grant = _Grant(_issued(updated, access, refresh_token), updated)

        async def undo(_id: str) -> bool:
            return await self.storage.aupdate_token(record)

        await self._aaudit_grant(actions.REFRESH, grant, info, undo=undo)
        return grant.issued

    # Revocation -------------------------------------------------------------------------------

    def _revoke_event(self, record: AuthToken, kind: str, count: int, info: RequestInfo) -> Any:
        return make_event(
            actions.REVOKE,
            True,
            user_id=record.user_id,
            request_info=info,
            metadata={
                "token_id": record.token_id,
                "token_type_hint": f"{kind}_token",
                "count": count,
            },
        )

    @sensitive_variables()
    def revoke_token(self, token: str, *, request_info: RequestInfo | None = None) -> bool:
        """Revoke an access token (its pair) or a refresh token (its whole family).

        As RFC 7009 asks, an unknown or malformed token is not an error: the result is False.
        True means something was revoked now; audited as ``revoke``.
        """
        info = _request_info(request_info)
        split = _split_token(token)
        if split is None:
            return False
        kind, presented = split
        if kind == "access":
            record = self.storage.get_token_by_access(presented)
            if record is None or not _same(record.access_digest, presented):
                return False
            count = int(self.storage.revoke_token(record.token_id, at=utcnow()))
        else:
            record = self.storage.get_token_by_refresh(presented)
            if record is None or not _same(record.refresh_digest, presented):
                return False
            count = self._revoke_grant(record)
        if count:
            self._audit.write(self._revoke_event(record, kind, count, info))
        return count > 0

    def _revoke_grant(self, record: AuthToken) -> int:
        if record.family_id:
            return self.storage.revoke_user_tokens(
                record.user_id, at=utcnow(), family_id=record.family_id
            )
        return int(self.storage.revoke_token(record.token_id, at=utcnow()))

    @sensitive_variables()
    async def arevoke_token(self, token: str, *, request_info: RequestInfo | None = None) -> bool:
        """Async twin of :meth:`revoke_token`."""
        info = _request_info(request_info)
        split = _split_token(token)
        if split is None:
            return False
        kind, presented = split
        if kind == "access":
            record = await self.storage.aget_token_by_access(presented)
            if record is None or not _same(record.access_digest, presented):
                return False
            count = int(await self.storage.arevoke_token(record.token_id, at=utcnow()))
        else:
            record = await self.storage.aget_token_by_refresh(presented)
            if record is None or not _same(record.refresh_digest, presented):
                return False
            if record.family_id:
                count = await self.storage.arevoke_user_tokens(
                    record.user_id, at=utcnow(), family_id=record.family_id
                )
            else:
                count = int(await self.storage.arevoke_token(record.token_id, at=utcnow()))
        if count:
            await self._audit.awrite(self._revoke_event(record, kind, count, info))
        return count > 0

    def revoke_user_tokens(self, user: Any, *, request_info: RequestInfo | None = None) -> int:
        """Revoke every token of a user (username or instance); return how many.

        Audited as ``revoke_all``.
        """
        info = _request_info(request_info)
        user_id = resolve_user_id(user)
        count = self.storage.revoke_user_tokens(user_id, at=utcnow())
        self._audit.write(
            make_event(
                actions.REVOKE_ALL,
                True,
                user_id=user_id,
                request_info=info,
                metadata={"count": count},
            )
        )
        return count

    async def arevoke_user_tokens(
        self, user: Any, *, request_info: RequestInfo | None = None
    ) -> int:
        """Async twin of :meth:`revoke_user_tokens`."""
        info = _request_info(request_info)
        user_id = await aresolve_user_id(user)
        count = await self.storage.arevoke_user_tokens(user_id, at=utcnow())
        await self._audit.awrite(
            make_event(
                actions.REVOKE_ALL,
                True,
                user_id=user_id,
                request_info=info,
                metadata={"count": count},
            )
        )
        return count

    # Introspection ----------------------------------------------------------------------------

    @sensitive_variables()
    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection of an access or refresh token.

        ``{"active": False}`` and nothing else for a token that is unknown, malformed, expired,
        revoked, or whose user is gone or inactive; otherwise ``active``, ``scope`` (the
        permissions, space-separated), ``username``, ``token_type``, ``exp``, ``iat``, ``sub``
        (the user id) and ``jti`` (the token id).
        """
        if not isinstance(token, str):
            return {"active": False}
        split = _split_token(token)
        if split is None:
            return {"active": False}
        kind, presented = split
        if kind == "access":
            record = self.storage.get_token_by_access(presented)
            stored = record.access_digest if record else None
        else:
            record = self.storage.get_token_by_refresh(presented)
            stored = record.refresh_digest if record else None
        if record is None or not _same(stored, presented) or not _is_active(record, kind):
            return {"active": False}
        user = load_active_user(record.user_id)
        if user is None:
            return {"active": False}
        return _introspection(record, kind, user.get_username())

    @sensitive_variables()
    async def aintrospect(self, token: str) -> dict[str, Any]:
        """Async twin of :meth:`introspect`."""
        if not isinstance(token, str):
            return {"active": False}
        split = _split_token(token)
        if split is None:
            return {"active": False}
        kind, presented = split
        if kind == "access":
            record = await self.storage.aget_token_by_access(presented)
            stored = record.access_digest if record else None
        else:
            record = await self.storage.aget_token_by_refresh(presented)
            stored = record.refresh_digest if record else None
        if record is None or not _same(stored, presented) or not _is_active(record, kind):
            return {"active": False}
        user = await aload_active_user(record.user_id)
        if user is None:
            return {"active": False}
        return _introspection(record, kind, user.get_username())

    # Lockout ----------------------------------------------------------------------------------

    @classmethod
    def _lockout_subjects(
        cls, username: str | None, ip_address: str | None
    ) -> tuple[str | None, str | None]:
        # Normalised as login normalises them, so that they name the counters login uses.
        if username is not None:
            username = cls._login_username(username)
        if ip_address is not None:
            ip_address = RequestInfo(ip_address=ip_address).ip_address
        return username, ip_address

    def lockout_remaining(self, username: str | None, ip_address: str | None) -> int:
        """Seconds until a login for ``username`` from ``ip_address`` is allowed; 0 = now."""
        return self._lockout.remaining(*self._lockout_subjects(username, ip_address))

    async def alockout_remaining(self, username: str | None, ip_address: str | None) -> int:
        """Async twin of :meth:`lockout_remaining`."""
        return await self._lockout.aremaining(*self._lockout_subjects(username, ip_address))

    def reset_lockout(self, *, username: str | None = None, ip_address: str | None = None) -> int:
        """Forget failures and locks of a username and/or address; return entries removed."""
        if username is None and ip_address is None:
            raise InvalidInput("reset_lockout needs a username, an ip_address, or both.")
        return self._lockout.reset(*self._lockout_subjects(username, ip_address))

    async def areset_lockout(
        self, *, username: str | None = None, ip_address: str | None = None
    ) -> int:
        """Async twin of :meth:`reset_lockout`."""
        if username is None and ip_address is None:
            raise InvalidInput("reset_lockout needs a username, an ip_address, or both.")
        return await self._lockout.areset(*self._lockout_subjects(username, ip_address))


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
    event_metadata = {**(metadata or {}), **counts}
    if failed:
        event_metadata["failed_storages"] = failed
    AuditWriter().write(make_event(action, not failed, user_id=user_id, metadata=event_metadata))
    if failed:
        raise StorageUnavailable(
            f"The tokens and sessions of user {user_id} could not be ended in storage(s) "
            f"{', '.join(map(repr, failed))}, so the change was refused; bring the storage back "
            "and retry."
        )
    return counts
