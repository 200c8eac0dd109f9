"""The audit log in the admin: a read-only list with words for codes, its search, the lift-lockout
action, and the auth dashboard (:mod:`django_authfw.admin_dashboard`) at ``dashboard/``.

Search: on PostgreSQL the box matches words of an event's action, resource, user agent and
metadata values (full-text, :mod:`django_authfw.audit_search`), besides an exact user id or
username; an IP address matches that address exactly. Elsewhere it takes exact values only.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.db import router
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html

from . import audit_search, models
from .actions import LABELS, LOCKOUT, LOGIN, action_label, outcome_label
from .admin_lists import ChoicesFilter, EstimatedCountPaginator, OutcomeFilter, ProbingDateQuerySet
from .admin_support import (
    admin_audit_metadata,
    compact_time,
    may_change_users,
    usernames_for,
)
from .exceptions import AuthError
from .framework import AuthFramework
from .request_info import RequestInfo

if TYPE_CHECKING:
    _AuditLogModelAdmin = admin.ModelAdmin[models.AuditLog]
else:
    _AuditLogModelAdmin = admin.ModelAdmin

#: The length of the audit log's ``action`` column.
ACTION_MAX_LENGTH = models.AuditLog._meta.get_field("action").max_length or 100
#: The longest search term taken (a long user agent is a few hundred characters).
MAX_SEARCH_LENGTH = 2000
#: Actions whose events carry the username someone tried (``metadata.username``).
_ATTEMPTS = frozenset({LOGIN, LOCKOUT})


def action_choices() -> tuple[tuple[str, str], ...]:
    """The framework's actions with their labels, by label: a fixed list, no ``SELECT
    DISTINCT`` over the log."""
    return tuple(sorted(LABELS.items(), key=lambda item: item[1]))


class ActionFilter(ChoicesFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, str], ...]:
        return action_choices()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        # Any action may be asked for (the dashboard links custom ones too), but not one the
        # column cannot hold: PostgreSQL refuses a NUL in a query, a server error otherwise.
        if len(value) > ACTION_MAX_LENGTH or "\x00" in value:
            raise IncorrectLookupParameters("not an action")
        return queryset.filter(action=value)


class ValueFilter(admin.SimpleListFilter):
    """A filter set by a link (the dashboard's), shown in the sidebar only while it is set.

    The value is checked by :meth:`clean`; a bad one is the admin's usual "invalid lookup"
    message (``?e=1``), never a server error.
    """

    def clean(self, value: str) -> Any:
        return value

    def condition(self, value: Any) -> Q:
        raise NotImplementedError

    def shown(self, value: Any) -> str:
        return str(value)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, self.shown(self._cleaned(value)))] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(self.condition(self._cleaned(value)))

    def _cleaned(self, value: str) -> Any:
        try:
            return self.clean(value)
        except ValueError as exc:
            raise IncorrectLookupParameters(str(exc)) from exc


class ResourceFilter(ValueFilter):
    title = "resource"
    parameter_name = "resource"

    def clean(self, value: str) -> str:
        if len(value) > 255 or "\x00" in value:
            raise ValueError("not a resource")
        return value

    def condition(self, value: str) -> Q:
        return Q(resource=value)


class AddressFilter(ValueFilter):
    title = "IP address"
    parameter_name = "ip"

    def clean(self, value: str) -> str:
        return str(ipaddress.ip_address(value))

    def condition(self, value: str) -> Q:
        return Q(ip_address=value)


class SinceFilter(ValueFilter):
    title = "since"
    parameter_name = "since"

    def clean(self, value: str) -> datetime:
        moment = parse_datetime(value)
        if moment is None or moment.tzinfo is None:
            raise ValueError("not an ISO 8601 time with an offset")
        try:
            # Year 1 at +01:00 or year 9999 at -01:00 is a year out of range in UTC (as the
            # database gets it) or in the admin's zone (as the filter is shown).
            moment.astimezone(UTC)
            timezone.localtime(moment)
        except OverflowError as exc:
            raise ValueError("a time out of range") from exc
        return moment

    def condition(self, value: datetime) -> Q:
        return Q(created_at__gte=value)

    def shown(self, value: datetime) -> str:
        return f"Since {timezone.localtime(value):%Y-%m-%d %H:%M}"


def _address(term: str) -> str | None:
    """The IP address a search term is, canonical; None if it is not one."""
    try:
        return str(ipaddress.ip_address(term.strip()))
    except ValueError:
        return None


class AuditChangeList(ChangeList):
    """Resolves the usernames of one page's events in a single query; no date hierarchy
    while a full-text search is on."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        names = usernames_for({row.user_id for row in rows if row.user_id})
        for row in rows:
            row.authfw_username = names.get(row.user_id or "")
        if (
            _address(self.query) is None
            and self.query.strip()
            and audit_search.available(self.queryset.db)
        ):
            # The date hierarchy asks for the first and last event (MIN, MAX, and one
            # ORDER BY ... LIMIT 1 per period). With a full-text condition the planner may
            # answer those by walking the log in time order and computing the vector of
            # every event it passes: seconds on a million events, for a word that occurs
            # once. A date chosen before the search still filters (the lookups were applied
            # above); only the drill-down bar is left out.
            self.date_hierarchy = None


class AuditLogAdmin(_AuditLogModelAdmin):
    """The audit log, read-only for everyone; "Lift lockout" resets failed-login counters."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    date_hierarchy = "created_at"
    list_display = ("when", "action_name", "outcome_name", "who", "ip", "resource")
    list_display_links = ("when",)
    list_filter = (ActionFilter, OutcomeFilter, ResourceFilter, AddressFilter, SinceFilter)
    search_fields = ("user_id",)  # the search box; the lookups are in get_search_results()
    actions = ("lift_lockout",)
    change_list_template = "admin/django_authfw/auditlog/change_list.html"

    class Media:
        css = {"all": ("django_authfw/admin.css",)}

    fields = (
        "event_id",
        "created_at",
        "action_name",
        "outcome_name",
        "user_id",
        "who",
        "resource",
        "ip",
        "user_agent",
        "pretty_metadata",
    )
    readonly_fields = fields

    @property
    def search_help_text(self) -> str:  # type: ignore[override]
        # Read by the changelist on each request; what the box takes depends on the database.
        if audit_search.available(router.db_for_read(models.AuditLog)):
            return (
                "Words of an event (its user id, action, resource, user agent or metadata "
                "values; every word must occur), a username, or an IP address."
            )
        return "An exact user id, username or IP address."

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.AuditLog]:
        queryset = super().get_queryset(request)
        return ProbingDateQuerySet(model=queryset.model, query=queryset.query, using=queryset.db)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # Each search is one condition the planner serves from an index: an address from
        # (ip_address, created_at); on PostgreSQL words and user ids from the GIN index of
        # the full-text vector; elsewhere a user from (user_id, created_at). A LIKE over
        # millions of rows is a scan, and an IP "contains" needs a cast that defeats the inet
        # index on PostgreSQL.
        term = search_term.strip()
        if not term:
            return queryset, False
        if len(term) > MAX_SEARCH_LENGTH:
            # Tens of thousands of words make a tsquery that PostgreSQL cannot evaluate
            # ("stack depth limit exceeded"): the admin's "invalid lookup" message instead.
            raise IncorrectLookupParameters("search term too long")
        address = _address(term)
        if address is not None:
            return queryset.filter(ip_address=address), False
        model = get_user_model()
        user_ids = [
            str(pk)
            for pk in model._default_manager.filter(
                **{f"{model.USERNAME_FIELD}__iexact": term}
            ).values_list("pk", flat=True)[:20]
        ]
        if audit_search.available(queryset.db):
            # One condition for the GIN index: the words, or the user ids as words.
            return queryset.filter(audit_search.search_condition(term, user_ids)), False
        exact = Q(user_id__in=[term, *user_ids]) if user_ids else Q(user_id=term)
        return queryset.filter(exact), False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_lift_lockout_permission(self, request: HttpRequest) -> bool:
        # Unlocking concerns accounts: whoever may change users may lift a lockout.
        return may_change_users(request)

    def get_urls(self) -> list[URLPattern]:
        from .admin_dashboard import DashboardView, LiftLockoutView

        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path(
                "dashboard/",
                wrap(DashboardView.as_view(model_admin=self)),
                name=f"{prefix}_dashboard",
            ),
            path(
                "dashboard/lift/",
                wrap(LiftLockoutView.as_view(model_admin=self)),
                name=f"{prefix}_dashboard_lift",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="time", ordering="created_at")
    def when(self, obj: models.AuditLog) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="action", ordering="action")
    def action_name(self, obj: models.AuditLog) -> str:
        return action_label(obj.action)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_name(self, obj: models.AuditLog) -> str:
        return format_html(
            '<span class="authfw-outcome authfw-{}">{}</span>',
            "success" if obj.outcome else "failure",
            outcome_label(obj.outcome),
        )

    @admin.display(description="IP address", ordering="ip_address")
    def ip(self, obj: models.AuditLog) -> str:
        return obj.ip_address or "-"

    @admin.display(description="user")
    def who(self, obj: models.AuditLog) -> str:
        username: str | None
        if hasattr(obj, "authfw_username"):  # resolved for the whole page by AuditChangeList
            username = obj.authfw_username
        else:
            username = usernames_for({obj.user_id}).get(obj.user_id) if obj.user_id else None
        named = (obj.metadata or {}).get("username")
        if username:
            return username
        if named and obj.action in _ATTEMPTS:
            return f"{named} (attempted)"
        return named or obj.user_id or "-"

    @admin.display(description="metadata")
    def pretty_metadata(self, obj: models.AuditLog) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.metadata, indent=2, sort_keys=True))

    @admin.action(
        description="Lift lockout of the selected events' usernames and IPs",
        permissions=["lift_lockout"],
    )
    def lift_lockout(self, request: HttpRequest, queryset: QuerySet[models.AuditLog]) -> None:
        targets: set[tuple[str | None, str | None]] = set()
        for event in queryset.only("user_id", "ip_address", "metadata"):
            username = (event.metadata or {}).get("username") or usernames_for(
                {event.user_id} if event.user_id else set()
            ).get(event.user_id or "")
            if username or event.ip_address:
                targets.add((username, event.ip_address))
        try:
            cleared = sum(
                lift(request, username=username, ip_address=ip) for username, ip in targets
            )
        except AuthError as exc:
            self.message_user(request, f"The lockout could not be lifted: {exc}", messages.ERROR)
            return
        self.message_user(
            request,
            f"Lifted the lockout of {len(targets)} username/IP pair(s); "
            f"{cleared} failure counter(s) cleared.",
            messages.SUCCESS,
        )


def lift(request: HttpRequest, *, username: str | None, ip_address: str | None) -> int:
    """Lift a lockout from the admin, audited as every admin action is (``unlock``)."""
    return AuthFramework().reset_lockout(
        username=username,
        ip_address=ip_address,
        request_info=RequestInfo.from_request(request),
        audit_metadata=admin_audit_metadata(request),
    )
