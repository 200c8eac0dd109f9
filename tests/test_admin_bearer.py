"""A Bearer token does not open the Django admin (issue 10 item 3).

The admin authenticates with a session cookie and CSRF. Before ``BEARER_EXEMPT_NAMESPACES``
the middleware authenticated every path, so a superuser's access token alone, with no session,
opened the admin and could change data there (the CSRF token comes with any admin page). These
tests drive it over real HTTP as an attacker holding only the token would.
"""

from __future__ import annotations

import http.cookies
import re
import urllib.parse
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client
from django.urls import include, path

from django_authfw import AuthFramework
from django_authfw.checks import check_bearer_exempt_namespaces
from django_authfw.decorators import bearer_exempt

from .factories import PASSWORD
from .http_support import fast_hashing, user_factory
from .test_live_http import Http, Reply

__all__ = ["fast_hashing", "user_factory"]

# A second admin site under another instance name and prefix: its application namespace is
# still "admin", so the default setting covers it without knowing where it is mounted.
backoffice = admin.AdminSite(name="backoffice")
backoffice.register(get_user_model())


@bearer_exempt
def cookie_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"auth": request.auth is not None, "user": request.user.is_authenticated}  # type: ignore[attr-defined]
    )


def plain_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"auth": request.auth is not None, "user": request.user.is_authenticated}  # type: ignore[attr-defined]
    )


def _urlpatterns() -> list[Any]:
    from testproject.urls import urlpatterns

    return [
        path("backoffice/", backoffice.urls),
        # The admin's views again, included with no namespace at all.
        path("bare-admin/", include(admin.site.get_urls())),
        path("cookie-only/", cookie_view),
        path("plain/", plain_view),
        *urlpatterns,
    ]


urlpatterns = _urlpatterns()


@pytest.fixture
def web(live_server: Any, fast_hashing: None, settings: Any) -> Http:
    settings.ROOT_URLCONF = __name__
    return Http(live_server.url)


@pytest.fixture
def root_token(user_factory: Any) -> str:
    user_factory(username="root", is_staff=True, is_superuser=True)
    return AuthFramework().authenticate("root", PASSWORD).access_token


def _get(web: Http, url: str, token: str | None = None, cookie: str | None = None) -> Reply:
    headers: list[tuple[str | bytes, str | bytes]] = []
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    if cookie is not None:
        headers.append(("Cookie", cookie))
    return web.send("GET", url, None, headers)


def _csrf(web: Http, prefix: str) -> tuple[str, str]:
    """A CSRF cookie and form token, as anyone gets them from the admin login page."""
    reply = _get(web, f"/{prefix}/login/")
    cookies = http.cookies.SimpleCookie()
    for header in reply.headers.get_all("Set-Cookie") or []:
        cookies.load(header)
    found = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', reply.raw)
    assert found is not None
    return cookies["csrftoken"].value, found.group(1).decode()


def _delete_user(web: Http, prefix: str, token: str, victim_pk: Any) -> Reply:
    cookie, form_token = _csrf(web, prefix)
    body = urllib.parse.urlencode({"csrfmiddlewaretoken": form_token, "post": "yes"}).encode()
    headers: list[tuple[str | bytes, str | bytes]] = [
        ("Authorization", f"Bearer {token}"),
        ("Cookie", f"csrftoken={cookie}"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Referer", "http://127.0.0.1/"),
    ]
    return web.send("POST", f"/{prefix}/auth/user/{victim_pk}/delete/", body, headers)


def _is_login_redirect(reply: Reply, prefix: str) -> bool:
    return reply.status == 302 and reply.headers["Location"].startswith(f"/{prefix}/login/")


@pytest.mark.parametrize("prefix", ["admin", "backoffice"])
def test_superuser_token_alone_gets_the_admin_login(
    web: Http, root_token: str, user_factory: Any, prefix: str
) -> None:
    victim = user_factory(username="victim")
    for url in (f"/{prefix}/", f"/{prefix}/auth/user/", f"/{prefix}/auth/user/{victim.pk}/change/"):
        assert _is_login_redirect(_get(web, url, token=root_token), prefix), url
    # A junk or revoked Bearer header is ignored there too: the admin is not ours to refuse.
    assert _is_login_redirect(_get(web, f"/{prefix}/", token="junk value"), prefix)


@pytest.mark.parametrize("prefix", ["admin", "backoffice"])
def test_superuser_token_alone_cannot_change_data_in_the_admin(
    web: Http, root_token: str, user_factory: Any, prefix: str
) -> None:
    victim = user_factory(username="victim")
    reply = _delete_user(web, prefix, root_token, victim.pk)
    assert _is_login_redirect(reply, prefix), (reply.status, reply.raw[:200])
    assert get_user_model().objects.filter(pk=victim.pk).exists()


def test_admin_mounted_without_a_namespace_is_skipped_too(
    web: Http, root_token: str, user_factory: Any, settings: Any
) -> None:
    # include(site.get_urls()) has no namespace: the views are still the admin's, session-based.
    victim = user_factory(username="victim")
    for url in ("/bare-admin/", "/bare-admin/auth/user/", f"/bare-admin/auth/user/{victim.pk}/"):
        reply = _get(web, url, token=root_token)
        assert reply.status == 302, (url, reply.status)
        assert "/login/" in reply.headers["Location"], (url, reply.status)
    # Listing the site by name covers it too; a list without it does not.
    settings.AUTHFW = {**settings.AUTHFW, "BEARER_EXEMPT_NAMESPACES": ["backoffice"]}
    assert _get(web, "/bare-admin/", token=root_token).status == 200


def test_no_exemptions_restores_the_old_behaviour(
    web: Http, root_token: str, user_factory: Any, settings: Any
) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "BEARER_EXEMPT_NAMESPACES": []}
    reply = _get(web, "/admin/", token=root_token)
    assert reply.status == 200
    assert b"Site administration" in reply.raw
    victim = user_factory(username="victim")
    reply = _delete_user(web, "admin", root_token, victim.pk)
    assert reply.status == 302
    assert not reply.headers["Location"].startswith("/admin/login/")
    assert not get_user_model().objects.filter(pk=victim.pk).exists()


def test_other_views_still_take_bearer_tokens(web: Http, root_token: str) -> None:
    reply = _get(web, "/api/me/", token=root_token)
    assert reply.status == 200
    assert reply.json["username"] == "root"
    assert _get(web, "/plain/", token=root_token).json == {"auth": True, "user": True}
    assert _get(web, "/plain/", token="junk value").status == 400


def test_bearer_exempt_view_ignores_the_header(web: Http, root_token: str) -> None:
    assert _get(web, "/cookie-only/", token=root_token).json == {"auth": False, "user": False}
    reply = _get(web, "/cookie-only/", token="junk value")
    assert reply.status == 200
    assert reply.json == {"auth": False, "user": False}


def test_listed_namespace_by_instance_name(web: Http, root_token: str, settings: Any) -> None:
    # Naming one site's instance namespace exempts that site only.
    settings.AUTHFW = {**settings.AUTHFW, "BEARER_EXEMPT_NAMESPACES": ["backoffice"]}
    assert _is_login_redirect(_get(web, "/backoffice/", token=root_token), "backoffice")
    assert _get(web, "/admin/", token=root_token).status == 200


def test_admin_session_still_works_with_a_bearer_header(
    client: Client, user_factory: Any, settings: Any
) -> None:
    settings.ROOT_URLCONF = __name__
    client.force_login(user_factory(username="staff", is_staff=True, is_superuser=True))
    # A browser extension or proxy adding a stale token must not lock the admin out.
    response = client.get("/admin/", HTTP_AUTHORIZATION="Bearer afw_at_" + "Q" * 43)
    assert response.status_code == 200


class TenantRouting:
    """A later middleware that routes ``/tenant/...`` to another URLconf, as tenant or host
    routing does: the Bearer middleware resolved the path before it and found no admin."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        if request.path_info.startswith("/tenant/"):
            # Django accepts any object with ``urlpatterns`` here; django-stubs types it as str.
            request.urlconf = TenantURLs  # type: ignore[assignment]
        return self.get_response(request)


class TenantURLs:
    urlpatterns = [path("tenant/admin/", admin.site.urls), path("tenant/plain/", plain_view)]


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_a_later_urlconf_switch_to_the_admin_is_skipped_too(
    root_token: str, settings: Any, client_class: Any
) -> None:
    settings.ROOT_URLCONF = __name__
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.TenantRouting"]
    auth = {"Authorization": f"Bearer {root_token}"}

    def get(url: str) -> Any:
        if client_class is AsyncClient:
            return async_to_sync(AsyncClient().get)(url, headers=auth)
        return Client().get(url, headers=auth)

    response = get("/tenant/admin/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]
    # Views of the switched URLconf that are not exempt still take the token.
    assert get("/tenant/plain/").json() == {"auth": True, "user": True}


def test_async_stack_skips_the_admin_too(root_token: str, settings: Any) -> None:
    settings.ROOT_URLCONF = __name__
    auth = {"Authorization": f"Bearer {root_token}"}

    async def scenario() -> None:
        client = AsyncClient()
        response = await client.get("/admin/", headers=auth)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
        response = await client.get("/plain/", headers=auth)
        assert response.json() == {"auth": True, "user": True}

    async_to_sync(scenario)()


@pytest.mark.parametrize("value", ["admin", ("admin", ""), [1], None])
def test_check_refuses_a_bad_setting(settings: Any, value: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "BEARER_EXEMPT_NAMESPACES": value}
    [error] = check_bearer_exempt_namespaces()
    assert error.id == "authfw.E005"


@pytest.mark.parametrize("value", [[], ["admin"], ("admin", "backoffice", "api:v1")])
def test_check_accepts_good_settings(settings: Any, value: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "BEARER_EXEMPT_NAMESPACES": value}
    assert check_bearer_exempt_namespaces() == []
    call_command("check", "--tag", "authfw")
