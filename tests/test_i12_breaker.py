"""Breaker tests for issue 12: the refresh grant at token/, repeated JSON members, OPTIONS,
the realm in the middleware's challenges, and expires_in.

Each test is one way an attacker, a client or an operator could break what issue 12 promised.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client
from django.urls import include, path
from django.utils.decorators import method_decorator
from django.views import View
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_authfw import AuthFramework
from django_authfw.contrib.drf import BearerTokenAuthentication
from django_authfw.decorators import bearer_required
from django_authfw.exceptions import InvalidToken
from django_authfw.middleware import BearerTokenMiddleware

from .factories import PASSWORD
from .http_support import default_storage_backend, fast_hashing, login, user_factory

__all__ = ["default_storage_backend", "fast_hashing", "login", "user_factory"]

JUNK = {"Authorization": "Bearer afw_at_" + "U" * 43}
MALFORMED = {"Authorization": "Bearer a b"}


# Views -----------------------------------------------------------------------------------------


class ItemsView(View):
    """A class-based view whose handler carries the realm (method_decorator on ``get``)."""

    @method_decorator(bearer_required(realm="items"))
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")


class RealmAuthentication(BearerTokenAuthentication):
    realm = "drf"


class DrfRealmView(APIView):
    authentication_classes = [RealmAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


@bearer_required
def plain(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [
    path("b/items/", ItemsView.as_view()),
    path("b/drf-realm/", DrfRealmView.as_view()),
    path("b/plain/", plain),
    path("", include("testproject.urls")),
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


class SiteRealmMiddleware(BearerTokenMiddleware):
    realm = "site"


def _challenge(response: Any) -> str:
    return str(response["WWW-Authenticate"])


# Realm -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, JUNK, MALFORMED], ids=["missing", "junk", "malformed"])
def test_cbv_handler_realm_is_in_the_middlewares_challenges(headers: dict[str, str]) -> None:
    """``method_decorator(bearer_required(realm=...))`` on ``get``: the view answers a missing
    token with its realm, so the middleware's refusal of a junk token must carry it too."""
    response = Client().get("/b/items/", headers=headers)
    assert response.status_code in (400, 401)
    assert _challenge(response).startswith('Bearer realm="items"'), _challenge(response)


@pytest.mark.parametrize("headers", [{}, JUNK, MALFORMED], ids=["missing", "junk", "malformed"])
def test_drf_authentication_realm_is_in_the_middlewares_challenges(
    headers: dict[str, str],
) -> None:
    """docs/middleware.md: subclass BearerTokenAuthentication to set ``realm``, "as for the
    middleware". A missing token gets it from DRF; a junk one is refused by the middleware
    before DRF runs, and must carry the same realm."""
    response = Client().get("/b/drf-realm/", headers=headers)
    assert response.status_code in (400, 401)
    assert _challenge(response).startswith('Bearer realm="drf"'), _challenge(response)


@pytest.mark.parametrize("headers", [{}, JUNK, MALFORMED], ids=["missing", "junk", "malformed"])
def test_the_middlewares_realm_is_in_every_challenge_of_a_realmless_view(
    settings: Any, headers: dict[str, str]
) -> None:
    """With a realm on the middleware, a ``@bearer_required`` view without one of its own must
    not answer a missing token with a bare ``Bearer`` and a junk one with ``realm="site"``."""
    settings.MIDDLEWARE = [
        "tests.test_i12_breaker.SiteRealmMiddleware"
        if m == "django_authfw.middleware.BearerTokenMiddleware"
        else m
        for m in settings.MIDDLEWARE
    ]
    response = Client().get("/b/plain/", headers=headers)
    assert response.status_code in (400, 401)
    assert _challenge(response).startswith('Bearer realm="site"'), _challenge(response)


@pytest.mark.parametrize(
    "realm", ["api\r\nSet-Cookie: x=1", "api\nX: 1", "a\x00b", "a\x7fb"], ids=repr
)
def test_a_realm_that_cannot_be_a_header_is_refused_when_decorating(realm: str) -> None:
    """A realm with a control character cannot go into ``WWW-Authenticate``: Django raises
    BadHeaderError while answering, an HTML 500 for every refused request. It must fail where
    the mistake is, when the view is decorated."""
    with pytest.raises(ValueError, match="realm"):
        bearer_required(realm=realm)(plain)


def test_a_realm_with_quotes_and_backslashes_is_quoted() -> None:
    from django.test import RequestFactory

    view = bearer_required(realm='a "b" \\c')(plain)
    response = view(RequestFactory().get("/"))
    assert _challenge(response) == 'Bearer realm="a \\"b\\" \\\\c"'


# expires_in ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (timedelta(hours=1), 3600),
        (timedelta(seconds=3601, microseconds=500_000), 3601),
        (timedelta(seconds=59, microseconds=999_999), 59),
        (90.7, 90),
    ],
    ids=["hour", "3601.5s", "59.999999s", "float-90.7"],
)
def test_expires_in_never_promises_more_than_the_token_lives(
    settings: Any, user_factory: Any, ttl: Any, expected: int
) -> None:
    """RFC 6749 section 5.1: ``expires_in`` is the lifetime. A client that trusts it must not
    send a token after it has expired: rounding 3601.5 s up to 3602 does exactly that."""
    settings.AUTHFW = {**settings.AUTHFW, "ACCESS_TOKEN_TTL": ttl}
    user = user_factory()
    issued = AuthFramework().authenticate(user.get_username(), PASSWORD)
    assert issued.expires_in == expected
    assert issued.issued_at is not None
    assert issued.issued_at + timedelta(seconds=issued.expires_in) <= issued.expires_at
    # The same through refresh, at token/ (a rotation mints a new pair) and over HTTP.
    response = Client().post(
        "/auth/token/",
        {"grant_type": "refresh_token", "refresh_token": issued.refresh_token},
    )
    assert response.status_code == 200, response.content
    assert response.json()["expires_in"] == expected


def test_expires_in_is_exact_after_a_refresh_in_place(settings: Any, user_factory: Any) -> None:
    settings.AUTHFW = {
        **settings.AUTHFW,
        "ACCESS_TOKEN_TTL": timedelta(seconds=7),
        "ROTATE_REFRESH_TOKENS": False,
    }
    user = user_factory()
    issued = AuthFramework().authenticate(user.get_username(), PASSWORD)
    response = Client().post(
        "/auth/token/",
        {"grant_type": "refresh_token", "refresh_token": issued.refresh_token},
    )
    assert response.status_code == 200, response.content
    assert response.json()["expires_in"] == 7


# Repeated JSON members and other bodies -------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"username": "nobody", "user\\u006eame": "%(u)s", "password": "%(p)s"}',
        '{"\\u0075\\u0073\\u0065\\u0072\\u006e\\u0061\\u006d\\u0065": "nobody",'
        ' "username": "%(u)s", "password": "%(p)s"}',
        '{"username": "%(u)s", "password": "%(p)s", "x": {"a": 1, "a": 2}}',
        '{"username": "%(u)s", "password": "%(p)s", "x": [[{"a": 1, "\\u0061": 2}]]}',
        '{"username": "%(u)s", "password": "%(p)s", "\\ud83d\\ude00": 1, "\\ud83d\\ude00": 2}',
        '{"username": "%(u)s", "password": "%(p)s", "grant_type": "password",'
        ' "grant_type": "refresh_token"}',
    ],
    ids=["escaped-name", "all-escaped", "nested", "in-array", "surrogate-pair", "grant-type"],
)
def test_repeated_json_members_in_every_spelling_are_refused(user_factory: Any, raw: str) -> None:
    user = user_factory()
    body = raw % {"u": user.get_username(), "p": PASSWORD}
    response = Client().post("/auth/token/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"username": ' + b"9" * 5000 + b"}",
        b'{"username": 1e999999, "password": "x"}',
        b'{"username": NaN, "password": "x"}',
        b'\xef\xbb\xbf{"username": "x", "password": "y"}',
        '{"username": "x", "password": "y"}'.encode("utf-16"),
        b'{"username": "\xed\xa0\x80", "password": "y"}',
    ],
    ids=["deep-array", "deep-object", "huge-int", "huge-float", "nan", "bom", "utf16", "cesu"],
)
def test_no_json_body_gets_an_html_500(raw: bytes) -> None:
    response = Client().post("/auth/token/", raw, content_type="application/json")
    assert response.status_code in (400, 413), response.content[:200]
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"


# The refresh grant at token/ -------------------------------------------------------------------


def test_refresh_grant_ignores_password_fields_and_password_grant_ignores_refresh(
    user_factory: Any,
) -> None:
    """Mixed bodies: each grant reads only its own fields (RFC 6749: ignore unknown ones), so
    a refresh with someone else's password neither logs them in nor counts a failure."""
    ann = user_factory()
    bob = user_factory()
    pair = AuthFramework().authenticate(ann.get_username(), PASSWORD)
    response = Client().post(
        "/auth/token/",
        {
            "grant_type": "refresh_token",
            "refresh_token": pair.refresh_token,
            "username": bob.get_username(),
            "password": "wrong",
        },
    )
    assert response.status_code == 200, response.content
    record = AuthFramework().verify_token(response.json()["access_token"])
    assert record.user_id == str(ann.pk)


@pytest.mark.parametrize(
    "grant_type", ["Refresh_Token", "REFRESH_TOKEN", " refresh_token", "refresh_token ", "refresh"]
)
def test_grant_type_is_exact(user_factory: Any, grant_type: str) -> None:
    user = user_factory()
    pair = AuthFramework().authenticate(user.get_username(), PASSWORD)
    response = Client().post(
        "/auth/token/", {"grant_type": grant_type, "refresh_token": pair.refresh_token}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    # Not consumed: it still refreshes once.
    response = Client().post(
        "/auth/token/", {"grant_type": "refresh_token", "refresh_token": pair.refresh_token}
    )
    assert response.status_code == 200


def test_refresh_token_in_the_query_string_is_not_taken(user_factory: Any) -> None:
    user = user_factory()
    pair = AuthFramework().authenticate(user.get_username(), PASSWORD)
    response = Client().post(
        f"/auth/token/?grant_type=refresh_token&refresh_token={pair.refresh_token}",
        {"grant_type": "refresh_token"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# OPTIONS and HEAD ------------------------------------------------------------------------------

ENDPOINTS = [
    "/auth/register/",
    "/auth/token/",
    "/auth/token/refresh/",
    "/auth/token/revoke/",
    "/auth/token/introspect/",
    "/auth/logout-all/",
    "/auth/sessions/",
    "/auth/sessions/abc/",
]


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("headers", [{}, JUNK, MALFORMED], ids=["none", "junk", "malformed"])
def test_options_and_head_answer_json_no_store(url: str, headers: dict[str, str]) -> None:
    for method in ("options", "head"):
        response = getattr(Client(), method)(url, headers=headers)
        assert response["Content-Type"] == "application/json", (method, response)
        assert response["Cache-Control"] == "no-store", (method, response)
        if method == "options" and not headers:
            assert response.status_code == 200
            allowed = {m.strip() for m in response["Allow"].split(",")}
            assert "OPTIONS" in allowed
            assert set(json.loads(response.content)["methods"]) == allowed


# Class-based views decorated on dispatch -------------------------------------------------------


@method_decorator(bearer_required(realm="dispatch"), name="dispatch")
class DispatchView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")


urlpatterns.append(path("b/dispatch/", DispatchView.as_view()))


@pytest.mark.parametrize("method", ["get", "head", "post"])
@pytest.mark.parametrize("headers", [{}, JUNK, MALFORMED], ids=["missing", "junk", "malformed"])
def test_dispatch_realm_is_in_every_challenge(method: str, headers: dict[str, str]) -> None:
    response = getattr(Client(), method)("/b/dispatch/", headers=headers)
    assert response.status_code in (400, 401)
    assert _challenge(response).startswith('Bearer realm="dispatch"'), _challenge(response)


# token/ and token/refresh/ racing on one refresh token ----------------------------------------


def _race_paths(base_url: str, paths: list[str], body: dict[str, str]) -> list[Any]:
    import threading

    from .test_live_http import Http, Reply

    web = Http(base_url)
    barrier = threading.Barrier(len(paths))
    replies: list[Any] = [RuntimeError("not run")] * len(paths)

    def send(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            replies[index] = web.form(paths[index], body)
        except BaseException as exc:
            replies[index] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(r, Reply) for r in replies), replies
    return replies


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="requests served at once need a server database",
)
def test_token_and_token_refresh_race_on_one_refresh_token(
    live_server: Any, default_storage_backend: str, user_factory: Any
) -> None:
    from django_authfw.models import AuditLog

    user = user_factory()
    pair = AuthFramework().authenticate(user.get_username(), PASSWORD)
    assert pair.refresh_token is not None
    paths = ["/auth/token/", "/auth/token/refresh/"] * 2
    replies = _race_paths(
        live_server.url, paths, {"grant_type": "refresh_token", "refresh_token": pair.refresh_token}
    )
    statuses = sorted(r.status for r in replies)
    assert statuses == [200, 400, 400, 400], [r.raw for r in replies]
    winner = next(r for r in replies if r.status == 200).json
    # Every loser replayed a rotated token: the family is revoked, the winner's pair included.
    framework = AuthFramework()
    with pytest.raises(InvalidToken):
        framework.verify_token(winner["access_token"])
    assert AuditLog.objects.filter(action="refresh", outcome=True).count() == 1
    assert AuditLog.objects.filter(action="refresh_reuse").count() >= 1


# Wording ---------------------------------------------------------------------------------------


def test_progress_without_a_total_counts_one_record() -> None:
    """The progress line of a kind whose total is unknown read "1 records"."""
    import io

    from django.core.management.base import OutputWrapper

    from django_authfw.management.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(OutputWrapper(out), enabled=True)
    bar.update("tokens", 1, None)
    assert "1 record\x1b" in out.getvalue(), out.getvalue()
    assert "1 records" not in out.getvalue()


# The run's own test database -------------------------------------------------------------------


def test_the_checkout_id_differs_between_hosts_with_the_same_path() -> None:
    """Two containers sharing one PostgreSQL server mount the checkout at the same path and,
    each in a fresh PID namespace, may run pytest with the same pid: with only the path in the
    hash, both runs named the same test database and dropped each other's."""
    from .backends import checkout_id

    assert checkout_id("ci-a", "/builds/app/tests/backends.py") != checkout_id(
        "ci-b", "/builds/app/tests/backends.py"
    )
    assert len(checkout_id("x" * 300, "/" + "deep/" * 500)) == 8
