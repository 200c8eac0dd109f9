"""A revoked token fails at once on every backend, whatever is done for speed.

The hot paths read the token and its user in one query (database), read one Redis key derived
from the access digest, share immutable records (memory, LocMemCache) and, with
``AUTHFW["USER_SNAPSHOT"]``, answer ``request.user`` from the token. None of them may keep a
token alive after it is revoked: on each backend, a request that succeeded a moment before is
refused by the very next request, through the middleware and through the DRF class, whichever
way the token was ended, and also when another storage instance (as another process would)
ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_authfw import AuthFramework
from django_authfw.contrib.drf import BearerTokenAuthentication
from django_authfw.decorators import bearer_required
from django_authfw.exceptions import TokenRevoked
from django_authfw.storage import build_storage
from django_authfw.tokens import IssuedToken

from .http_support import (
    INVALID_TOKEN_CHALLENGE,
    bearer,
    default_storage_backend,
    fast_hashing,
    login,
    user_factory,
)

__all__ = ["default_storage_backend", "fast_hashing", "login", "user_factory"]


@bearer_required
def protected(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pk": request.user.pk, "active": request.user.is_active})


class DrfProtected(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"pk": request.user.pk})


urlpatterns = [path("protected/", protected), path("drf/", DrfProtected.as_view())]

pytestmark = pytest.mark.urls(__name__)


def _by_access_token(issued: IssuedToken) -> None:
    assert AuthFramework().revoke_token(issued.access_token) is True


def _by_refresh_token(issued: IssuedToken) -> None:
    # Revoking the refresh token ends the login: its access token with it.
    assert AuthFramework().revoke_token(issued.refresh_token or "") is True


def _all_of_the_users_tokens(issued: IssuedToken) -> None:
    user = get_user_model().objects.get(pk=issued.user_id)
    assert AuthFramework().revoke_user_tokens(user) == 2


def _by_another_instance(issued: IssuedToken) -> None:
    # A storage built apart from the shared one, on the same store: what another worker
    # process of the deployment holds.
    other = build_storage(django_settings.AUTHFW["STORAGES"]["default"], "default")
    try:
        assert AuthFramework(storage=other).revoke_token(issued.access_token) is True
    finally:
        other.close()


REVOCATIONS: dict[str, Callable[[IssuedToken], None]] = {
    "access token": _by_access_token,
    "refresh token": _by_refresh_token,
    "all of the user's tokens": _all_of_the_users_tokens,
    "another storage instance": _by_another_instance,
}


@pytest.mark.parametrize("snapshot", [False, True], ids=["", "snapshot"])
@pytest.mark.parametrize("how", list(REVOCATIONS), ids=list(REVOCATIONS))
@pytest.mark.parametrize("url", ["/protected/", "/drf/"], ids=["middleware", "drf"])
def test_a_revoked_token_fails_on_the_next_request(
    default_storage_backend: str,
    settings: Any,
    client: Client,
    user_factory: Any,
    login: Any,
    how: str,
    url: str,
    snapshot: bool,
) -> None:
    if how == "another storage instance" and default_storage_backend == "memory":
        # An in-process store is not shared with other instances: there is no other process
        # that could revoke in it, so this way does not exist on this backend.
        return
    settings.AUTHFW = {**settings.AUTHFW, "USER_SNAPSHOT": snapshot}
    user = user_factory()
    issued = login(user)
    kept = login(user)  # another login of the same user, untouched unless all tokens end
    for _ in range(2):  # warm whatever the path keeps between requests
        response = client.get(url, **bearer(issued.access_token))
        assert response.status_code == 200, response.content
        assert response.json()["pk"] == user.pk
    REVOCATIONS[how](issued)
    response = client.get(url, **bearer(issued.access_token))
    assert response.status_code == 401, (default_storage_backend, how, response.content)
    assert response["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    with pytest.raises(TokenRevoked):
        AuthFramework().verify_token(issued.access_token)
    expected_kept = 401 if how == "all of the user's tokens" else 200
    assert client.get(url, **bearer(kept.access_token)).status_code == expected_kept
