"""The admin for the database storage's tables: tokens, sessions, key-value entries, audit log.

Everything is read-only: rows change only through :class:`~django_authfw.AuthFramework`, so the
admin offers actions instead of edit forms (revoke tokens, end sessions, lift a lockout), each
going through the framework and audited. The audit log cannot be added to, changed or deleted
from the admin by anyone, superusers included. Raw tokens are never stored; the admin shows the
first characters of a token's SHA-256 digest, enough to match it against a log line.

The changelists stay fast on millions of rows (see :mod:`django_authfw.admin_lists`). Storages
other than the database (Redis, locmem) are not shown here; see docs/admin.md.
"""

from __future__ import annotations

import codecs
import ipaddress
import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from . import models
from .admin_lists import (
    ChoicesFilter,
    EstimatedCountPaginator,
    ExpiryFilter,
    OutcomeFilter,
    ProbingDateQuerySet,
    TokenStatusFilter,
)
from .audit import ACTIONS
from .conf import conf
from .framework import AuthFramework
from .records import utcnow
from .request_info import RequestInfo

DIGEST_PREFIX_LENGTH = 12
PREVIEW_LENGTH = 80
USER_AGENT_LENGTH = 60


def database_framework() -> AuthFramework:
    """The framework on the database storage these tables belong to.

    The first ``AUTHFW["STORAGES"]`` alias whose backend is ``DatabaseStorage`` (or a subclass),
    else a plain ``DatabaseStorage``: the admin acts on the rows it shows.
    """
    from django.utils.module_loading import import_string

    from .storage import DatabaseStorage

    for alias, config in conf.STORAGES.items():
        try:
            backend = import_string(config.get("BACKEND", ""))
        except ImportError:
            continue
        if isinstance(backend, type) and issubclass(backend, DatabaseStorage):
            return AuthFramework(alias)
    return AuthFramework(DatabaseStorage())


def _user_perm(request: HttpRequest, action: str) -> bool:
    opts = get_user_model()._meta
    return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def preview_bytes(value: bytes | memoryview | None, limit: int = PREVIEW_LENGTH) -> str:
    """A short, printable preview of a stored value; the admin escapes it on output.

    UTF-8 text shows as text with control characters escaped (``\\n``, ``\\x00``); anything
    else as hex bytes. Both are cut at ``limit`` characters, with an ellipsis.
    """
    if value is None:
        return ""
    data = bytes(value)
    head = data[: limit * 4]  # at most 4 bytes per character: enough for ``limit`` of them
    try:
        # Incremental: a character cut in half at the end of ``head`` is not an error.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=head == data)
    except UnicodeDecodeError:
        shown = data[: limit // 3]
        hexed = shown.hex(" ")
        return hexed + (" …" if len(data) > len(shown) else "")
    printable = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
    if len(printable) > limit or len(data) > len(head):
        return printable[: limit - 1] + "…"
    return printable


if TYPE_CHECKING:
    # django-stubs makes ModelAdmin generic over its model; Django's own class cannot be
    # subscripted at run time, so the parameter exists for the type checker only.
    _AnyModelAdmin = admin.ModelAdmin[Any]
    _AuditLogModelAdmin = admin.ModelAdmin[models.AuditLog]
else:
    _AnyModelAdmin = _AuditLogModelAdmin = admin.ModelAdmin


class ReadOnlyAdmin(_AnyModelAdmin):
    """No add, no change form; rows change through actions only."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Facet counts are one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TokenAdmin(ReadOnlyAdmin):
    list_display = (
        "token_id",
        "access_digest_prefix",
        "user",
        "created_at",
        "expires_at",
        "status",
        "revoked_at",
    )
    list_filter = (TokenStatusFilter,)
    list_select_related = ("user",)
    search_fields = (f"user__{get_user_model().USERNAME_FIELD}",)
    ordering = ("-created_at",)
    actions = ("revoke_tokens",)
    fields = (
        "token_id",
        "user",
        "token_type",
        "access_digest_prefix",
        "refresh_digest_prefix",
        "family_id",
        "created_at",
        "updated_at",
        "expires_at",
        "refresh_expires_at",
        "revoked_at",
        "replaced_by",
        "permissions",
        "roles",
        "metadata",
    )
    readonly_fields = fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Revoke, do not delete: a deleted token's refresh could no longer be caught as reuse.
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{models.Token._meta.app_label}.change_token")

    @admin.display(description="access token digest")
    def access_digest_prefix(self, obj: models.Token) -> str:
        return obj.access_token[:DIGEST_PREFIX_LENGTH] + "…"

    @admin.display(description="refresh token digest")
    def refresh_digest_prefix(self, obj: models.Token) -> str:
        return obj.refresh_token[:DIGEST_PREFIX_LENGTH] + "…" if obj.refresh_token else "-"

    @admin.display(description="status")
    def status(self, obj: models.Token) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        return "expired" if obj.expires_at <= timezone.now() else "active"

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[models.Token]) -> None:
        framework = database_framework()
        info = RequestInfo.from_request(request)
        now = utcnow()
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True).only("token_id", "user_id"):
            if framework.storage.revoke_token(token.token_id, at=now):
                revoked += 1
                framework.audit(
                    "revoke",
                    True,
                    user_id=str(token.user_id),
                    request_info=info,
                    resource=f"token:{token.token_id}",
                    metadata={"via": "admin", "by": request.user.get_username()},
                )
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


class SessionAdmin(ReadOnlyAdmin):
    list_display = (
        "session_id",
        "user",
        "created_at",
        "last_accessed",
        "expires_at",
        "ip_address",
        "short_user_agent",
    )
    list_filter = (ExpiryFilter,)
    list_select_related = ("user",)
    search_fields = (f"user__{get_user_model().USERNAME_FIELD}",)
    ordering = ("-last_accessed",)
    actions = ("end_sessions",)
    fields = (
        "session_id",
        "user",
        "created_at",
        "last_accessed",
        "expires_at",
        "ip_address",
        "user_agent",
        "pretty_data",
    )
    readonly_fields = fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Ending a session goes through the framework (audited); see the action.
        return False

    def has_end_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{models.Session._meta.app_label}.delete_session")

    @admin.display(description="user agent")
    def short_user_agent(self, obj: models.Session) -> str:
        return _truncate(obj.user_agent, USER_AGENT_LENGTH)

    @admin.display(description="data")
    def pretty_data(self, obj: models.Session) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True))

    @admin.action(description="End selected sessions", permissions=["end"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[models.Session]) -> None:
        framework = database_framework()
        ended = sum(
            framework.end_session(session_id)
            for session_id in queryset.values_list("session_id", flat=True)
        )
        self.message_user(request, f"Ended {ended} session(s).", messages.SUCCESS)


class KVEntryAdmin(ReadOnlyAdmin):
    list_display = ("key", "value_preview", "size", "created_at", "expires_at")
    list_filter = (ExpiryFilter,)
    search_fields = ("^key",)
    ordering = ("key",)
    fields = ("key", "value_preview", "size", "created_at", "expires_at")
    readonly_fields = fields

    @admin.display(description="value")
    def value_preview(self, obj: models.KVEntry) -> str:
        return preview_bytes(obj.value)

    @admin.display(description="bytes")
    def size(self, obj: models.KVEntry) -> int:
        return len(bytes(obj.value))


def _audit_action_choices() -> tuple[tuple[str, str], ...]:
    # The framework's own actions; a fixed list, so no SELECT DISTINCT over the log.
    return tuple((name, name.replace("_", " ")) for name in sorted(ACTIONS))


class ActionFilter(ChoicesFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, str], ...]:
        return _audit_action_choices()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(action=self.value())
        return queryset


class AuditChangeList(ChangeList):
    """Resolves the usernames of one page's events in a single query."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        names = usernames_for({row.user_id for row in rows if row.user_id})
        for row in rows:
            row.authfw_username = names.get(row.user_id or "")


def usernames_for(user_ids: set[str]) -> dict[str, str]:
    """Map user ids (pk strings, as records carry them) to usernames; unknown ids are left out."""
    model = get_user_model()
    pk_field = model._meta.pk
    assert pk_field is not None  # every concrete model has one
    valid: dict[Any, str] = {}
    for user_id in user_ids:
        try:
            valid[pk_field.to_python(user_id)] = user_id
        except ValidationError:
            continue
    if not valid:
        return {}
    return {
        valid[pk]: name
        for pk, name in model._default_manager.filter(pk__in=valid).values_list(
            "pk", model.USERNAME_FIELD
        )
        if pk in valid
    }


class AuditLogAdmin(_AuditLogModelAdmin):
    """The audit log, read-only for everyone; "Lift lockout" resets failed-login counters."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    date_hierarchy = "created_at"
    list_display = ("created_at", "action", "outcome_label", "who", "ip_address", "resource")
    list_filter = (ActionFilter, OutcomeFilter)
    search_fields = ("user_id",)  # the search box; the lookups are in get_search_results()
    search_help_text = "An exact user id, username or IP address."
    actions = ("lift_lockout",)
    fields = (
        "event_id",
        "created_at",
        "action",
        "outcome",
        "user_id",
        "who",
        "resource",
        "ip_address",
        "user_agent",
        "pretty_metadata",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.AuditLog]:
        queryset = super().get_queryset(request)
        return ProbingDateQuerySet(model=queryset.model, query=queryset.query, using=queryset.db)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # Exact matches only, each one simple condition the planner can serve from an index
        # ordered by time: a LIKE over millions of rows is a scan, an IP "contains" needs a
        # cast that defeats the inet index on PostgreSQL, and an OR of unrelated columns makes
        # the planner walk the whole created_at index when nothing matches.
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            address = str(ipaddress.ip_address(term))
        except ValueError:
            pass
        else:
            return queryset.filter(ip_address=address), False
        model = get_user_model()
        user_ids = [
            str(pk)
            for pk in model._default_manager.filter(
                **{f"{model.USERNAME_FIELD}__iexact": term}
            ).values_list("pk", flat=True)[:20]
        ]
        if not user_ids:
            return queryset.filter(user_id=term), False
        return queryset.filter(user_id__in=[term, *user_ids]), False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_lift_lockout_permission(self, request: HttpRequest) -> bool:
        # Unlocking concerns accounts: whoever may change users may lift a lockout.
        return _user_perm(request, "change")

    @admin.display(description="outcome", ordering="outcome")
    def outcome_label(self, obj: models.AuditLog) -> str:
        return "success" if obj.outcome else "failure"

    @admin.display(description="user")
    def who(self, obj: models.AuditLog) -> str:
        username: str | None
        if hasattr(obj, "authfw_username"):  # resolved for the whole page by AuditChangeList
            username = obj.authfw_username
        else:
            username = usernames_for({obj.user_id}).get(obj.user_id) if obj.user_id else None
        attempted = (obj.metadata or {}).get("username")
        if username:
            return username
        if attempted:
            return f"{attempted} (attempted)"
        return obj.user_id or "-"

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
        framework = AuthFramework()
        cleared = sum(
            framework.reset_lockout(username=username, ip_address=ip) for username, ip in targets
        )
        self.message_user(
            request,
            f"Lifted the lockout of {len(targets)} username/IP pair(s); "
            f"{cleared} failure counter(s) cleared.",
            messages.SUCCESS,
        )


admin.site.register(models.Token, TokenAdmin)
admin.site.register(models.Session, SessionAdmin)
admin.site.register(models.KVEntry, KVEntryAdmin)
admin.site.register(models.AuditLog, AuditLogAdmin)
