"""Token generation, hashing and input validation.

Raw tokens are ``<prefix><43 url-safe base64 characters>``: 256 bits from :mod:`secrets`, with a
fixed, recognisable prefix (``afw_at_`` for access, ``afw_rt_`` for refresh tokens) so that
secret scanners can spot a leaked one. Only the SHA-256 digest of a raw token is ever stored.
A digest (not a slow password hash) is right here: the secret has 256 bits of entropy, so it
cannot be guessed, and the hot path needs one fast, indexable value.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from .exceptions import InvalidInput, InvalidToken

ACCESS_PREFIX = "afw_at_"
REFRESH_PREFIX = "afw_rt_"
SECRET_BYTES = 32  # 256 bits
_SECRET_LEN = 43  # len(token_urlsafe(32))
RAW_TOKEN_LENGTH = len(ACCESS_PREFIX) + _SECRET_LEN
# One compiled pattern per prefix: a regex match checks prefix and alphabet in one C call,
# twice as fast as comparing the secret's characters with a set, on every verification.
_FORMATS: dict[str, re.Pattern[str]] = {}


def _format(prefix: str) -> re.Pattern[str]:
    pattern = _FORMATS[prefix] = re.compile(f"{re.escape(prefix)}[A-Za-z0-9_-]{{{_SECRET_LEN}}}")
    return pattern


MAX_ID_LENGTH = 255
# Argon2 and PBKDF2 accept any length, but hashing megabytes per attempt is a denial of service;
# 255 characters leaves room for any passphrase and is refused before any hashing.
MAX_PASSWORD_LENGTH = 255


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What ``authenticate`` and ``refresh`` return: the raw secrets, shown once.

    ``repr`` hides the secrets so that a token never lands in a log line by accident.
    """

    access_token: str
    refresh_token: str | None
    token_type: str
    expires_at: datetime
    refresh_expires_at: datetime | None
    token_id: str
    user_id: str
    permissions: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    #: When the access token was issued, on the clock that set ``expires_at``.
    issued_at: datetime | None = None

    def __repr__(self) -> str:
        return (
            f"IssuedToken(token_id={self.token_id!r}, user_id={self.user_id!r}, "
            f"token_type={self.token_type!r}, expires_at={self.expires_at.isoformat()!r})"
        )

    @property
    def expires_in(self) -> int:
        """The access token's lifetime in seconds (RFC 6749 section 5.1 ``expires_in``).

        ``expires_at - issued_at``, both from the one clock reading taken at issue, so a token
        issued with a one-hour ``ACCESS_TOKEN_TTL`` says 3600, not the 3599 that truncating the
        time left a moment later would give. A lifetime with a fraction of a second (a TTL of
        ``90.7`` seconds) is rounded down: a client that trusts ``expires_in`` must never send
        the token after it has expired. Without ``issued_at``, the seconds left from now,
        rounded.
        """
        if self.issued_at is not None:
            return max(0, (self.expires_at - self.issued_at) // timedelta(seconds=1))
        from .records import utcnow

        return max(0, round((self.expires_at - utcnow()).total_seconds()))


def new_secret(prefix: str) -> str:
    """Return a fresh raw token: ``prefix`` followed by 256 random bits, url-safe."""
    return prefix + secrets.token_urlsafe(SECRET_BYTES)


def new_id() -> str:
    """Return a fresh record id (128 random bits, url-safe, 22 characters)."""
    return secrets.token_urlsafe(16)


#: How many characters of a secret value (a token digest, a session id) the admin and the
#: audit log show: enough to match a log line or tell two apart, far too few to use.
SHOWN_PREFIX_LENGTH = 12


def shown_prefix(value: str) -> str:
    """The first :data:`SHOWN_PREFIX_LENGTH` characters of ``value``, with an ellipsis if cut."""
    if len(value) <= SHOWN_PREFIX_LENGTH:
        return value
    return value[:SHOWN_PREFIX_LENGTH] + "…"


def shown_session_id(session_id: str) -> str:
    """What the admin and the audit log show of a session id (the session's credential): its
    first :data:`SHOWN_PREFIX_LENGTH` characters, never more than a third of it, and an ellipsis.

    The framework's ids (43 characters) show 12; an id the storage was given (any length from 1)
    is never shown whole or nearly whole.
    """
    return session_id[: min(SHOWN_PREFIX_LENGTH, len(session_id) // 3)] + "…"


_sha256 = hashlib.sha256
MALFORMED = "The token is malformed; send the token exactly as it was issued."


def token_id_for(access_digest: str) -> str:
    """The token id the framework gives the pair whose access-token digest is ``access_digest``:
    128 bits of a SHA-256 of the digest, url-safe (22 characters, like :func:`new_id`).

    One-way, so an id (shown in the admin, audit events, introspection's ``jti``) tells nothing
    about the digest, while a store can find a record by the digest it is looked up by and by
    its id under one key (the Redis layout, docs/backends.md).
    """
    raw = _sha256(b"authfw-token-id:" + access_digest.encode()).digest()[:16]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def digest(raw: str) -> str:
    """Return the SHA-256 hex digest of a raw token, the only form that is stored."""
    return _sha256(raw.encode()).hexdigest()


def check_token_format(raw: object, prefix: str) -> str:
    """Return ``raw`` if it looks like a token of this kind, else raise :class:`InvalidToken`.

    Cheap checks only (type, length, prefix, alphabet) so that junk never reaches the storage.
    The message does not echo the value.
    """
    pattern = _FORMATS.get(prefix) or _format(prefix)
    if not isinstance(raw, str) or len(raw) != RAW_TOKEN_LENGTH or pattern.fullmatch(raw) is None:
        raise InvalidToken(MALFORMED)
    return raw


def presented_digest(raw: object) -> str:
    """The digest of a presented token, after the checks that must come first (a string of a
    token's length that UTF-8 can encode); :class:`InvalidToken` otherwise.

    For verification's hot path: the prefix and alphabet are checked with
    :func:`check_token_format` only when no stored token matches, because a stored digest
    matches only the token it was made from, which was issued well-formed. Either way only a
    SHA-256 hex digest reaches the storage.
    """
    if not isinstance(raw, str) or len(raw) != RAW_TOKEN_LENGTH:
        raise InvalidToken(MALFORMED)
    try:
        return _sha256(raw.encode()).hexdigest()
    except UnicodeEncodeError:  # lone surrogates
        raise InvalidToken(MALFORMED) from None


def check_id(value: object, what: str = "id", max_length: int = MAX_ID_LENGTH) -> str:
    """Validate a user id, session id or key: a non-empty str without NUL, at most 255 chars."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}.")
    if not value:
        raise InvalidInput(f"{what} must not be empty.")
    if len(value) > max_length:
        raise InvalidInput(f"{what} must be at most {max_length} characters long.")
    check_text_chars(value, what)
    return value


def check_text_chars(value: str, what: str) -> None:
    """Refuse the characters no store holds: NUL (PostgreSQL text and jsonb) and lone
    surrogates (UTF-8 cannot encode them: PostgreSQL and Redis failed, memory stored them)."""
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters.")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            message = f"{what} must not contain lone surrogates (invalid Unicode)."
            raise InvalidInput(message) from None


def check_password(value: object) -> str:
    """Validate a password's shape before any hashing (never echoes it)."""
    if not isinstance(value, str):
        raise InvalidInput(f"password must be a string, not {type(value).__name__}.")
    if not value:
        raise InvalidInput("password must not be empty.")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters long.")
    if "\x00" in value:
        raise InvalidInput("password must not contain NUL characters.")
    return value
