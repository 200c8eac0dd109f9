"""BearerTokenMiddleware, bearer_required and BearerTokenBackend through Django's test clients.

Views under test are defined here (``pytest.mark.urls``) next to the project's own URLs, so the
tests see exactly what a project's view sees: ``request.auth``, ``request.user`` and
``await request.auser()``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.contrib.auth import authenticate as django_authenticate
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client, RequestFactory
from django.urls import include, path

from django_authfw import AuthFramework
from django_authfw.bearer import MAX_HEADER_LENGTH, MalformedAuthorization, challenge, parse_bearer
from django_authfw.decorators import bearer_required
from django_authfw.exceptions import StorageError
from django_authfw.middleware import BearerTokenMiddleware
from django_authfw.models import Token
from django_authfw.records import utcnow

from .http_support import (
    INVALID_TOKEN_BODY,
    INVALID_TOKEN_CHALLENGE,
    bearer,
    body,
    fast_hashing,
    login,
    user_factory,
)

__all__ = ["fast_hashing", "login", "user_factory"]  # fixtures used below


# Views -----------------------------------------------------------------------------------------


def open_view(request: HttpRequest) -> JsonResponse:
    """Unprotected; reads request.auth only, never the user."""
    record = request.auth  # type: ignore[attr-defined]
    return JsonResponse({"token_id": record.token_id if record else None})


def whoami(request: HttpRequest) -> JsonResponse:
    """Unprotected; reads request.user."""
    user = request.user
    return JsonResponse(
        {"authenticated": user.is_authenticated, "username": user.get_username() or None}
    )


@bearer_required
def protected(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"username": request.user.get_username()})


@bearer_required(realm="example")
def protected_realm(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def async_whoami(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    record = request.auth  # type: ignore[attr-defined]
    return JsonResponse(
        {
            "authenticated": user.is_authenticated,
            "username": user.get_username() or None,
            "token_id": record.token_id if record else None,
        }
    )


@bearer_required(realm="example")
async def async_protected_realm(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@bearer_required
async def async_protected(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    return JsonResponse({"username": user.get_username()})


urlpatterns = [
    path("t/open/", open_view),
    path("t/whoami/", whoami),
    path("t/protected/", protected),
    path("t/protected-realm/", protected_realm),
    path("t/async-whoami/", async_whoami),
    path("t/async-protected/", async_protected),
    path("t/async-protected-realm/", async_protected_realm),
    path("", include("testproject.urls")),
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


# The header grammar --------------------------------------------------------------------------

TOKEN = "afw_at_" + "A" * 43


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN}",
        f"bearer {TOKEN}",
        f"BEARER {TOKEN}",
        f"BeArEr {TOKEN}",
        f"Bearer   {TOKEN}",  # RFC 6750: 1*SP
        f"  Bearer {TOKEN}\t",  # optional whitespace around the field value
    ],
)
def test_parse_bearer_accepts_rfc6750_credentials(header: str) -> None:
    assert parse_bearer(header) == TOKEN


@pytest.mark.parametrize("token", ["abc", "a.b-c_d~e+f/g", "abc==", "eyJ.eyJ.sig"])
def test_parse_bearer_accepts_the_b64token_alphabet(token: str) -> None:
    assert parse_bearer(f"Bearer {token}") == token


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "Basic dXNlcjpwYXNz", "Digest username=x", "Token abc", "Bearerx abc"],
)
def test_parse_bearer_ignores_absent_headers_and_other_schemes(header: str | None) -> None:
    assert parse_bearer(header) is None


MALFORMED = {
    "no token": "Bearer",
    "only spaces after scheme": "Bearer    ",
    "two values": f"Bearer {TOKEN} extra",
    "tab separator": f"Bearer\t{TOKEN}",
    "comma list": f"Bearer {TOKEN}, Bearer {TOKEN}",
    "quote": 'Bearer "abc"',
    "padding first": "Bearer =abc",
    "padding inside": "Bearer ab=cd",
    "nul byte": "Bearer abc\x00def",
    "latin-1 junk": "Bearer \xff\xfe\xfd",
    "non-ascii": "Bearer tökén",
    "binary scheme": "\x00\xff\x10 garbage",
    "auth-param syntax": 'Bearer realm="x"',
    "too long": "Bearer " + "a" * MAX_HEADER_LENGTH,
}


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_bearer_refuses_malformed_headers(header: str) -> None:
    with pytest.raises(MalformedAuthorization) as caught:
        parse_bearer(header)
    assert "abc" not in str(caught.value)  # the message never echoes the header


def test_challenge_formats() -> None:
    assert challenge() == "Bearer"
    assert challenge(realm="api") == 'Bearer realm="api"'
    assert challenge("invalid_token", 'say "hi"\\', realm="r") == (
        'Bearer realm="r", error="invalid_token", error_description="say \\"hi\\"\\\\"'
    )


# Valid tokens -----------------------------------------------------------------------------------


def test_valid_token_sets_auth_and_user(client: Client, user_factory: Any, login: Any) -> None:
    user = user_factory(username="alice")
    issued = login(user)
    response = client.get("/t/whoami/", **bearer(issued.access_token))
    assert response.status_code == 200
    assert body(response) == {"authenticated": True, "username": "alice"}
    response = client.get("/t/open/", **bearer(issued.access_token))
    assert body(response) == {"token_id": issued.token_id}


def test_a_request_is_one_query_with_its_user(
    client: Client, user_factory: Any, login: Any, django_assert_num_queries: Any
) -> None:
    """On the database storage the token comes joined to its user: one SELECT per request,
    whether or not the view reads request.user, and no write."""
    issued = login(user_factory(username="erin"))
    for url in ("/t/open/", "/t/whoami/", "/t/protected/"):
        with django_assert_num_queries(1) as captured:
            response = client.get(url, **bearer(issued.access_token))
        assert response.status_code == 200, url
        sql = captured.captured_queries[0]["sql"]
        assert sql.lstrip().upper().startswith("SELECT")
        assert Token._meta.db_table in sql
        assert get_user_model()._meta.db_table in sql
    assert body(response) == {"username": "erin"}


def test_scheme_is_case_insensitive_over_http(
    client: Client, user_factory: Any, login: Any
) -> None:
    issued = login(user_factory(username="carol"))
    for scheme in ("bearer", "BEARER", "bEaReR"):
        response = client.get("/t/protected/", HTTP_AUTHORIZATION=f"{scheme} {issued.access_token}")
        assert response.status_code == 200, scheme
        assert body(response) == {"username": "carol"}


def test_bearer_token_wins_over_an_admin_session(
    client: Client, user_factory: Any, login: Any
) -> None:
    admin = user_factory(username="boss", is_staff=True)
    issued = login(user_factory(username="dave"))
    client.force_login(admin)
    # The session alone: AuthenticationMiddleware's user is kept.
    assert body(client.get("/t/whoami/")) == {"authenticated": True, "username": "boss"}
    assert body(client.get("/t/open/")) == {"token_id": None}
    # A Bearer token names the user explicitly.
    response = client.get("/t/whoami/", **bearer(issued.access_token))
    assert body(response) == {"authenticated": True, "username": "dave"}
    # bearer_required wants a token, not a session.
    assert client.get("/t/protected/").status_code == 401


# Refusals ---------------------------------------------------------------------------------------


def test_no_token_passes_as_anonymous(client: Client) -> None:
    assert body(client.get("/t/whoami/")) == {"authenticated": False, "username": None}
    assert body(client.get("/t/open/")) == {"token_id": None}


def test_another_scheme_passes_as_anonymous(client: Client) -> None:
    response = client.get("/t/whoami/", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert body(response) == {"authenticated": False, "username": None}


@pytest.mark.parametrize("path", ["/t/protected/", "/api/me/"])
@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz"])
def test_protected_view_without_bearer_gets_bare_challenge(
    client: Client, path: str, header: str | None
) -> None:
    response = client.get(path, headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert body(response)["error"] == "not_authenticated"
    assert response["Cache-Control"] == "no-store"


def test_realm_appears_in_the_challenge(client: Client) -> None:
    response = client.get("/t/protected-realm/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="example"'


def _realm_cases(user_factory: Any, login: Any) -> dict[str, tuple[dict[str, str], int, str]]:
    """Every way a request to a realm view is refused: headers, status, expected challenge."""
    revoked = login(user_factory())
    AuthFramework().revoke_token(revoked.access_token)
    inactive_user = user_factory()
    inactive = login(inactive_user)
    get_user_model().objects.filter(pk=inactive_user.pk).update(is_active=False)
    described = 'error_description="The access token is invalid, expired or revoked."'
    return {
        "missing": ({}, 401, 'Bearer realm="example"'),
        # Refused by the middleware, before the view runs:
        "revoked": (
            {"Authorization": f"Bearer {revoked.access_token}"},
            401,
            f'Bearer realm="example", error="invalid_token", {described}',
        ),
        "malformed": (
            {"Authorization": "Bearer a b"},
            400,
            'Bearer realm="example", error="invalid_request", error_description="',
        ),
        # Refused by the decorator, once the user is loaded:
        "inactive user": (
            {"Authorization": f"Bearer {inactive.access_token}"},
            401,
            f'Bearer realm="example", error="invalid_token", {described}',
        ),
    }


@pytest.mark.parametrize("path", ["/t/protected-realm/", "/t/async-protected-realm/"])
@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "no-middleware"])
def test_the_views_realm_is_in_every_challenge(
    settings: Any, user_factory: Any, login: Any, path: str, middleware: bool
) -> None:
    if not middleware:
        settings.MIDDLEWARE = [
            m for m in settings.MIDDLEWARE if m != "django_authfw.middleware.BearerTokenMiddleware"
        ]
    get = async_to_sync(AsyncClient().get) if path.startswith("/t/async") else Client().get
    for case, (headers, status, expected) in _realm_cases(user_factory, login).items():
        response = get(path, headers=headers)
        assert response.status_code == status, case
        assert response["WWW-Authenticate"].startswith(expected), (case, response)


def test_a_views_realm_wins_over_the_middlewares(
    settings: Any, user_factory: Any, login: Any
) -> None:
    settings.MIDDLEWARE = [
        "tests.test_middleware.RealmMiddleware"
        if m == "django_authfw.middleware.BearerTokenMiddleware"
        else m
        for m in settings.MIDDLEWARE
    ]
    junk = {"Authorization": "Bearer afw_at_" + "U" * 43}
    # The view's realm on its own view, the middleware's elsewhere.
    assert (
        Client()
        .get("/t/protected-realm/", headers=junk)["WWW-Authenticate"]
        .startswith('Bearer realm="example", error="invalid_token"')
    )
    assert (
        Client()
        .get("/t/protected/", headers=junk)["WWW-Authenticate"]
        .startswith('Bearer realm="site", error="invalid_token"')
    )


class RealmMiddleware(BearerTokenMiddleware):
    realm = "site"


def _invalid_token_cases(user_factory: Any, login: Any) -> dict[str, str]:
    """Tokens that must all be refused the same way, by reason."""
    framework = AuthFramework()
    revoked = login(user_factory())
    framework.revoke_token(revoked.access_token)
    expired = login(user_factory())
    Token.objects.filter(pk=expired.token_id).update(expires_at=utcnow() - timedelta(seconds=1))
    rotated = login(user_factory())
    framework.refresh(rotated.refresh_token)  # rotation revokes the old pair
    return {
        "unknown": "afw_at_" + "B" * 43,
        "wrong prefix": "afw_rt_" + "B" * 43,
        "wrong length": "afw_at_short",
        "not ours": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
        "revoked": revoked.access_token,
        "expired": expired.access_token,
        "rotated": rotated.access_token,
    }


def test_invalid_tokens_get_identical_401s(client: Client, user_factory: Any, login: Any) -> None:
    cases = _invalid_token_cases(user_factory, login)
    seen = set()
    for reason, token in cases.items():
        for url in ("/t/open/", "/t/protected/", "/"):
            response = client.get(url, **bearer(token))
            assert response.status_code == 401, (reason, url)
            assert response["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE, reason
            assert body(response) == INVALID_TOKEN_BODY, reason
            seen.add((response.content, response["WWW-Authenticate"]))
    assert len(seen) == 1  # nothing tells one reason from another


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_headers_get_400_invalid_request(client: Client, header: str) -> None:
    for url in ("/t/open/", "/t/protected/"):
        response = client.get(url, HTTP_AUTHORIZATION=header)
        assert response.status_code == 400, url
        assert body(response)["error"] == "invalid_request"
        assert response["WWW-Authenticate"].startswith('Bearer error="invalid_request"')


def test_huge_header_is_refused_before_any_lookup(
    client: Client, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        response = client.get("/t/open/", HTTP_AUTHORIZATION="Bearer " + "a" * 100_000)
    assert response.status_code == 400


def test_inactive_user_token_authenticates_nobody(
    client: Client, user_factory: Any, login: Any
) -> None:
    user = user_factory()
    issued = login(user)
    # A bulk update sends no signal, so the token stays unrevoked: the lazy user check decides.
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    response = client.get("/t/protected/", **bearer(issued.access_token))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert body(client.get("/t/whoami/", **bearer(issued.access_token))) == {
        "authenticated": False,
        "username": None,
    }


def test_deleted_user_token_is_refused(client: Client, user_factory: Any, login: Any) -> None:
    user = user_factory()
    issued = login(user)
    user.delete()
    response = client.get("/t/protected/", **bearer(issued.access_token))
    assert response.status_code == 401
    assert body(response) == INVALID_TOKEN_BODY


def test_decorator_works_without_the_middleware(
    client: Client, settings: Any, user_factory: Any, login: Any
) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "BearerToken" not in m]
    issued = login(user_factory(username="erin"))
    assert body(client.get("/t/protected/", **bearer(issued.access_token))) == {"username": "erin"}
    assert client.get("/t/protected/").status_code == 401
    assert client.get("/t/protected/", **bearer("afw_at_" + "C" * 43)).status_code == 401
    assert client.get("/t/protected/", HTTP_AUTHORIZATION="Bearer a b").status_code == 400


# Async ------------------------------------------------------------------------------------------


def test_middleware_is_sync_and_async_capable() -> None:
    assert BearerTokenMiddleware.sync_capable
    assert BearerTokenMiddleware.async_capable

    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    assert iscoroutinefunction(BearerTokenMiddleware(async_view))
    assert not iscoroutinefunction(BearerTokenMiddleware(sync_view))


# pytest has no async runner installed here: each async test body runs through async_to_sync, on
# the test's thread, so its ORM calls (thread-sensitive) share the test's transaction.


def test_async_path_authenticates(user_factory: Any, login: Any) -> None:
    issued = login(user_factory(username="frank"))
    auth = {"Authorization": f"Bearer {issued.access_token}"}

    async def scenario() -> None:
        client = AsyncClient()
        response = await client.get("/t/async-whoami/", headers=auth)
        assert response.status_code == 200
        assert body(response) == {
            "authenticated": True,
            "username": "frank",
            "token_id": issued.token_id,
        }
        response = await client.get("/t/async-protected/", headers=auth)
        assert body(response) == {"username": "frank"}
        # A sync decorated view through the async stack.
        response = await client.get("/t/protected/", headers=auth)
        assert body(response) == {"username": "frank"}

    async_to_sync(scenario)()


def test_async_path_refuses(user_factory: Any, login: Any) -> None:
    async def scenario() -> None:
        client = AsyncClient()
        response = await client.get("/t/async-protected/")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Bearer"
        response = await client.get(
            "/t/async-whoami/", headers={"Authorization": "Bearer afw_at_" + "D" * 43}
        )
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
        assert body(response) == INVALID_TOKEN_BODY
        response = await client.get("/t/async-whoami/", headers={"Authorization": "Bearer a b"})
        assert response.status_code == 400
        response = await client.get("/t/async-whoami/")
        assert body(response) == {"authenticated": False, "username": None, "token_id": None}

    async_to_sync(scenario)()


def test_async_inactive_user_is_refused(user_factory: Any, login: Any) -> None:
    user = user_factory()
    issued = login(user)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)

    async def scenario() -> None:
        response = await AsyncClient().get(
            "/t/async-protected/", headers={"Authorization": f"Bearer {issued.access_token}"}
        )
        assert response.status_code == 401
        assert body(response) == INVALID_TOKEN_BODY

    async_to_sync(scenario)()


# The authentication backend ---------------------------------------------------------------------

BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "django_authfw.backends.BearerTokenBackend",
]


def test_backend_authenticates_a_bearer_token(settings: Any, user_factory: Any, login: Any) -> None:
    settings.AUTHENTICATION_BACKENDS = BACKENDS
    user = user_factory()
    issued = login(user)
    request = RequestFactory().get("/")
    assert django_authenticate(request, bearer_token=issued.access_token) == user
    assert request.auth.token_id == issued.token_id  # type: ignore[attr-defined]
    assert django_authenticate(request, bearer_token="afw_at_" + "E" * 43) is None
    assert django_authenticate(request, bearer_token="junk") is None
    AuthFramework().revoke_token(issued.access_token)
    assert django_authenticate(request, bearer_token=issued.access_token) is None


def test_backend_refuses_inactive_users(settings: Any, user_factory: Any, login: Any) -> None:
    settings.AUTHENTICATION_BACKENDS = BACKENDS
    user = user_factory()
    issued = login(user)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    assert django_authenticate(None, bearer_token=issued.access_token) is None


def test_backend_async(settings: Any, user_factory: Any, login: Any) -> None:
    from django.contrib.auth import aauthenticate

    settings.AUTHENTICATION_BACKENDS = BACKENDS
    user = user_factory()
    issued = login(user)

    async def scenario() -> None:
        assert await aauthenticate(None, bearer_token=issued.access_token) == user
        assert await aauthenticate(None, bearer_token="afw_at_" + "F" * 43) is None

    async_to_sync(scenario)()


def test_backend_turns_a_token_into_a_session(
    client: Client, settings: Any, user_factory: Any, login: Any
) -> None:
    """The documented use: exchange a token for a browser session with Django's login()."""
    settings.AUTHENTICATION_BACKENDS = BACKENDS
    user = user_factory(username="gina")
    issued = login(user)
    from django.contrib.auth import login as django_login

    request = RequestFactory().get("/")
    request.session = client.session
    found = django_authenticate(request, bearer_token=issued.access_token)
    assert found is not None
    django_login(request, found)
    request.session.save()
    session_key = request.session.session_key
    assert session_key is not None
    client.cookies["sessionid"] = session_key
    assert body(client.get("/t/whoami/")) == {"authenticated": True, "username": "gina"}


def test_requests_without_a_token_never_touch_the_storage(client: Client, settings: Any) -> None:
    # A storage that cannot even be built: pages without a Bearer token (the admin, the demo)
    # keep working, and the failure shows only where a token needs verifying.
    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": {"default": {"BACKEND": "django_authfw.storage.NoSuchStorage"}},
    }
    assert client.get("/t/whoami/").status_code == 200
    assert client.get("/t/protected/").status_code == 401
    assert client.get("/t/open/", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").status_code == 200
    with pytest.raises(StorageError, match="cannot be imported"):
        client.get("/t/open/", **bearer("afw_at_" + "G" * 43))
