"""The ``Authorization: Bearer`` header (RFC 6750 section 2.1) and ``WWW-Authenticate`` challenges.

Pure functions on strings, shared by the middleware, the view decorator and the DRF class, so
that all three accept and refuse exactly the same headers.

Grammar (RFC 7235 section 2.1, RFC 6750 section 2.1)::

    credentials = auth-scheme [ 1*SP token68 ]
    auth-scheme = token                       ; compared case-insensitively
    b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="

A header with no value, or with another well-formed scheme (``Basic ...``), is not ours: the
request goes on as anonymous so that another authentication layer may handle it. A Bearer header
that breaks the grammar, or one whose scheme is not even a token (binary junk), is malformed.
"""

from __future__ import annotations

import re

# A raw token is 50 characters; 4 KB leaves room for other issuers' tokens (JWTs) and refuses
# anything bigger before any work is done.
MAX_HEADER_LENGTH = 4096

# RFC 7230 section 3.2.6 tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Optional whitespace around a field value is not part of it (RFC 9110 section 5.5).
_OWS = " \t"


class MalformedAuthorization(ValueError):
    """The ``Authorization`` header breaks the grammar; answer 400 ``invalid_request``.

    The message says what is wrong without echoing the header (it may hold a secret).
    """


def parse_bearer(header: str | None) -> str | None:
    """Return the Bearer token in an ``Authorization`` header value, or None if there is none.

    None means "no Bearer credentials": the header is absent or empty, or uses another scheme.
    Raises :class:`MalformedAuthorization` for a Bearer header that breaks RFC 6750's grammar
    (missing or invalid token, tabs, extra parts, longer than :data:`MAX_HEADER_LENGTH`) and for
    a header whose scheme is not an RFC 7230 token at all.
    """
    if header is None:
        return None
    # The common case in one C-level match, as cheap as splitting the header: exactly
    # "Bearer <b64token>", which is what clients send. Anything else takes the full path below.
    if (
        header.startswith("Bearer ")
        and len(header) <= MAX_HEADER_LENGTH
        and _B64TOKEN.fullmatch(header, 7) is not None
    ):
        return header[7:]
    value = header.strip(_OWS)
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    if not _TOKEN.fullmatch(scheme):
        raise MalformedAuthorization(
            "The Authorization header is malformed; send 'Authorization: Bearer <token>'."
        )
    if scheme.lower() != "bearer":
        return None
    if len(header) > MAX_HEADER_LENGTH:
        raise MalformedAuthorization(
            f"The Authorization header is longer than {MAX_HEADER_LENGTH} characters."
        )
    # RFC 6750 allows one or more spaces between the scheme and the token.
    token = rest.lstrip(" ")
    if not token:
        raise MalformedAuthorization(
            "The Authorization header has no token; send 'Authorization: Bearer <token>'."
        )
    if not _B64TOKEN.fullmatch(token):
        raise MalformedAuthorization(
            "The Bearer token contains characters RFC 6750 does not allow, or more than one "
            "value; send the token exactly as it was issued."
        )
    return token


# What a quoted-string may hold (RFC 9110 section 5.6.4: HTAB, SP, visible ASCII, obs-text),
# less the C1 controls: no line break or other control character can reach a header.
_QUOTABLE = re.compile(r"[\t\x20-\x7e\xa0-\xff]*")


def check_realm(realm: str | None) -> str | None:
    """Return ``realm`` if it can be a challenge's quoted ``realm``, else raise ValueError.

    Checked where a realm is configured (``bearer_required(realm=...)``), so that a realm with a
    line break fails there, not as Django's ``BadHeaderError`` (an HTML 500) on every refusal.
    """
    if realm is None:
        return None
    if not isinstance(realm, str) or not _QUOTABLE.fullmatch(realm):
        raise ValueError(
            f"The realm {realm!r} cannot go into a WWW-Authenticate header: use printable "
            "Latin-1 characters, without line breaks or other control characters."
        )
    return realm


def _quote(value: str) -> str:
    # quoted-string (RFC 7230 section 3.2.6): escape backslash and double quote.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(
    error: str | None = None,
    description: str | None = None,
    *,
    realm: str | None = None,
    scope: str | None = None,
) -> str:
    """Return a ``WWW-Authenticate`` value for the Bearer scheme (RFC 6750 section 3).

    With no arguments it is the bare ``Bearer`` challenge of a request that sent no credentials,
    which RFC 6750 section 3.1 says should carry no error code.
    """
    params = [
        f"{name}={_quote(value)}"
        for name, value in (
            ("realm", realm),
            ("scope", scope),
            ("error", error),
            ("error_description", description),
        )
        if value is not None
    ]
    return "Bearer " + ", ".join(params) if params else "Bearer"
