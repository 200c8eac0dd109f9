"""Where a request came from, as the audit log and sessions record it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .exceptions import InvalidInput

if TYPE_CHECKING:
    from django.http import HttpRequest

# Longer user agents are junk or an attempt to bloat the audit table; 512 keeps every real one.
MAX_USER_AGENT_LENGTH = 512


def _clean_ip(value: str) -> str:
    # inet columns and GenericIPAddressField refuse zone ids ("fe80::1%eth0"); the zone is
    # local to the server's interface and says nothing about the client.
    address = ipaddress.ip_address(value.split("%", 1)[0])
    # A dual-stack server sees IPv4 clients as "::ffff:203.0.113.9": the same client as
    # "203.0.113.9", so one audit trail and one lockout counter.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _clean_user_agent(value: str) -> str:
    # NUL bytes cannot be stored in PostgreSQL text columns.
    return value.replace("\x00", "")[:MAX_USER_AGENT_LENGTH]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The client's IP address and user agent, attached to audit events and sessions.

    ``ip_address`` must be a valid IPv4 or IPv6 address or None; it is kept in its canonical
    form, an IPv4-mapped IPv6 address (``::ffff:203.0.113.9``) as the IPv4 address it maps.
    ``user_agent`` is truncated to :data:`MAX_USER_AGENT_LENGTH` characters and stripped of NUL
    bytes.
    """

    ip_address: str | None = None
    user_agent: str = ""

    def __post_init__(self) -> None:
        if self.ip_address is not None:
            if not isinstance(self.ip_address, str):
                raise InvalidInput("ip_address must be a string such as '203.0.113.7' or None.")
            try:
                cleaned = _clean_ip(self.ip_address)
            except ValueError:
                raise InvalidInput(
                    "ip_address is not a valid IPv4 or IPv6 address; pass REMOTE_ADDR or None."
                ) from None
            object.__setattr__(self, "ip_address", cleaned)
        if not isinstance(self.user_agent, str):
            raise InvalidInput("user_agent must be a string.")
        object.__setattr__(self, "user_agent", _clean_user_agent(self.user_agent))

    @classmethod
    def from_request(cls, request: HttpRequest) -> RequestInfo:
        """Build from ``REMOTE_ADDR`` and the ``User-Agent`` header of a Django request.

        ``REMOTE_ADDR`` is used as is: behind a proxy, set it from the trusted forwarding
        header in a middleware first (Django does not trust ``X-Forwarded-For`` by default).
        """
        remote = request.META.get("REMOTE_ADDR")
        ip: str | None
        try:
            ip = _clean_ip(remote) if isinstance(remote, str) and remote else None
        except ValueError:
            ip = None
        agent = request.META.get("HTTP_USER_AGENT", "")
        return cls(ip_address=ip, user_agent=agent if isinstance(agent, str) else "")


EMPTY = RequestInfo()


def request_info_of(value: object) -> RequestInfo:
    """The ``request_info`` argument of a framework method: :data:`EMPTY` for None."""
    if value is None:
        return EMPTY
    if not isinstance(value, RequestInfo):
        raise InvalidInput(
            "request_info must be a RequestInfo (RequestInfo.from_request(request))."
        )
    return value
