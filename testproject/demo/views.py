"""The demo page and the protected endpoint it calls."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from django_authfw.conf import conf
from django_authfw.decorators import bearer_required


def _storage_label() -> str:
    backend = conf.STORAGES.get("default", {}).get("BACKEND", "?")
    if backend.endswith("DatabaseStorage"):
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        return f"the database ({engine})"
    cache = conf.STORAGES["default"].get("OPTIONS", {}).get("cache", "default")
    cache_backend = str(settings.CACHES[cache]["BACKEND"])
    return f"the cache {cache!r} ({cache_backend.rsplit('.', 1)[-1]})"


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """A page that walks through register, log in, a protected call, refresh and log out."""
    return render(request, "demo/index.html", {"token_storage": _storage_label()})


@require_GET
@bearer_required
def me(request: HttpRequest) -> JsonResponse:
    """A protected endpoint: who the Bearer token belongs to."""
    record = request.auth  # type: ignore[attr-defined]
    return JsonResponse(
        {
            "user_id": str(request.user.pk),
            "username": request.user.get_username(),
            "token_expires_at": record.expires_at.isoformat(),
        }
    )
