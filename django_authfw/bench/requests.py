"""The request rows: what a whole authenticated request costs, beside the same request without
authentication, in the same run.

* **request**: a Django request (``WSGIRequest`` from a WSGI environ, as the WSGI handler makes
  it) through :class:`~django_authfw.middleware.BearerTokenMiddleware`, for the alias under test,
  to a view that reads ``request.user.pk`` and ``request.user.is_authenticated``;
  **request, no auth** is the same request without its ``Authorization`` header, so the
  middleware lets it through as anonymous. Their difference is the cost of authentication;
* **request, DRF** / **request, DRF, no auth**: the same through a DRF ``APIView`` whose only
  authentication class is :class:`~django_authfw.contrib.drf.BearerTokenAuthentication` (no
  middleware), when Django REST framework is installed;
* **request, DRF authtoken**: the peer the issue compared against, the same ``APIView`` with
  DRF's own ``TokenAuthentication`` (``Authorization: Token <key>``, one query: the token
  joined to its user), when ``rest_framework.authtoken`` is installed and the storage is a
  database storage. The run makes one DRF token for its own user (a random key, passed to
  worker processes) and deletes it with the run's other records.

The requests resolve against a one-route URLconf of their own (``request.urlconf``), so the
middleware's check of exempt views costs what it costs on a small project. Nothing is written:
the view only reads.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from io import BytesIO
from typing import Any

from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse
from django.urls import path

from ..middleware import BearerTokenMiddleware

#: The request rows, in the order they are timed and shown.
REQUEST_OPERATIONS: tuple[str, ...] = (
    "request_noauth",
    "request",
    "request_drf_noauth",
    "request_drf",
)
#: The peer row, timed after the request rows where it applies (see module docstring).
PEER_OPERATIONS: tuple[str, ...] = ("request_drf_authtoken",)
PATH = "/bench/request/"


def read_user(request: HttpRequest) -> HttpResponse:
    """The view: what a typical API view asks of the user (who, and whether authenticated)."""
    user = request.user
    return HttpResponse(f"{user.pk} {user.is_authenticated}")


# The URLconf the bench's requests resolve against (request.urlconf is this module).
urlpatterns = [path(PATH.strip("/") + "/", read_user)]


def _environ(token: str | None, scheme: str = "Bearer") -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": PATH,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": BytesIO(b""),
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"{scheme} {token}"
    return environ


def _requests(tokens: list[str] | None, scheme: str = "Bearer") -> Callable[[], WSGIRequest]:
    """A function making the next request: one per stored token in turn, or anonymous."""
    environs = [_environ(token, scheme) for token in tokens] if tokens else [_environ(None)]
    next_environ = itertools.cycle(environs).__next__
    urlconf = __name__

    def make() -> WSGIRequest:
        request = WSGIRequest(next_environ().copy())
        request.urlconf = urlconf
        return request

    return make


def drf_installed() -> bool:
    try:
        import rest_framework  # noqa: F401
    except ImportError:
        return False
    return True


def request_operations(alias: str, tokens: list[str]) -> dict[str, Callable[[], object]]:
    """The request rows for storage alias ``alias``, presenting ``tokens`` (raw, stored).

    Each call checks its answer: an authenticated request must come back 200 and
    authenticated, or the row would time a refusal.
    """

    class Middleware(BearerTokenMiddleware):
        storage = alias

    middleware = Middleware(read_user)
    anonymous, authenticated = _requests(None), _requests(tokens)

    def check(response: HttpResponse, want: bytes) -> HttpResponse:
        if response.status_code != 200 or not response.content.endswith(want):
            raise RequestError(response)
        return response

    operations: dict[str, Callable[[], object]] = {
        "request_noauth": lambda: check(middleware(anonymous()), b" False"),
        "request": lambda: check(middleware(authenticated()), b" True"),
    }
    if drf_installed():
        from ..contrib.drf import BearerTokenAuthentication

        class Authentication(BearerTokenAuthentication):
            storage = alias

        view = _drf_view(Authentication)
        operations["request_drf_noauth"] = lambda: check(view(anonymous()), b" False")
        operations["request_drf"] = lambda: check(view(authenticated()), b" True")
    return operations


def authtoken_installed() -> bool:
    """Whether DRF's ``rest_framework.authtoken`` app is installed (the peer row needs it)."""
    from django.apps import apps

    return drf_installed() and apps.is_installed("rest_framework.authtoken")


def create_authtoken(user_pk: Any, using: str) -> str:
    """Make a DRF token for the run's user in database ``using``; return its key.

    The key is random, as DRF makes them: it is a credential for as long as the run lasts.
    """
    from rest_framework.authtoken.models import Token

    key = secrets.token_hex(20)
    Token.objects.using(using).create(key=key, user_id=user_pk)
    return key


def delete_authtoken(key: str, using: str | None) -> int:
    """Delete the run's DRF token; return how many rows went (0 or 1)."""
    from rest_framework.authtoken.models import Token

    deleted, _ = Token.objects.using(using).filter(key=key).delete()
    return deleted


def authtoken_operation(key: str) -> Callable[[], object]:
    """The peer row: the bench's view through DRF's ``TokenAuthentication``."""
    from rest_framework.authentication import TokenAuthentication

    view = _drf_view(TokenAuthentication)
    authenticated = _requests([key], scheme="Token")

    def op() -> HttpResponse:
        response = view(authenticated())
        if response.status_code != 200 or not response.content.endswith(b" True"):
            raise RequestError(response)
        return response

    return op


class RequestError(Exception):
    """A bench request did not get the answer it should (the row would time a refusal)."""

    def __init__(self, response: HttpResponse) -> None:
        body = response.content[:200].decode(errors="replace")
        super().__init__(f"a bench request was answered {response.status_code}: {body}")


def _drf_view(authentication: Any) -> Callable[[HttpRequest], HttpResponse]:
    """The bench's view as a DRF ``APIView`` with one authentication class."""
    from rest_framework.permissions import AllowAny
    from rest_framework.views import APIView

    class ReadUser(APIView):
        authentication_classes = [authentication]
        permission_classes = [AllowAny]

        def get(self, request: Any) -> HttpResponse:
            return read_user(request)

    view: Callable[[HttpRequest], HttpResponse] = ReadUser.as_view()
    return view
