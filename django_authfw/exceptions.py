"""The exception tree of django_authfw.

Every error the app raises on purpose is an :class:`AuthError`. Messages say what to do and never
contain a raw token, a password or another secret.
"""

from __future__ import annotations


class AuthError(Exception):
    """Base class of every django_authfw error."""


class InvalidCredentials(AuthError):
    """The username or password is wrong, or the account cannot log in.

    The message is the same whatever the reason, so a caller learns nothing about which
    accounts exist.
    """


class UserExists(AuthError):
    """``register_user`` was asked for a username that is already taken."""


class AccountLocked(AuthError):
    """Too many failed logins; ``retry_after`` is the number of seconds to wait."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidToken(AuthError):
    """The token is unknown, malformed, expired or revoked."""


class TokenExpired(InvalidToken):
    """The token was valid but its lifetime is over; log in or refresh again."""


class TokenRevoked(InvalidToken):
    """The token was revoked (logout, rotation, reuse detection or a password change)."""


class InvalidInput(AuthError, ValueError):
    """An argument is empty, too long, of the wrong type or contains forbidden characters."""


class StorageError(AuthError):
    """The storage backend failed or holds data it cannot read."""


class StorageUnavailable(StorageError):
    """The storage backend cannot be reached (connection refused, timeout, failover)."""


class CredentialsRefused(StorageUnavailable):
    """A storage (Redis or a Sentinel) refused the configured username or password.

    A configuration error, not a transient one: raised at the first refusal, never retried.
    It is a :class:`StorageUnavailable` so that the HTTP layer still answers 503 JSON (the
    storage is unusable until an operator fixes the password), not an HTML 500.
    """
