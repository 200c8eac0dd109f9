"""The admin for the database storage's tables: tokens, sessions, key-value entries, audit log.

Everything is read-only: rows change only through :class:`~django_authfw.AuthFramework`, so the
admin offers actions instead of edit forms (revoke tokens, end sessions, lift a lockout), each
going through the framework and audited the same way: ``metadata.via = "admin"``,
``metadata.by`` the staff member, the staff member's address and user agent, and a resource
naming what was acted on. The audit log cannot be added to, changed or deleted from the admin by
anyone, superusers included. Raw tokens are never stored; the admin shows the first characters
of a token's SHA-256 digest, enough to match it against a log line, and session ids (a session's
credential) the same way. A session id is never put in a page at all: the session pages address
a session by the SHA-256 of its id (``Session.id_digest``), see :class:`SessionAdmin`.

The audit log and its dashboard are in :mod:`django_authfw.admin_audit`. The changelists stay
fast on millions of rows (see :mod:`django_authfw.admin_lists`). Storages other than the
database (Redis, locmem) are not listed here; the dashboard counts their tokens and sessions.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from . import models
from .admin_audit import AuditLogAdmin
from .admin_lists import EstimatedCountPaginator, ExpiryFilter, TokenStatusFilter
from .admin_support import admin_audit_metadata, compact_time, database_framework
from .audit import REVOKE, token_resource
from .records import utcnow
from .request_info import RequestInfo
from .tokens import shown_prefix, shown_session_id

__all__ = ["AuditLogAdmin", "KVEntryAdmin", "SessionAdmin", "TokenAdmin", "preview_bytes"]

PREVIEW_LENGTH = 80
USER_AGENT_LENGTH = 40


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
else:
    _AnyModelAdmin = admin.ModelAdmin


class ReadOnlyAdmin(_AnyModelAdmin):
    """No add, no change form; rows change through actions only."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Facet counts are one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    class Media:
        css = {"all": ("django_authfw/admin.css",)}

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        """Only the list's own filters: Django allows any lookup on the model's columns in the
        query string, where a NUL, an address or a year out of range, or a broken regular
        expression was a server error and ``__regex`` ran any pattern over the table. Anything
        else is Django's 400 for a lookup it does not allow."""
        offered = {
            spec.parameter_name
            for spec in self.get_list_filter(request)
            if isinstance(spec, type) and issubclass(spec, admin.SimpleListFilter)
        }
        return lookup in offered


class TokenAdmin(ReadOnlyAdmin):
    list_display = (
        "token",
        "access_digest_prefix",
        "user",
        "created",
        "expires",
        "status",
        "revoked",
    )
    list_display_links = ("token",)
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

    @admin.display(description="token id", ordering="token_id")
    def token(self, obj: models.Token) -> str:
        # Not a secret, but long: its first characters, all of it in the tooltip.
        return format_html('<span title="{}">{}</span>', obj.token_id, shown_prefix(obj.token_id))

    @admin.display(description="access digest")
    def access_digest_prefix(self, obj: models.Token) -> str:
        return shown_prefix(obj.access_token)

    @admin.display(description="refresh token digest")
    def refresh_digest_prefix(self, obj: models.Token) -> str:
        return shown_prefix(obj.refresh_token) if obj.refresh_token else "-"

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: models.Token) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: models.Token) -> str:
        return compact_time(obj.expires_at)

    @admin.display(description="revoked at", ordering="revoked_at")
    def revoked(self, obj: models.Token) -> str:
        return compact_time(obj.revoked_at)

    @admin.display(description="status")
    def status(self, obj: models.Token) -> str:
        if obj.revoked_at is not None:
            return "Revoked"
        return "Expired" if obj.expires_at <= timezone.now() else "Active"

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[models.Token]) -> None:
        framework = database_framework()
        info = RequestInfo.from_request(request)
        now = utcnow()
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True).only("token_id", "user_id"):
            if framework.storage.revoke_token(token.token_id, at=now):
                revoked += 1
                # The shape of the framework's own revoke event, plus who did it.
                framework.audit(
                    REVOKE,
                    True,
                    user_id=str(token.user_id),
                    request_info=info,
                    resource=token_resource(token.token_id),
                    metadata={
                        **admin_audit_metadata(request),
                        "token_id": token.token_id,
                        "count": 1,
                    },
                )
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


#: The column by which the session pages address a session: the SHA-256 (hex) of its id.
SESSION_KEY_FIELD = "id_digest"
_SESSION_KEY = re.compile(r"[0-9a-f]{64}")


class SessionChangeList(ChangeList):
    """The session list: each row links to its page by the session's id digest."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A popup's link hands the opener the row's primary key unless told another field.
        if self.is_popup:
            self.to_field = SESSION_KEY_FIELD

    def url_for_result(self, result: Any) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=(quote(getattr(result, SESSION_KEY_FIELD)),),
            current_app=self.model_admin.admin_site.name,
        )


class SessionAdmin(ReadOnlyAdmin):
    """Sessions, addressed by the SHA-256 of their id, never by the id.

    A session id is the session's credential, and Django's admin puts a row's primary key in
    every link, checkbox and breadcrumb: anyone with ``view_session`` could have read every
    session's credential. Here the row link, the change page's address, the checkboxes and the
    action all use ``Session.id_digest`` instead; an address holding a session id is a 404
    (the credential is not accepted there either), and no filter or lookup on the id is
    allowed (``session_id__startswith`` would tell it character by character).
    """

    list_display = (
        "session_prefix",
        "user",
        "created",
        "last_used",
        "expires",
        "ip",
        "short_user_agent",
    )
    list_display_links = ("session_prefix",)
    list_filter = (ExpiryFilter,)
    list_select_related = ("user",)
    search_fields = (f"user__{get_user_model().USERNAME_FIELD}",)
    ordering = ("-last_accessed",)
    actions = ("end_sessions",)
    fields = (
        "session_prefix",
        "user",
        "created_at",
        "last_accessed",
        "expires_at",
        "ip",
        "user_agent",
        "pretty_data",
    )
    readonly_fields = fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Ending a session goes through the framework (audited); see the action.
        return False

    def has_end_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{models.Session._meta.app_label}.delete_session")

    # Addressing by id digest ------------------------------------------------------------------

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SessionChangeList

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> models.Session:
        """The session whose id digest is ``object_id``; :class:`Http404` for anything else,
        a session id included (Django's "does not exist" redirect would repeat it)."""
        if from_field not in (None, SESSION_KEY_FIELD) or not _SESSION_KEY.fullmatch(object_id):
            raise Http404("No such session.")
        session: models.Session | None = (
            self.get_queryset(request).filter(id_digest=object_id).first()
        )
        if session is None:
            raise Http404("No such session.")
        return session

    def to_field_allowed(self, request: HttpRequest, to_field: str) -> bool:
        return to_field == SESSION_KEY_FIELD

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        # A lookup on the id (session_id__startswith, pk__gt) would tell it bit by bit.
        if lookup.split(LOOKUP_SEP)[0] in ("session_id", "pk"):
            return False
        return bool(super().lookup_allowed(lookup, value, request))

    def action_checkbox(self, obj: models.Session) -> SafeString:
        # Django's checkbox, with the id digest as its value instead of the primary key.
        attrs = {
            "class": "action-select",
            "aria-label": format_html(_("Select this object for an action - {}"), str(obj)),
        }
        checkbox = forms.CheckboxInput(attrs, lambda value: False)
        return checkbox.render(helpers.ACTION_CHECKBOX_NAME, obj.id_digest)

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[models.Session], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """Map the checked id digests to their sessions before Django's ``response_action``
        selects ``queryset.filter(pk__in=checked)``; a value that is no digest of a session in
        the list (a session id, say) selects nothing."""
        checked = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if checked:
            digests = [value for value in checked if _SESSION_KEY.fullmatch(value)]
            ids = (
                list(queryset.filter(id_digest__in=digests).values_list("pk", flat=True))
                if digests
                else []
            )
            post = request.POST.copy()
            post.setlist(helpers.ACTION_CHECKBOX_NAME, ids)
            post._mutable = False
            # An immutable copy in place of the request's, as Django's own POST is.
            request.POST = post  # type: ignore[assignment]
        response: HttpResponse | None = super().response_action(request, queryset, *args, **kwargs)
        return response

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Sessions change through the framework only, audited in the audit log, so Django's
        # history of one is always empty (and its page names the row by primary key).
        raise Http404("Sessions have no admin history; see the audit log.")

    @admin.display(description="session")
    def session_prefix(self, obj: models.Session) -> str:
        # Not sortable: an order by id, against sessions of one's own, would hint at others'.
        return shown_session_id(obj.session_id)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: models.Session) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="last used", ordering="last_accessed")
    def last_used(self, obj: models.Session) -> str:
        return compact_time(obj.last_accessed)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: models.Session) -> str:
        return compact_time(obj.expires_at)

    @admin.display(description="IP address", ordering="ip_address")
    def ip(self, obj: models.Session) -> str:
        return obj.ip_address or "-"

    @admin.display(description="user agent")
    def short_user_agent(self, obj: models.Session) -> str:
        return _truncate(obj.user_agent, USER_AGENT_LENGTH)

    @admin.display(description="data")
    def pretty_data(self, obj: models.Session) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True))

    @admin.action(description="End selected sessions", permissions=["end"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[models.Session]) -> None:
        framework = database_framework()
        info = RequestInfo.from_request(request)
        metadata = admin_audit_metadata(request)
        ended = sum(
            framework.end_session(session_id, request_info=info, audit_metadata=metadata)
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


admin.site.register(models.Token, TokenAdmin)
admin.site.register(models.Session, SessionAdmin)
admin.site.register(models.KVEntry, KVEntryAdmin)
admin.site.register(models.AuditLog, AuditLogAdmin)
