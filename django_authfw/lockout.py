"""Login attempt counting and lockout, on any storage's key-value store.

Counting before checking
    Every login attempt is counted *before* its password is checked, with the storage's atomic
    :meth:`~AuthStorage.kv_incr`, so each of many concurrent attempts gets a number of its own.
    An attempt whose number is past its subject's threshold is refused without a password
    check. At most the threshold's number of passwords is therefore checked per subject and
    window, however many attempts arrive at once, from however many threads, processes or
    servers sharing the storage. (Checking the lock, hashing, and counting afterwards let every
    attempt of a burst through to the hasher.)

Successes take their count back
    A successful login adds its own count and the failures of its (username, address) pair to
    a second counter, the "credits", which is subtracted when a count passes the threshold. So
    successes never lock anyone, and a user who mistyped and then got in leaves no failures
    against their office's address, while other pairs' failures stay counted: one valid account
    cannot wipe an address's counter, and a user's success does not forgive an attacker's
    failures from elsewhere. (``kv_incr`` only adds one; credits avoid needing a decrement.)
    A success claims its pair's failures one by one with ``kv_incr`` on a claim counter, so
    that concurrent successes of one pair take back each failure once, not once each.

Subjects
    The username (already normalised by the caller), up to ``AUTHFW["LOCKOUT_THRESHOLD"]``; the
    client address, up to ``AUTHFW["LOCKOUT_IP_THRESHOLD"]``, an IPv4 address as is (also when
    embedded in a ``64:ff9b::/96`` NAT64 address) and an IPv6 address by its /64 network (one
    subscriber usually holds a whole /64, so counting each address would give an attacker
    2**64 counters).

Windows
    Fixed periods of ``AUTHFW["LOCKOUT_WINDOW"]`` aligned to the Unix epoch. The counts,
    credits and pair counts of a window carry its number in their keys, so a success only ever
    takes back counts of its own window. A failure that brings its subject to the threshold
    locks the subject for ``LOCKOUT_WINDOW`` from then (the lock key); while a lock lasts,
    attempts are refused before they are counted. Across a boundary, as with any fixed window,
    up to twice the threshold is checked within one window's length (2 x threshold - 1 one by
    one; 2 x threshold for a burst whose later half passes before the earlier half's lock).

Keys (each with a TTL; ``<hmac>`` is an HMAC-SHA256 keyed with ``SECRET_KEY``, so no username
or address appears in the store and keys stay short)::

    authfw:lockout:lock:<kind>:<hmac>            the lock; value: its end as a Unix time
    authfw:lockout:try:<kind>:<hmac>:<window>    attempts counted in the window
    authfw:lockout:ok:<kind>:<hmac>:<window>     counts taken back by successes
    authfw:lockout:pair:<hmac>:<window>          failures of one (username, address) pair
    authfw:lockout:claim:<hmac>:<window>         of those, how many successes took back
    authfw:lockout:noted:<kind>:<hmac>           refusals audited this minute (at most one)

A threshold of 0 turns its subject off; ``LOCKOUT_THRESHOLD = 0`` turns lockout off.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from django.utils.crypto import salted_hmac

from .conf import conf
from .records import utcnow
from .storage import AuthStorage

Kind = Literal["user", "ip"]

#: Keys under this prefix belong to the framework; AuthFramework.kv_* refuses them.
RESERVED_PREFIX = "authfw:"
_PREFIX = f"{RESERVED_PREFIX}lockout:"
_HMAC_SALT = "django_authfw.lockout"
#: While a subject is locked, at most one refused attempt is audited per this interval.
NOTE_INTERVAL = timedelta(minutes=1)


def _digest(text: str) -> str:
    # surrogatepass: any str gets a key, even one that a later check refuses.
    data = text.encode("utf-8", "surrogatepass")
    return salted_hmac(_HMAC_SALT, data, algorithm="sha256").hexdigest()


#: RFC 6052's well-known prefix: a translator (NAT64, SIIT) shows IPv4 client a.b.c.d to an
#: IPv6-only server as 64:ff9b::a.b.c.d. Its /64 would be one counter for every IPv4 client.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def address_subject(ip_address: str) -> str:
    """The value an address is counted under: IPv4 as is, IPv6 as its /64 network.

    An IPv4 address embedded in a mapped (``::ffff:``) or NAT64 (``64:ff9b::``) address counts
    as that IPv4 address.
    """
    address = ipaddress.ip_address(ip_address)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address in _NAT64:
            return str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Subject:
    """What one counter counts: a username or an address (network), and its threshold."""

    kind: Kind
    value: str
    threshold: int
    digest: str

    @classmethod
    def of(cls, kind: Kind, value: str, threshold: int) -> Subject:
        return cls(kind, value, threshold, _digest(f"{kind}:{value}"))

    def lock_key(self) -> str:
        return f"{_PREFIX}lock:{self.kind}:{self.digest}"

    def noted_key(self) -> str:
        return f"{_PREFIX}noted:{self.kind}:{self.digest}"

    def try_key(self, window: int) -> str:
        return f"{_PREFIX}try:{self.kind}:{self.digest}:{window}"

    def ok_key(self, window: int) -> str:
        return f"{_PREFIX}ok:{self.kind}:{self.digest}:{window}"


def lock_key(kind: Kind, value: str) -> str:
    """The key of the lock of a username (``user``) or counted address value (``ip``)."""
    return Subject.of(kind, value, 0).lock_key()


def _pair_key(username: str, address: str, window: int) -> str:
    # NUL cannot occur in a username (check_id refuses it), so the pair is unambiguous.
    text = "pair:" + username + "\x00" + address
    return f"{_PREFIX}pair:{_digest(text)}:{window}"


def _claim_key(pair_key: str) -> str:
    """The counter of a pair's failures taken back (claimed) by its successes."""
    return pair_key.replace(f"{_PREFIX}pair:", f"{_PREFIX}claim:", 1)


def _subjects(
    username: str | None, ip_address: str | None, *, enforced: bool = True
) -> list[Subject]:
    """The subjects of an attempt, user first; ``enforced``: only those with a threshold."""
    subjects: list[Subject] = []
    user_threshold, ip_threshold = conf.LOCKOUT_THRESHOLD, conf.LOCKOUT_IP_THRESHOLD
    if enforced and user_threshold <= 0:
        return subjects  # LOCKOUT_THRESHOLD = 0 turns lockout off
    if username:
        subjects.append(Subject.of("user", username, user_threshold))
    if ip_address and (ip_threshold > 0 or not enforced):
        subjects.append(Subject.of("ip", address_subject(ip_address), ip_threshold))
    return subjects


def _remaining(raw: bytes | None, now: float) -> int:
    if raw is None:
        return 0
    try:
        until = float(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return 0
    return max(0, math.ceil(until - now))


def _count(raw: bytes | None) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class _Window:
    number: int
    length: timedelta
    left: int  # seconds until the window ends (at least 1)

    @classmethod
    def now(cls) -> _Window:
        seconds = max(1, int(conf.LOCKOUT_WINDOW.total_seconds()))
        now = utcnow().timestamp()
        number = int(now // seconds)
        left = max(1, math.ceil((number + 1) * seconds - now))
        return cls(number, timedelta(seconds=seconds), left)


@dataclass(slots=True)
class Attempt:
    """One login attempt as :meth:`Lockout.admit` counted it.

    ``refused_by`` is the subject that refused it (locked, or over its threshold), with
    ``retry_after`` seconds; otherwise ``counted`` holds each counted subject with the attempt's
    count (attempts not taken back, this one included).
    """

    username: str | None
    ip_address: str | None
    window: _Window
    counted: list[tuple[Subject, int]] = field(default_factory=list)
    refused_by: Subject | None = None
    retry_after: int = 0

    def refuse(self, subject: Subject, retry_after: int) -> Attempt:
        self.refused_by, self.retry_after = subject, max(1, retry_after)
        return self

    def pair_key(self) -> str | None:
        """The failure counter of the (username, address) pair, when the username was counted.

        Without an address (a call from code with no request) the pair is the username alone.
        """
        if not self.counted or self.counted[0][0].kind != "user" or not self.username:
            return None
        # The address even when LOCKOUT_IP_THRESHOLD = 0: a success still only takes back the
        # failures from its own address.
        address = address_subject(self.ip_address) if self.ip_address else ""
        return _pair_key(self.username, address, self.window.number)

    def pair_failures_cap(self) -> int:
        """Failures of the pair this success may take back: no more than each count holds."""
        return min((count for _, count in self.counted), default=1) - 1


class Lockout:
    """Lockout policy over a storage chosen at each call (``LOCKOUT_STORAGE`` is read live).

    A login calls :meth:`admit` before it checks the password, then :meth:`record_failure`
    or :meth:`record_success` with the returned :class:`Attempt`.
    """

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
        storage, now = self.storage, utcnow().timestamp()
        return max(
            (
                _remaining(storage.kv_get(s.lock_key()), now)
                for s in _subjects(username, ip_address)
            ),
            default=0,
        )

    async def aremaining(self, username: str | None, ip_address: str | None) -> int:
        storage, now = self.storage, utcnow().timestamp()
        values = [
            _remaining(await storage.akv_get(s.lock_key()), now)
            for s in _subjects(username, ip_address)
        ]
        return max(values, default=0)

    # Counting -------------------------------------------------------------------------------

    def admit(self, username: str | None, ip_address: str | None) -> Attempt:
        """Count one attempt before its password is checked; see :class:`Attempt`."""
        attempt = Attempt(username, ip_address, _Window.now())
        subjects = _subjects(username, ip_address)
        if not subjects:
            return attempt
        storage, now = self.storage, utcnow().timestamp()
        for subject in subjects:
            left = _remaining(storage.kv_get(subject.lock_key()), now)
            if left:
                return attempt.refuse(subject, left)
        window = attempt.window
        for subject in subjects:
            count = storage.kv_incr(subject.try_key(window.number), window.length)
            if count >= subject.threshold:  # below it, credits cannot change the outcome
                count -= _count(storage.kv_get(subject.ok_key(window.number)))
            if count > subject.threshold:
                return attempt.refuse(subject, window.left)
            attempt.counted.append((subject, count))
        return attempt

    async def aadmit(self, username: str | None, ip_address: str | None) -> Attempt:
        attempt = Attempt(username, ip_address, _Window.now())
        subjects = _subjects(username, ip_address)
        if not subjects:
            return attempt
        storage, now = self.storage, utcnow().timestamp()
        for subject in subjects:
            left = _remaining(await storage.akv_get(subject.lock_key()), now)
            if left:
                return attempt.refuse(subject, left)
        window = attempt.window
        for subject in subjects:
            count = await storage.akv_incr(subject.try_key(window.number), window.length)
            if count >= subject.threshold:
                count -= _count(await storage.akv_get(subject.ok_key(window.number)))
            if count > subject.threshold:
                return attempt.refuse(subject, window.left)
            attempt.counted.append((subject, count))
        return attempt

    @staticmethod
    def _lock_value() -> tuple[bytes, timedelta]:
        window = conf.LOCKOUT_WINDOW
        return str((utcnow() + window).timestamp()).encode(), window

    def record_failure(self, attempt: Attempt) -> list[Kind]:
        """The attempt's password was wrong: return the kinds (``user``, ``ip``) it locked."""
        storage, locked = self.storage, []
        pair = attempt.pair_key()
        if pair is not None:
            storage.kv_incr(pair, attempt.window.length)
        for subject, count in attempt.counted:
            if count >= subject.threshold:
                storage.kv_set(subject.lock_key(), *self._lock_value())
                locked.append(subject.kind)
        return locked

    async def arecord_failure(self, attempt: Attempt) -> list[Kind]:
        storage, locked = self.storage, []
        pair = attempt.pair_key()
        if pair is not None:
            await storage.akv_incr(pair, attempt.window.length)
        for subject, count in attempt.counted:
            if count >= subject.threshold:
                await storage.akv_set(subject.lock_key(), *self._lock_value())
                locked.append(subject.kind)
        return locked

    def record_success(self, attempt: Attempt) -> None:
        """The login succeeded: take back its count and its pair's failures."""
        if not attempt.counted:
            return
        storage, window = self.storage, attempt.window
        taken = 1
        pair, cap = attempt.pair_key(), attempt.pair_failures_cap()
        if pair is not None and cap > 0:
            # Each failure is claimed by one kv_incr of the claim counter, whose numbers are
            # unique: concurrent successes of one pair cannot all take back the same failures
            # (reading the count and deleting it could, and so credit more than was counted).
            failures, claim = _count(storage.kv_get(pair)), _claim_key(pair)
            wanted = min(failures - _count(storage.kv_get(claim)), cap) if failures else 0
            for _ in range(wanted):
                if storage.kv_incr(claim, window.length) > failures:
                    break
                taken += 1
        for subject, _ in attempt.counted:
            for _ in range(taken):
                storage.kv_incr(subject.ok_key(window.number), window.length)

    async def arecord_success(self, attempt: Attempt) -> None:
        if not attempt.counted:
            return
        storage, window = self.storage, attempt.window
        taken = 1
        pair, cap = attempt.pair_key(), attempt.pair_failures_cap()
        if pair is not None and cap > 0:
            failures, claim = _count(await storage.akv_get(pair)), _claim_key(pair)
            wanted = min(failures - _count(await storage.akv_get(claim)), cap) if failures else 0
            for _ in range(wanted):
                if await storage.akv_incr(claim, window.length) > failures:
                    break
                taken += 1
        for subject, _ in attempt.counted:
            for _ in range(taken):
                await storage.akv_incr(subject.ok_key(window.number), window.length)

    def first_refusal(self, attempt: Attempt) -> bool:
        """Whether this refusal is the first audited one about its subject this minute."""
        assert attempt.refused_by is not None
        return self.storage.kv_incr(attempt.refused_by.noted_key(), NOTE_INTERVAL) == 1

    async def afirst_refusal(self, attempt: Attempt) -> bool:
        assert attempt.refused_by is not None
        return await self.storage.akv_incr(attempt.refused_by.noted_key(), NOTE_INTERVAL) == 1

    # Resetting ------------------------------------------------------------------------------

    @staticmethod
    def _reset_keys(username: str | None, ip_address: str | None) -> list[str]:
        window = _Window.now().number
        subjects = _subjects(username, ip_address, enforced=False)
        keys = [
            key
            for s in subjects
            for key in (s.lock_key(), s.noted_key(), s.try_key(window), s.ok_key(window))
        ]
        if username:
            address = address_subject(ip_address) if ip_address else ""
            pair = _pair_key(username, address, window)
            keys += [pair, _claim_key(pair)]
        return keys

    def reset(self, username: str | None, ip_address: str | None) -> int:
        """Delete the lock and this window's counts of a username and/or address.

        Returns how many entries existed.
        """
        storage = self.storage
        return sum(storage.kv_delete(key) for key in self._reset_keys(username, ip_address))

    async def areset(self, username: str | None, ip_address: str | None) -> int:
        storage, deleted = self.storage, 0
        for key in self._reset_keys(username, ip_address):
            deleted += await storage.akv_delete(key)
        return deleted
