"""Failed-login counting and lockout, on any storage's key-value store.

``AUTHFW["LOCKOUT_THRESHOLD"]`` failures for one username, or from one IP address, within
``AUTHFW["LOCKOUT_WINDOW"]`` lock that username (or address) for ``LOCKOUT_WINDOW`` from the
failure that reached the threshold. Counters use :meth:`AuthStorage.kv_incr` (atomic, fixed
window), so every process sharing the storage shares the count. A threshold of 0 turns lockout
off.

Keys are ``authfw:lockout:fail:<kind>:<hmac>`` (the counter) and
``authfw:lockout:lock:<kind>:<hmac>`` (the lock, whose value is its end as a Unix time). The
HMAC (keyed with ``SECRET_KEY``) keeps usernames and addresses out of the store and every key
short, whatever the length of the username.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

from django.utils.crypto import salted_hmac

from .conf import conf
from .records import utcnow
from .storage import AuthStorage

Kind = Literal["user", "ip"]

#: Keys under this prefix belong to the framework; AuthFramework.kv_* refuses them.
RESERVED_PREFIX = "authfw:"
_HMAC_SALT = "django_authfw.lockout"


def _digest(kind: Kind, value: str) -> str:
    return salted_hmac(_HMAC_SALT, f"{kind}:{value}", algorithm="sha256").hexdigest()


def fail_key(kind: Kind, value: str) -> str:
    return f"{RESERVED_PREFIX}lockout:fail:{kind}:{_digest(kind, value)}"


def lock_key(kind: Kind, value: str) -> str:
    return f"{RESERVED_PREFIX}lockout:lock:{kind}:{_digest(kind, value)}"


def _subjects(username: str | None, ip_address: str | None) -> list[tuple[Kind, str]]:
    subjects: list[tuple[Kind, str]] = []
    if username:
        subjects.append(("user", username))
    if ip_address:
        subjects.append(("ip", ip_address))
    return subjects


def _remaining(raw: bytes | None, now: float) -> int:
    if raw is None:
        return 0
    try:
        until = float(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return 0
    return max(0, math.ceil(until - now))


class Lockout:
    """Lockout policy over a storage chosen at each call (``LOCKOUT_STORAGE`` is read live)."""

    def __init__(self, fallback: Callable[[], AuthStorage]) -> None:
        self._fallback = fallback

    @property
    def storage(self) -> AuthStorage:
        from .storage import get_storage

        alias = conf.LOCKOUT_STORAGE
        return get_storage(alias) if alias else self._fallback()

    @staticmethod
    def enabled() -> bool:
        return conf.LOCKOUT_THRESHOLD > 0

    # Reading --------------------------------------------------------------------------------

    def remaining(self, username: str | None, ip_address: str | None) -> int:
        """Seconds until neither the username nor the address is locked; 0 = not locked."""
        if not self.enabled():
            return 0
        storage, now = self.storage, utcnow().timestamp()
        return max(
            (
                _remaining(storage.kv_get(lock_key(k, v)), now)
                for k, v in _subjects(username, ip_address)
            ),
            default=0,
        )

    async def aremaining(self, username: str | None, ip_address: str | None) -> int:
        if not self.enabled():
            return 0
        storage, now = self.storage, utcnow().timestamp()
        values = [
            _remaining(await storage.akv_get(lock_key(k, v)), now)
            for k, v in _subjects(username, ip_address)
        ]
        return max(values, default=0)

    # Counting -------------------------------------------------------------------------------

    def _lock_value(self) -> tuple[bytes, timedelta]:
        window = conf.LOCKOUT_WINDOW
        return str((utcnow() + window).timestamp()).encode(), window

    def record_failure(self, username: str | None, ip_address: str | None) -> list[Kind]:
        """Count one failed login; return the kinds (``user``, ``ip``) it has just locked."""
        if not self.enabled():
            return []
        storage, threshold, window = self.storage, conf.LOCKOUT_THRESHOLD, conf.LOCKOUT_WINDOW
        locked: list[Kind] = []
        for kind, value in _subjects(username, ip_address):
            if storage.kv_incr(fail_key(kind, value), window) >= threshold:
                value_bytes, ttl = self._lock_value()
                storage.kv_set(lock_key(kind, value), value_bytes, ttl)
                storage.kv_delete(fail_key(kind, value))
                locked.append(kind)
        return locked

    async def arecord_failure(self, username: str | None, ip_address: str | None) -> list[Kind]:
        if not self.enabled():
            return []
        storage, threshold, window = self.storage, conf.LOCKOUT_THRESHOLD, conf.LOCKOUT_WINDOW
        locked: list[Kind] = []
        for kind, value in _subjects(username, ip_address):
            if await storage.akv_incr(fail_key(kind, value), window) >= threshold:
                value_bytes, ttl = self._lock_value()
                await storage.akv_set(lock_key(kind, value), value_bytes, ttl)
                await storage.akv_delete(fail_key(kind, value))
                locked.append(kind)
        return locked

    def clear_failures(self, username: str) -> None:
        """Forget the username's failures (after a successful login)."""
        if self.enabled():
            self.storage.kv_delete(fail_key("user", username))

    async def aclear_failures(self, username: str) -> None:
        if self.enabled():
            await self.storage.akv_delete(fail_key("user", username))

    # Resetting ------------------------------------------------------------------------------

    def reset(self, username: str | None, ip_address: str | None) -> int:
        """Delete the counters and locks of a username and/or address; return how many."""
        storage = self.storage
        return sum(
            storage.kv_delete(key)
            for kind, value in _subjects(username, ip_address)
            for key in (fail_key(kind, value), lock_key(kind, value))
        )

    async def areset(self, username: str | None, ip_address: str | None) -> int:
        storage, deleted = self.storage, 0
        for kind, value in _subjects(username, ip_address):
            for key in (fail_key(kind, value), lock_key(kind, value)):
                deleted += await storage.akv_delete(key)
        return deleted
