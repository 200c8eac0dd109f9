"""What the admin's auth dashboard shows, each panel computed by aggregate queries in the database.

The panels of one window (the last hour, 24 hours, 7 days or 30 days):

* events per period (minute, hour or day), per action and outcome: one statement of
  ``COUNT(*)`` over ranges of the index ``idx_audit_action_outcome``
  (:mod:`django_authfw.dashboard_counts`). Successes against failures, the totals per
  action, tokens issued against revocations, and the count of refresh-reuse detections are
  sums of its few hundred rows;
* the most failed usernames and addresses: ``GROUP BY resource`` / ``ip_address`` over the
  failed logins, read from the partial index ``idx_audit_login_failures`` alone;
* the latest refresh-reuse detections, newest first through ``idx_audit_action``;
* current lockouts: the lockout events of the last ``AUTHFW["LOCKOUT_WINDOW"]`` whose subject
  is still locked (asked of the lockout's counters, one read per subject);
* active tokens and sessions of each storage alias: two counts on a database storage, the
  storage's ``statistics()`` on the others.

Nothing here reads the rows of the whole log; docs/admin.md has the plans and the timings on
1,000,000 events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.db import DatabaseError, router
from django.db.models import Count, Max, QuerySet
from django.utils import timezone

from . import actions
from .audit import USERNAME_RESOURCE
from .conf import conf
from .dashboard_counts import period_counts
from .exceptions import AuthError
from .framework import AuthFramework
from .lockout import address_subject
from .models import AuditLog, Token
from .records import StorageStatistics
from .storage import AuthStorage, DatabaseStorage, get_storage

#: How many usernames, addresses, reuse detections and lockouts a panel lists.
TOP = 10
MAX_LOCKOUTS = 50
#: Failed logins name the attempted username in their resource: ``username:<name>``.
USERNAME_PREFIX = USERNAME_RESOURCE

#: Successful events of these actions each issued one token pair.
ISSUING = frozenset({actions.LOGIN, actions.REFRESH, actions.REFRESH_GRACE})
#: Events of these actions revoked tokens (one event may revoke a whole family or user).
REVOKING = frozenset({actions.REVOKE, actions.REVOKE_ALL, actions.REFRESH_REUSE})


@dataclass(frozen=True, slots=True)
class Window:
    """A dashboard window: ``buckets`` periods of one ``unit``, the last one being now."""

    key: str
    label: str
    unit: str  # "minute", "hour" or "day"
    buckets: int

    def starts(self, now: datetime, zone: tzinfo) -> list[datetime]:
        """The start of each period, oldest first; the last one holds ``now``.

        Minutes and hours are counted in UTC (a DST change would otherwise repeat or skip
        one), days in the admin's time zone (a day is a local day).
        """
        if self.unit == "day":
            today = timezone.localtime(now, zone).date()
            return [
                timezone.make_aware(datetime.combine(today - timedelta(days=back), time()), zone)
                for back in range(self.buckets - 1, -1, -1)
            ]
        step = self.step
        current = now.astimezone(UTC).replace(second=0, microsecond=0)
        if self.unit == "hour":
            current = current.replace(minute=0)
        return [current - step * back for back in range(self.buckets - 1, -1, -1)]

    @property
    def step(self) -> timedelta:
        return timedelta(minutes=1) if self.unit == "minute" else timedelta(hours=1)

    def end(self, starts: Sequence[datetime], zone: tzinfo) -> datetime:
        """The end (exclusive) of the last period."""
        last = starts[-1]
        if self.unit == "day":
            next_day = timezone.localtime(last, zone).date() + timedelta(days=1)
            return timezone.make_aware(datetime.combine(next_day, time()), zone)
        return last + self.step


WINDOWS: tuple[Window, ...] = (
    Window("1h", "Last hour", "minute", 60),
    Window("24h", "Last 24 hours", "hour", 24),
    Window("7d", "Last 7 days", "hour", 168),
    Window("30d", "Last 30 days", "day", 30),
)
DEFAULT_WINDOW = "24h"


def window_named(key: str | None) -> Window:
    """The window called ``key``; the default one for None or an unknown key."""
    for window in WINDOWS:
        if window.key == key:
            return window
    return next(window for window in WINDOWS if window.key == DEFAULT_WINDOW)


@dataclass(slots=True)
class Series:
    """Counts per period, oldest first, all lists as long as ``starts``."""

    starts: list[datetime]
    success: list[int]
    failure: list[int]
    issued: list[int]
    revocations: list[int]


@dataclass(frozen=True, slots=True)
class ActionCount:
    """Successes and failures of one action in the window."""

    action: str
    success: int
    failure: int

    @property
    def label(self) -> str:
        return actions.action_label(self.action)

    @property
    def total(self) -> int:
        return self.success + self.failure


@dataclass(frozen=True, slots=True)
class Ranked:
    """A username or address and how many failed logins it had in the window."""

    value: str
    count: int
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class CurrentLockout:
    """A subject locked now: ``kind`` "user" (``username``) or "ip" (``ip_address``)."""

    kind: str
    shown: str  # the username, or the address (an IPv6 client's /64 network)
    username: str | None
    ip_address: str | None
    locked_at: datetime
    remaining: int  # seconds


@dataclass(frozen=True, slots=True)
class ReuseDetection:
    """A ``refresh_reuse`` event: who replayed a rotated refresh token, from where."""

    event_id: int
    created_at: datetime
    user_id: str | None
    ip_address: str | None
    family_id: str
    revoked: int | None


@dataclass(frozen=True, slots=True)
class StorageCounts:
    """Active tokens and sessions of one storage alias, or why they could not be counted."""

    alias: str
    backend: str
    active_tokens: int | None
    active_sessions: int | None
    error: str = ""
    counted_at: datetime | None = None  # a storage's own statistics(), maybe from the cache


@dataclass(slots=True)
class Dashboard:
    """Every panel of one window, as :func:`build` computed them."""

    window: Window
    start: datetime
    end: datetime
    series: Series
    actions: list[ActionCount]
    top_usernames: list[Ranked]
    top_addresses: list[Ranked]
    reuse_recent: list[ReuseDetection]
    lockouts: list[CurrentLockout] = field(default_factory=list)
    lockout_error: str = ""
    storages: list[StorageCounts] = field(default_factory=list)

    @property
    def success_total(self) -> int:
        return sum(self.series.success)

    @property
    def failure_total(self) -> int:
        return sum(self.series.failure)

    @property
    def issued_total(self) -> int:
        return sum(self.series.issued)

    @property
    def revocations_total(self) -> int:
        return sum(self.series.revocations)

    @property
    def reuse_total(self) -> int:
        return sum(a.total for a in self.actions if a.action == actions.REFRESH_REUSE)

    @property
    def has_events(self) -> bool:
        return bool(self.actions)


def build(
    window: Window,
    *,
    now: datetime | None = None,
    zone: tzinfo | None = None,
    cached_statistics: bool = False,
) -> Dashboard:
    """Every panel of ``window``, ending at ``now`` (default: the current time).

    ``cached_statistics``: see :func:`storage_counts` (the page passes True).
    """
    now = now or timezone.now()
    zone = zone or timezone.get_current_timezone()
    starts = window.starts(now, zone)
    start, end = starts[0], window.end(starts, zone)
    in_window = AuditLog.objects.filter(created_at__gte=start, created_at__lt=end)
    series, per_action = _series(window, starts, end)
    failed_logins = in_window.filter(action=actions.LOGIN, outcome=False)
    dashboard = Dashboard(
        window=window,
        start=start,
        end=end,
        series=series,
        actions=per_action,
        top_usernames=_top_usernames(failed_logins),
        top_addresses=_top_addresses(failed_logins),
        reuse_recent=_reuse_recent(in_window),
    )
    dashboard.lockouts, dashboard.lockout_error = _current_lockouts(now)
    dashboard.storages = storage_counts(now, cached=cached_statistics)
    return dashboard


def _series(
    window: Window, starts: list[datetime], end: datetime
) -> tuple[Series, list[ActionCount]]:
    size = len(starts)
    series = Series(starts, [0] * size, [0] * size, [0] * size, [0] * size)
    per_action: dict[str, list[int]] = {}
    for action, outcome, position, n in period_counts([*starts, end]):
        (series.success if outcome else series.failure)[position] += n
        if outcome and action in ISSUING:
            series.issued[position] += n
        if action in REVOKING:
            series.revocations[position] += n
        counts = per_action.setdefault(action, [0, 0])
        counts[0 if outcome else 1] += n
    ordered = sorted(per_action.items(), key=lambda item: (-sum(item[1]), item[0]))
    return series, [ActionCount(action, ok, failed) for action, (ok, failed) in ordered]


def _top_usernames(failed_logins: QuerySet[AuditLog]) -> list[Ranked]:
    rows = (
        failed_logins.filter(resource__startswith=USERNAME_PREFIX)
        .values("resource")
        .annotate(n=Count("*"), last=Max("created_at"))
        .order_by("-n", "resource")[:TOP]
    )
    return [
        Ranked(str(row["resource"])[len(USERNAME_PREFIX) :], row["n"], row["last"]) for row in rows
    ]


def _top_addresses(failed_logins: QuerySet[AuditLog]) -> list[Ranked]:
    rows = (
        failed_logins.filter(ip_address__isnull=False)
        .values("ip_address")
        .annotate(n=Count("*"), last=Max("created_at"))
        .order_by("-n", "ip_address")[:TOP]
    )
    return [Ranked(str(row["ip_address"]), row["n"], row["last"]) for row in rows]


def _reuse_recent(in_window: QuerySet[AuditLog]) -> list[ReuseDetection]:
    events = (
        in_window.filter(action=actions.REFRESH_REUSE)
        .order_by("-created_at", "-id")
        .only("id", "created_at", "user_id", "ip_address", "metadata")[:TOP]
    )
    return [
        ReuseDetection(
            event_id=event.pk,
            created_at=event.created_at,
            user_id=event.user_id,
            ip_address=event.ip_address,
            family_id=str((event.metadata or {}).get("family_id") or ""),
            revoked=_int_or_none((event.metadata or {}).get("revoked")),
        )
        for event in events
    ]


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _current_lockouts(now: datetime) -> tuple[list[CurrentLockout], str]:
    """The subjects of the last window's lockout events that are still locked."""
    if conf.LOCKOUT_THRESHOLD <= 0:
        return [], ""
    events = (
        AuditLog.objects.filter(action=actions.LOCKOUT, created_at__gte=now - conf.LOCKOUT_WINDOW)
        .order_by("-created_at", "-id")
        .only("created_at", "ip_address", "metadata", "resource")[: MAX_LOCKOUTS * 4]
    )
    framework = AuthFramework()
    found: list[CurrentLockout] = []
    seen: set[tuple[str, str]] = set()
    try:
        for event in events:
            subject = _lockout_subject(event)
            if subject is None or subject[:2] in seen:
                continue
            seen.add(subject[:2])
            kind, shown, username, ip_address = subject
            remaining = framework.lockout_remaining(username, ip_address)
            if remaining > 0:
                found.append(
                    CurrentLockout(kind, shown, username, ip_address, event.created_at, remaining)
                )
            if len(found) >= MAX_LOCKOUTS:
                break
    except AuthError as exc:
        # The counters' storage is down (or holds junk): say so, show the rest.
        return found, f"The lockout storage could not be read: {exc}"
    return found, ""


def _lockout_subject(event: AuditLog) -> tuple[str, str, str | None, str | None] | None:
    """``(kind, shown, username, ip_address)`` of a lockout event, from its scope."""
    metadata = event.metadata or {}
    scope = metadata.get("scope")
    if scope == "ip":
        if not event.ip_address:
            return None
        return "ip", address_subject(event.ip_address), None, event.ip_address
    username = metadata.get("username")
    if not isinstance(username, str) or not username:
        return None
    return "user", username, username, None


def storage_counts(now: datetime | None = None, *, cached: bool = False) -> list[StorageCounts]:
    """Active tokens and sessions of every ``AUTHFW["STORAGES"]`` alias.

    A database storage is counted with two queries on its tables (``statistics()`` would also
    count the whole audit log); any other storage reports its own ``statistics()``, which on
    Redis scans every token key: with ``cached``, that report is kept
    :data:`STATISTICS_CACHE_SECONDS` in Django's default cache, so that reloading the
    dashboard does not scan again. A storage that fails is listed with its error instead.
    """
    now = now or timezone.now()
    counted: list[StorageCounts] = []
    for alias in conf.STORAGES:
        try:
            storage = get_storage(alias)
            counted.append(_counts(alias, storage, now, cached))
        except (AuthError, DatabaseError, NotImplementedError) as exc:
            counted.append(StorageCounts(alias, "", None, None, error=str(exc) or repr(exc)))
    return counted


#: How long the dashboard keeps a non-database storage's ``statistics()``.
STATISTICS_CACHE_SECONDS = 60
_STATISTICS_KEY = "django_authfw:dashboard:statistics:{alias}"


def _counts(alias: str, storage: AuthStorage, now: datetime, cached: bool) -> StorageCounts:
    if isinstance(storage, DatabaseStorage):
        db = storage.using or router.db_for_read(Token)
        tokens = Token.objects.using(db).filter(revoked_at__isnull=True, expires_at__gt=now)
        backend = f"database ({db})"
        return StorageCounts(alias, backend, tokens.count(), storage.count_active_sessions())
    statistics, counted_at = (
        _statistics(alias, storage, now)
        if cached
        else (
            storage.statistics(),
            now,
        )
    )
    return StorageCounts(
        alias,
        statistics.get("backend", type(storage).__name__),
        statistics.get("active_tokens"),
        statistics.get("active_sessions"),
        counted_at=counted_at,
    )


def _statistics(
    alias: str, storage: AuthStorage, now: datetime
) -> tuple[StorageStatistics, datetime]:
    key = _STATISTICS_KEY.format(alias=alias)
    cache = caches[DEFAULT_CACHE_ALIAS]
    try:
        found = cache.get(key)
    except Exception:  # the cache is an optimisation: a broken one costs a fresh count
        found = None
    if found is not None:
        statistics, counted_at = found
        return statistics, counted_at
    statistics = storage.statistics()
    with contextlib.suppress(Exception):
        cache.set(key, (statistics, now), STATISTICS_CACHE_SECONDS)
    return statistics, now
