"""The refresh-reuse grace (``AUTHFW["REFRESH_REUSE_GRACE"]``): what it allows, as pure rules.

By default (grace 0) a rotated refresh token that comes back revokes its whole family (RFC 9700,
section 4.14.2). With a grace of N seconds, a client that retries a refresh (its first answer
was lost) gets a new pair instead, if all of these hold:

- the presented token was rotated at most N seconds ago, counted from its *original* rotation:
  grace reissues carry that time (:data:`ORIGIN`) and pass it on, so a chain of reissues never
  moves the window and no family lives on through grace alone;
- the token it was rotated into, followed through grace reissues only, is still live and
  unrotated (the latest rotation): once the new token has been refreshed normally, the old one
  is plain reuse;
- at most :data:`MAX_REISSUES` grace reissues have followed that rotation.

A reissue rotates that live token into the new pair through the storage's atomic revoke, so the
family keeps one live refresh token and concurrent retries still have one winner each round.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .records import AuthToken

#: Metadata key of a grace-reissued token: the ISO time of the rotation its window counts from.
ORIGIN = "grace_origin"
#: Metadata key of a grace-reissued token: the token_id of the rotated token that was presented.
PRESENTED = "grace_presented"
#: Grace reissues allowed after one rotation; beyond them a replay is reuse again.
MAX_REISSUES = 10


def origin_of(presented: AuthToken, successor: AuthToken) -> datetime | None:
    """When the rotation that the grace window of ``presented`` counts from happened.

    ``successor`` is the token ``presented`` was rotated into: a grace reissue names the
    original rotation; otherwise ``presented`` was rotated normally, at its ``revoked_at``.
    """
    return marked_origin(successor) or presented.revoked_at


def marked_origin(token: AuthToken) -> datetime | None:
    """The original rotation time a grace-reissued ``token`` carries, or None."""
    mark = token.metadata.get(ORIGIN)
    if not isinstance(mark, str):
        return None
    try:
        return datetime.fromisoformat(mark)
    except ValueError:
        return None


def in_window(origin: datetime | None, now: datetime, grace: timedelta) -> bool:
    """Whether ``now`` is within ``grace`` of the rotation at ``origin``."""
    return grace > timedelta(0) and origin is not None and now - origin <= grace


def refreshable(token: AuthToken, now: datetime) -> bool:
    """Whether ``token``'s refresh token is live: not revoked, not expired."""
    return (
        not token.is_revoked
        and token.refresh_expires_at is not None
        and now < token.refresh_expires_at
    )


def rotated_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A token's metadata as a normal rotation passes it on: without the grace marks, so that a
    token refreshed normally starts a window of its own."""
    return {key: value for key, value in metadata.items() if key not in (ORIGIN, PRESENTED)}


def reissued_metadata(
    head: AuthToken, client: dict[str, Any], *, presented: AuthToken, origin: datetime
) -> dict[str, Any]:
    """Metadata of the pair a grace reissue mints in place of the live token ``head``."""
    return {
        **rotated_metadata(head.metadata),
        **client,
        "parent_id": head.token_id,
        ORIGIN: origin.isoformat(),
        PRESENTED: presented.token_id,
    }
