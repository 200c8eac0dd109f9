"""django_authfw.contrib.drf.BearerTokenAuthentication with DRF's APIClient and real views."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import path
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from django_authfw import AuthFramework
from django_authfw.contrib.drf import BearerTokenAuthentication
from django_authfw.records import AuthToken

from .http_support import INVALID_TOKEN_CHALLENGE, fast_hashing, login, user_factory

__all__ = ["fast_hashing", "login", "user_factory"]


class RealmAuthentication(BearerTokenAuthentication):
    realm = "api"


class MeView(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]

    def get(self, request: Request) -> Response:
        assert isinstance(request.auth, AuthToken)
        return Response(
            {"username": request.user.get_username(), "token_id": request.auth.token_id}
        )


class OpenView(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]

    def get(self, request: Request) -> Response:
        return Response({"authenticated": request.user.is_authenticated})


class RealmView(MeView):
    authentication_classes = [RealmAuthentication]


urlpatterns = [
    path("drf/me/", MeView.as_view()),
    path("drf/open/", OpenView.as_view()),
    path("drf/realm/", RealmView.as_view()),
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

WITHOUT_MIDDLEWARE = pytest.mark.parametrize("middleware", [True, False], ids=["mw", "no-mw"])


def _client(settings: Any, middleware: bool) -> APIClient:
    if not middleware:
        settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "BearerToken" not in m]
    return APIClient()


@WITHOUT_MIDDLEWARE
def test_valid_token(settings: Any, middleware: bool, user_factory: Any, login: Any) -> None:
    client = _client(settings, middleware)
    issued = login(user_factory(username="drf-user"))
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.access_token}")
    response = client.get("/drf/me/")
    assert response.status_code == 200
    assert response.json() == {"username": "drf-user", "token_id": issued.token_id}


@WITHOUT_MIDDLEWARE
def test_no_credentials_get_bare_bearer_challenge(settings: Any, middleware: bool) -> None:
    client = _client(settings, middleware)
    response = client.get("/drf/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    response = client.get("/drf/me/", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert client.get("/drf/open/").json() == {"authenticated": False}


def test_invalid_token_without_middleware_gets_invalid_token_challenge(
    settings: Any, user_factory: Any, login: Any
) -> None:
    client = _client(settings, middleware=False)
    issued = login(user_factory())
    AuthFramework().revoke_token(issued.access_token)
    for token in (issued.access_token, "afw_at_" + "X" * 43, "junk"):
        response = client.get("/drf/me/", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    response = client.get("/drf/open/", HTTP_AUTHORIZATION="Bearer a b")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer error="invalid_request"')


def test_invalid_token_with_middleware_is_refused_before_drf(settings: Any) -> None:
    response = APIClient().get("/drf/open/", HTTP_AUTHORIZATION="Bearer afw_at_" + "Y" * 43)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    response = APIClient().get("/drf/open/", HTTP_AUTHORIZATION="Bearer a b")
    assert response.status_code == 400


@WITHOUT_MIDDLEWARE
def test_inactive_user_is_refused(
    settings: Any, middleware: bool, user_factory: Any, login: Any
) -> None:
    client = _client(settings, middleware)
    user = user_factory()
    issued = login(user)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    response = client.get("/drf/me/", HTTP_AUTHORIZATION=f"Bearer {issued.access_token}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE


def test_realm(settings: Any) -> None:
    response = APIClient().get("/drf/realm/")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@WITHOUT_MIDDLEWARE
def test_one_token_lookup_per_request(
    settings: Any,
    middleware: bool,
    user_factory: Any,
    login: Any,
    django_assert_num_queries: Any,
) -> None:
    client = _client(settings, middleware)
    issued = login(user_factory())
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.access_token}")
    # The token joined to its user, in one query; with the middleware, DRF reuses its token
    # and its user.
    with django_assert_num_queries(1):
        assert client.get("/drf/me/").status_code == 200


def test_authenticate_header_is_bearer() -> None:
    from rest_framework.test import APIRequestFactory

    request = Request(APIRequestFactory().get("/"))
    assert BearerTokenAuthentication().authenticate_header(request) == "Bearer"
