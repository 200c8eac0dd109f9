"""The auth dashboard of the admin (``admin/django_authfw/auditlog/dashboard/``).

For the last hour, 24 hours, 7 days or 30 days: events over time (successes against failures),
events per action, the most failed usernames and addresses (each a link to the audit list,
filtered), current lockouts with a button that lifts each, refresh-token reuse detections,
tokens issued against revocations, and the active tokens and sessions of every storage alias.

Who may see the audit log (``view_auditlog``) may see the dashboard; who may change users may
lift a lockout, as with the audit list's action. The numbers come from
:mod:`django_authfw.dashboard_queries`, the charts from :mod:`django_authfw.admin_charts`.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import django
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.generic import TemplateView, View

from . import admin_charts, dashboard_queries
from .actions import LOGIN, REFRESH_REUSE, action_label
from .admin_charts import Serie
from .admin_support import may_change_users, usernames_for
from .conf import conf
from .dashboard_queries import USERNAME_PREFIX, Dashboard, Window
from .exceptions import AuthError

if TYPE_CHECKING:
    from .admin_audit import AuditLogAdmin


def dashboard_url(window: Window | str | None = None) -> str:
    """The dashboard's address, for ``window`` (a key) if given."""
    url = reverse("admin:django_authfw_auditlog_dashboard")
    key = window.key if isinstance(window, Window) else window
    return f"{url}?{urlencode({'window': key})}" if key else url


def audit_list_url(**filters: str) -> str:
    """The audit list filtered by ``filters`` (its filters' parameters)."""
    url = reverse("admin:django_authfw_auditlog_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


class _AdminPage:
    model_admin: AuditLogAdmin

    def check(self, request: HttpRequest) -> None:
        if not self.model_admin.has_view_permission(request):
            raise PermissionDenied


class DashboardView(_AdminPage, TemplateView):
    """The dashboard page; ``?window=1h|24h|7d|30d`` (default 24h)."""

    template_name = "admin/django_authfw/dashboard.html"
    model_admin: AuditLogAdmin = None  # type: ignore[assignment]  # set by as_view()

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.check(request)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        request = self.request
        asked = request.GET.get("window")
        window = dashboard_queries.window_named(asked)
        if asked and asked != window.key:
            messages.warning(
                request,
                # Cut: a link's text should not become a long message in the admin.
                f"There is no window {_shown(asked)!r}; showing the {window.label.lower()}. "
                f"Choose one of {', '.join(w.key for w in dashboard_queries.WINDOWS)}.",
            )
        began = time.perf_counter()
        data = dashboard_queries.build(window, cached_statistics=True)
        elapsed_ms = (time.perf_counter() - began) * 1000
        admin_site = self.model_admin.admin_site
        return {
            **super().get_context_data(**kwargs),
            **admin_site.each_context(request),
            "title": "Auth dashboard",
            "subtitle": window.label,
            "opts": self.model_admin.opts,
            "dashboard": data,
            "window": window,
            "windows": [
                {"window": w, "url": dashboard_url(w), "current": w == window}
                for w in dashboard_queries.WINDOWS
            ],
            "charts": _charts(data),
            "actions_table": _actions_table(data),
            "top_usernames": _ranked(data, "username"),
            "top_addresses": _ranked(data, "address"),
            "reuse_rows": _reuse_rows(data),
            "lockout_rows": [
                {**asdict(lockout), "minutes": math.ceil(lockout.remaining / 60)}
                for lockout in data.lockouts
            ],
            "lockout_enabled": conf.LOCKOUT_THRESHOLD > 0,
            "lockout_window_minutes": int(conf.LOCKOUT_WINDOW.total_seconds() // 60),
            "can_lift": may_change_users(request),
            "lift_url": reverse("admin:django_authfw_auditlog_dashboard_lift"),
            "failed_logins_url": audit_list_url(
                action=LOGIN, outcome="failure", since=data.start.isoformat()
            ),
            "reuse_url": audit_list_url(action=REFRESH_REUSE, since=data.start.isoformat()),
            "lockouts_url": audit_list_url(action="lockout"),
            "audit_url": audit_list_url(),
            "elapsed_ms": elapsed_ms,
            "audit_elsewhere": bool(conf.AUDIT_STORAGE) or not conf.ENABLE_AUDIT_LOG,
            # The admin's breadcrumbs became an ordered list in Django 6.0.
            "breadcrumbs_as_list": django.VERSION >= (6, 0),
        }


class LiftLockoutView(_AdminPage, View):
    """``POST`` ``kind`` (``user`` or ``ip``), ``value``: lift that lockout, then go back."""

    model_admin: AuditLogAdmin = None  # type: ignore[assignment]  # set by as_view()
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        from .admin_audit import lift

        self.check(request)
        if not may_change_users(request):
            raise PermissionDenied
        back = dashboard_url(dashboard_queries.window_named(request.POST.get("window")))
        kind, value = request.POST.get("kind", ""), request.POST.get("value", "").strip()
        subject = _subject(kind, value)
        if subject is None:
            messages.error(
                request,
                "Nothing was lifted: give kind 'user' with a username, or kind 'ip' with an "
                "IP address.",
            )
            return HttpResponseRedirect(back)
        username, ip_address = subject
        try:
            cleared = lift(request, username=username, ip_address=ip_address)
        except AuthError as exc:
            messages.error(request, f"The lockout of {value} could not be lifted: {exc}")
            return HttpResponseRedirect(back)
        messages.success(
            request, f"Lifted the lockout of {value}; {cleared} failure counter(s) cleared."
        )
        return HttpResponseRedirect(back)


def _subject(kind: str, value: str) -> tuple[str | None, str | None] | None:
    if not value or len(value) > 255 or "\x00" in value:
        return None
    if kind == "user":
        return value, None
    if kind == "ip":
        try:
            return None, str(ipaddress.ip_address(value))
        except ValueError:
            return None
    return None


def _shown(asked: str, limit: int = 20) -> str:
    return asked if len(asked) <= limit else asked[: limit - 1] + "…"


def _count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def _charts(data: Dashboard) -> dict[str, Any]:
    series, window = data.series, data.window
    unit = per = window.unit
    events = admin_charts.stacked_bars(
        "authfw-chart-events",
        f"Auth events per {per}, {window.label.lower()}",
        f"{_count(data.success_total, 'success', 'successes')} and "
        f"{_count(data.failure_total, 'failure', 'failures')}. "
        + admin_charts.describe_peak(
            series.starts,
            [ok + failed for ok, failed in zip(series.success, series.failure, strict=True)],
            unit,
            "events",
        ),
        series.starts,
        unit,
        [
            Serie("Successes", "authfw-success", series.success),
            Serie("Failures", "authfw-failure", series.failure, hatched=True),
        ],
    )
    tokens = admin_charts.lines(
        "authfw-chart-tokens",
        f"Tokens issued and revocations per {per}, {window.label.lower()}",
        f"{_count(data.issued_total, 'token pair', 'token pairs')} issued and "
        f"{_count(data.revocations_total, 'revocation', 'revocations')}. "
        + admin_charts.describe_peak(series.starts, series.revocations, unit, "revocations"),
        series.starts,
        unit,
        [
            Serie("Issued", "authfw-issued", series.issued),
            Serie("Revocations", "authfw-revoked", series.revocations),
        ],
    )
    rows = [
        {
            "period": admin_charts.period_span(moment, unit),
            "success": series.success[i],
            "failure": series.failure[i],
            "issued": series.issued[i],
            "revocations": series.revocations[i],
        }
        for i, moment in enumerate(series.starts)
    ]
    return {"events": events, "tokens": tokens, "rows": rows}


def _actions_table(data: Dashboard) -> list[dict[str, Any]]:
    peak = max((a.total for a in data.actions), default=0)
    since = data.start.isoformat()
    return [
        {
            "label": action_label(a.action),
            "success": a.success,
            "failure": a.failure,
            "total": a.total,
            "url": audit_list_url(action=a.action, since=since),
            "bar": admin_charts.bar(
                a.success, peak, "authfw-success", second=a.failure, second_css="authfw-failure"
            ),
        }
        for a in data.actions
    ]


def _ranked(data: Dashboard, kind: str) -> list[dict[str, Any]]:
    rows = data.top_usernames if kind == "username" else data.top_addresses
    peak = max((r.count for r in rows), default=0)
    since = data.start.isoformat()
    shown = []
    for row in rows:
        if kind == "username":
            url = audit_list_url(
                action=LOGIN,
                outcome="failure",
                resource=f"{USERNAME_PREFIX}{row.value}",
                since=since,
            )
        else:
            url = audit_list_url(action=LOGIN, outcome="failure", ip=row.value, since=since)
        shown.append(
            {
                "value": row.value,
                "count": row.count,
                "last_seen": row.last_seen,
                "url": url,
                "bar": admin_charts.bar(row.count, peak, "authfw-failure"),
            }
        )
    return shown


def _reuse_rows(data: Dashboard) -> list[dict[str, Any]]:
    names = usernames_for({r.user_id for r in data.reuse_recent if r.user_id})
    return [
        {
            "at": r.created_at,
            "user": names.get(r.user_id or "") or r.user_id or "-",
            "ip_address": r.ip_address or "-",
            "family_id": r.family_id or "-",
            "revoked": r.revoked,
            "url": reverse("admin:django_authfw_auditlog_change", args=[r.event_id]),
        }
        for r in data.reuse_recent
    ]
