"""AuthFramework: the one facade over registration, login, tokens, revocation, lockout, audit.

Policy lives in the framework's modules, never in a storage; storages only store. Each public
method here is a short delegation to the module that holds its policy:

- :mod:`~django_authfw.registration`: ``register_user``, ``validate_new_password``;
- :mod:`~django_authfw.login`: ``authenticate`` and the lockout's subjects;
- :mod:`~django_authfw.rotation`: ``refresh``, rotation, reuse detection and the grace
  (rules in :mod:`~django_authfw.refresh_grace`);
- :mod:`~django_authfw.access`: ``revoke_token``, ``revoke_user_tokens`` and, across every
  storage alias, ``end_user_access``;
- :mod:`~django_authfw.introspection`: ``introspect``;
- :mod:`~django_authfw.grants`: minting and auditing token pairs; :mod:`~django_authfw.audit`:
  the events; :mod:`~django_authfw.session_api`: sessions and the key-value store.

``verify_token``, the hot path (one storage read, no write), stays here, inline.

Every public method has an async twin with an ``a`` prefix and the same signature that uses the
storage's async twins and Django's async auth APIs, runs password hashing in worker threads and
user-model writes through ``sync_to_async`` (tests/test_framework_facade.py checks the pairs).

See docs/security.md for the security model this implements.
"""

from __future__ import annotations

from hmac import compare_digest
from typing import TYPE_CHECKING, Any

from django.views.decorators.debug import sensitive_variables

from . import access, introspection, login, registration, tokens
from .access import end_user_access
from .audit import AuditWriter, make_event
from .exceptions import InvalidInput, InvalidToken, TokenExpired, TokenRevoked
from .lockout import Lockout
from .login import BAD_CREDENTIALS
from .records import NOT_LOADED, AuthToken, now_ts
from .registration import validate_new_password
from .request_info import RequestInfo, request_info_of
from .rotation import Rotation
from .session_api import SessionAPI
from .storage import AuthStorage, get_storage
from .tokens import IssuedToken
from .users import aload_active_user, can_authenticate, load_active_user

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

__all__ = [
    "BAD_CREDENTIALS",
    "AuthFramework",
    "RequestInfo",
    "end_user_access",
    "validate_new_password",
]

_BAD_ACCESS = "The access token is not valid; log in again to get a new one."
_REVOKED = "The access token was revoked; log in again."
_EXPIRED = "The access token has expired; refresh it or log in again."


def _check_presented(record: AuthToken | None, raw: object, presented: str) -> AuthToken:
    """What :meth:`AuthFramework.verify_token` checks, for its siblings."""
    if record is None or not compare_digest(record.access_digest, presented):
        tokens.check_token_format(raw, tokens.ACCESS_PREFIX)
        raise InvalidToken(_BAD_ACCESS)
    if record.revoked_at is not None:
        raise TokenRevoked(_REVOKED)
    if now_ts() >= record.expires_ts:
        raise TokenExpired(_EXPIRED)
    return record


def _active(user: Any) -> Any:
    """A user read with its token, or None if it may not log in; NOT_LOADED as it is."""
    if user is NOT_LOADED or user is None:
        return user
    return user if can_authenticate(user) else None


def _no_subject(username: str | None, ip_address: str | None) -> None:
    if username is None and ip_address is None:
        raise InvalidInput("reset_lockout needs a username, an ip_address, or both.")


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
        info = request_info_of(request_info)
        self._audit.write(
            make_event(
                action,
                outcome,
                user_id=user_id,
                request_info=info,
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
        info = request_info_of(request_info)
        await self._audit.awrite(
            make_event(
                action,
                outcome,
                user_id=user_id,
                request_info=info,
                resource=resource,
                metadata=metadata,
            )
        )

    # Registration and login -------------------------------------------------------------------

    @sensitive_variables("password")
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
        return registration.register_user(
            self._audit, username, password, request_info, password_validation, extra_fields
        )

    @sensitive_variables("password")
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
        return await registration.aregister_user(
            self._audit, username, password, request_info, password_validation, extra_fields
        )

    @sensitive_variables()  # password, and the issued pair
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
        return login.authenticate(
            self.storage, self._audit, self._lockout, username, password, request_info
        )

    @sensitive_variables()
    async def aauthenticate(
        self, username: str, password: str, *, request_info: RequestInfo | None = None
    ) -> IssuedToken:
        """Async twin of :meth:`authenticate`; hashing runs in a worker thread."""
        return await login.aauthenticate(
            self.storage, self._audit, self._lockout, username, password, request_info
        )

    # Verification -----------------------------------------------------------------------------

    def verify_token(self, access_token: str) -> AuthToken:
        """Return the stored record of a valid access token; one storage read, no write.

        Raises :class:`InvalidToken` (malformed or unknown), :class:`TokenRevoked` or
        :class:`TokenExpired`. The user is not loaded: see :meth:`get_user`.
        """
        # The hot path, inline: the digest (the full format check only runs when nothing
        # matches, see tokens.presented_digest), one lookup that skips the storage front's
        # check of a digest computed right here, a constant-time compare, and the deadlines
        # compared as numbers.
        presented = tokens.presented_digest(access_token)
        record = self.storage.lookup_access(presented)
        if record is None or not compare_digest(record.access_digest, presented):
            tokens.check_token_format(access_token, tokens.ACCESS_PREFIX)
            raise InvalidToken(_BAD_ACCESS)
        if record.revoked_at is not None:
            raise TokenRevoked(_REVOKED)
        if now_ts() >= record.expires_ts:
            raise TokenExpired(_EXPIRED)
        return record

    async def averify_token(self, access_token: str) -> AuthToken:
        """Async twin of :meth:`verify_token`."""
        presented = tokens.presented_digest(access_token)
        record = await self.storage.aget_token_by_access(presented)
        return _check_presented(record, access_token, presented)

    def verify_token_and_user(self, access_token: str) -> tuple[AuthToken, Any]:
        """:meth:`verify_token`, and the token's user when the storage reads both in one query.

        Returns ``(record, user)``: on a :class:`~django_authfw.storage.DatabaseStorage` whose
        tokens live in the user model's database, ``user`` is the user (one SELECT joins the
        token to it), or None if it may not log in (inactive); elsewhere it is
        :data:`~django_authfw.records.NOT_LOADED` and :meth:`get_user` loads it when needed.
        Raises as :meth:`verify_token` does.
        """
        presented = tokens.presented_digest(access_token)
        record, user = self.storage.lookup_access_with_user(presented)
        return _check_presented(record, access_token, presented), _active(user)

    async def averify_token_and_user(self, access_token: str) -> tuple[AuthToken, Any]:
        """Async twin of :meth:`verify_token_and_user`."""
        presented = tokens.presented_digest(access_token)
        record, user = await self.storage.alookup_access_with_user(presented)
        return _check_presented(record, access_token, presented), _active(user)

    def get_user(self, record: AuthToken) -> AbstractBaseUser | None:
        """The user a token belongs to, or None if deleted or inactive."""
        return load_active_user(record.user_id)

    async def aget_user(self, record: AuthToken) -> AbstractBaseUser | None:
        """Async twin of :meth:`get_user`."""
        return await aload_active_user(record.user_id)

    # Refresh ----------------------------------------------------------------------------------

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
        return Rotation(self.storage, self._audit).refresh(refresh_token, request_info)

    @sensitive_variables()  # the presented and issued tokens
    async def arefresh(
        self, refresh_token: str, *, request_info: RequestInfo | None = None
    ) -> IssuedToken:
        """Async twin of :meth:`refresh`."""
        return await Rotation(self.storage, self._audit).arefresh(refresh_token, request_info)

    # Revocation -------------------------------------------------------------------------------

    @sensitive_variables()
    def revoke_token(self, token: str, *, request_info: RequestInfo | None = None) -> bool:
        """Revoke an access token (its pair) or a refresh token (its whole family).

        As RFC 7009 asks, an unknown or malformed token is not an error: the result is False.
        True means something was revoked now; audited as ``revoke``.
        """
        return access.revoke_token(self.storage, self._audit, token, request_info)

    @sensitive_variables()
    async def arevoke_token(self, token: str, *, request_info: RequestInfo | None = None) -> bool:
        """Async twin of :meth:`revoke_token`."""
        return await access.arevoke_token(self.storage, self._audit, token, request_info)

    def revoke_user_tokens(self, user: Any, *, request_info: RequestInfo | None = None) -> int:
        """Revoke every token of a user (username or instance); return how many.

        Audited as ``revoke_all``.
        """
        return access.revoke_user_tokens(self.storage, self._audit, user, request_info)

    async def arevoke_user_tokens(
        self, user: Any, *, request_info: RequestInfo | None = None
    ) -> int:
        """Async twin of :meth:`revoke_user_tokens`."""
        return await access.arevoke_user_tokens(self.storage, self._audit, user, request_info)

    # Introspection ----------------------------------------------------------------------------

    @sensitive_variables()
    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection of an access or refresh token.

        ``{"active": False}`` and nothing else for a token that is unknown, malformed, expired,
        revoked, or whose user is gone or inactive; otherwise ``active``, ``scope`` (the
        permissions, space-separated), ``username``, ``token_type``, ``exp``, ``iat``, ``sub``
        (the user id) and ``jti`` (the token id).
        """
        return introspection.introspect(self.storage, token)

    @sensitive_variables()
    async def aintrospect(self, token: str) -> dict[str, Any]:
        """Async twin of :meth:`introspect`."""
        return await introspection.aintrospect(self.storage, token)

    # Lockout ----------------------------------------------------------------------------------

    def lockout_remaining(self, username: str | None, ip_address: str | None) -> int:
        """Seconds until a login for ``username`` from ``ip_address`` is allowed; 0 = now."""
        return self._lockout.remaining(*login.lockout_subjects(username, ip_address))

    async def alockout_remaining(self, username: str | None, ip_address: str | None) -> int:
        """Async twin of :meth:`lockout_remaining`."""
        return await self._lockout.aremaining(*login.lockout_subjects(username, ip_address))

    def reset_lockout(
        self,
        *,
        username: str | None = None,
        ip_address: str | None = None,
        request_info: RequestInfo | None = None,
        audit_metadata: dict[str, Any] | None = None,
    ) -> int:
        """Forget failures and locks of a username and/or address; return entries removed.

        Audited as ``unlock``, with ``audit_metadata`` added to the event's metadata (the admin
        records who lifted it).
        """
        _no_subject(username, ip_address)
        info = request_info_of(request_info)
        return login.unlock(self._lockout, self._audit, username, ip_address, info, audit_metadata)

    async def areset_lockout(
        self,
        *,
        username: str | None = None,
        ip_address: str | None = None,
        request_info: RequestInfo | None = None,
        audit_metadata: dict[str, Any] | None = None,
    ) -> int:
        """Async twin of :meth:`reset_lockout`."""
        _no_subject(username, ip_address)
        info = request_info_of(request_info)
        return await login.aunlock(
            self._lockout, self._audit, username, ip_address, info, audit_metadata
        )
