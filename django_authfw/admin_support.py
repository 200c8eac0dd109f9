"""What the admin's pages and actions share: the framework they act through, how an action is
audited, user lookups, and the compact rendering of times."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .conf import conf
from .framework import AuthFramework

#: Metadata key saying where an action came from; "admin" for every admin action.
VIA_ADMIN = "admin"


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


def admin_audit_metadata(request: HttpRequest) -> dict[str, Any]:
    """What every admin action adds to its audit event: ``via`` and ``by`` (the staff member).

    The event's address and user agent are the staff member's (``RequestInfo.from_request``),
    and its resource names what was acted on.
    """
    return {"via": VIA_ADMIN, "by": request.user.get_username()}


def may_change_users(request: HttpRequest) -> bool:
    """Whether the staff member may change users: who may, may lift a lockout."""
    opts = get_user_model()._meta
    return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


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


def compact_time(moment: datetime | None) -> SafeString | str:
    """``Dec 01 09:17`` (this year) or ``2025-12-01 09:17``, in the admin's time zone, with the
    full time in a tooltip; ``-`` if None.

    Half the width of the admin's default format, and it may take two lines, so that a list
    of several times fits a 1400-pixel screen beside both sidebars.
    """
    if moment is None:
        return "-"
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    this_year = local.year == timezone.localtime().year
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z").strip(),
        # A line may break between the date and the time (when the list is short of width),
        # never inside the date.
        local.strftime("%b\u00a0%d %H:%M" if this_year else "%Y-%m-%d %H:%M"),
    )
