"""What the admin changelists need to stay fast on tables with millions of rows, and filters.

Django's changelist runs ``COUNT(*)`` on the filtered queryset for every page, a second one on
the whole table unless ``show_full_result_count`` is off, and ``SELECT DISTINCT`` date queries
for ``date_hierarchy``. On an audit log with millions of rows each of those reads the whole
table or index. Here:

* :class:`EstimatedCountPaginator`: on PostgreSQL an unfiltered list takes its size from the
  planner's estimate (``pg_class.reltuples``, kept fresh by autovacuum), and a filtered list is
  counted with a ``LIMIT``, so the count never reads more than ``max_exact_count`` rows.
* :class:`ProbingDateQuerySet`: the date hierarchy finds which years, months and days have rows
  with one index seek per period that has rows, instead of a ``SELECT DISTINCT`` scan.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

if TYPE_CHECKING:
    # django-stubs makes Paginator generic over its items; Django's class cannot be subscripted
    # at run time.
    _Paginator = Paginator[Any]
else:
    _Paginator = Paginator


class EstimatedCountPaginator(_Paginator):
    """A paginator whose count reads at most ``max_exact_count`` rows on PostgreSQL.

    An unfiltered queryset of a table the planner estimates at ``max_exact_count`` rows or more
    reports that estimate (``count_is_estimate``). A filtered one, or a small table, is counted
    exactly up to ``max_exact_count``; past that the count stops (``count_is_capped``) and the
    pages beyond it are not linked: narrow the list with the filters or the date hierarchy.
    The admin's pagination line says "about" or "more than" accordingly. Other databases count
    exactly.
    """

    max_exact_count = 10_000
    count_is_estimate = False
    count_is_capped = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        if connections[queryset.db].vendor != "postgresql":
            return super().count
        if not queryset.query.where:
            estimate = self._estimate(queryset)
            if estimate >= self.max_exact_count:
                self.count_is_estimate = True
                return estimate
        counted: int = queryset.order_by()[: self.max_exact_count + 1].count()
        if counted > self.max_exact_count:
            self.count_is_capped = True
            return self.max_exact_count
        return counted

    @staticmethod
    def _estimate(queryset: QuerySet[Any]) -> int:
        connection = connections[queryset.db]
        table = connection.ops.quote_name(queryset.model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table]
            )
            row = cursor.fetchone()
        # -1 (PostgreSQL 14+) means never analysed: treat as unknown.
        return int(row[0]) if row and row[0] is not None and row[0] > 0 else 0


_MAX_PERIODS = 400


class ProbingDateQuerySet(QuerySet[Any]):
    """A queryset whose ``datetimes()`` skips from period to period along the index.

    The admin's ``date_hierarchy`` asks for the distinct years (then months, then days) that
    have rows. ``SELECT DISTINCT date_trunc(...)`` reads every matching row; here each period
    found costs one ``ORDER BY field LIMIT 1`` from the start of the next period: an index seek
    (a "loose index scan"), so a year of rows costs at most 13 seeks whatever its size.
    """

    def datetimes(
        self, field_name: str, kind: Any, order: Any = "ASC", tzinfo: tzinfo | None = None
    ) -> Any:
        if kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order, tzinfo)
        zone = tzinfo or (timezone.get_current_timezone() if settings.USE_TZ else None)
        found: list[datetime] = []
        moment = self._first_from(field_name, None)
        while moment is not None:
            if len(found) >= _MAX_PERIODS:
                # Rows spread over centuries: let the database do it.
                return super().datetimes(field_name, kind, order, tzinfo)
            local = timezone.localtime(moment, zone) if zone is not None else moment
            start = _truncate(local, kind)
            found.append(start)
            moment = self._first_from(field_name, _next(start, kind))
        return found if order == "ASC" else found[::-1]

    def _first_from(self, field_name: str, start: datetime | None) -> datetime | None:
        queryset = self if start is None else self.filter(**{f"{field_name}__gte": start})
        first: datetime | None = (
            queryset.order_by(field_name).values_list(field_name, flat=True).first()
        )
        return first


def _truncate(moment: datetime, kind: str) -> datetime:
    naive = moment.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    if kind in ("year", "month"):
        naive = naive.replace(day=1)
    if kind == "year":
        naive = naive.replace(month=1)
    return _localize(naive, moment.tzinfo)


def _next(start: datetime, kind: str) -> datetime:
    naive = start.replace(tzinfo=None)
    if kind == "day":
        naive = (naive + timedelta(days=1)).replace(hour=0)
    elif kind == "month":
        naive = naive.replace(year=naive.year + naive.month // 12, month=naive.month % 12 + 1)
    else:
        naive = naive.replace(year=naive.year + 1)
    return _localize(naive, start.tzinfo)


def _localize(naive: datetime, zone: tzinfo | None) -> datetime:
    # Local midnight in the admin's time zone, as Django's own datetimes() truncates.
    if zone is None:
        return naive
    return timezone.make_aware(naive, zone)


class ChoicesFilter(admin.SimpleListFilter):
    """A filter with fixed choices: no ``SELECT DISTINCT`` over the table to list them."""

    # Not "choices": SimpleListFilter.choices() renders the links.
    options: tuple[tuple[str, str], ...] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, str], ...]:
        return self.options


class OutcomeFilter(ChoicesFilter):
    title = "outcome"
    parameter_name = "outcome"
    options = (("success", "Success"), ("failure", "Failure"))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "success":
            return queryset.filter(outcome=True)
        if self.value() == "failure":
            return queryset.filter(outcome=False)
        return queryset


class TokenStatusFilter(ChoicesFilter):
    """Active (neither revoked nor expired), expired (not revoked), revoked."""

    title = "status"
    parameter_name = "status"
    options = (("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked"))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True, expires_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


class ExpiryFilter(ChoicesFilter):
    """Sessions and key-value entries: not yet expired, or expired (awaiting cleanup)."""

    title = "expiry"
    parameter_name = "expiry"
    options = (("live", "Not expired"), ("expired", "Expired"))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "live":
            return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        return queryset
