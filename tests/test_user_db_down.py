"""Tokens in Redis, the user database down: every endpoint answers 503 JSON (issue 10 item 8).

Before the fix the raw ``OperationalError`` of the user lookups (login, the lazy
``request.user`` of a Bearer request, introspection, refresh) escaped as Django's HTML 500. Now
``django_authfw.users`` turns it into ``StorageUnavailable``, which the views, the decorator, the
middleware (for any view) and the DRF class answer with 503 ``temporarily_unavailable``,
``Retry-After``.

The outage is real: the live server's PostgreSQL connection is terminated by the server
(``pg_terminate_backend``, as a restart does) and the connection settings point at a closed
loopback port until the test restores them, so no reconnect can succeed meanwhile.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient
from django.urls import path

from django_authfw import AuthFramework
from django_authfw.decorators import bearer_required
from django_authfw.exceptions import StorageUnavailable
from django_authfw.tokens import IssuedToken

from .factories import PASSWORD
from .http_support import fast_hashing, storages_for, user_factory
from .test_drf import MeView
from .test_live_http import Http, Reply

__all__ = ["fast_hashing", "user_factory"]

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="terminates the server's PostgreSQL connection"
)


def plain_user_view(request: HttpRequest) -> JsonResponse:
    # No decorator: the lazy request.user is loaded here, inside the view.
    return JsonResponse({"username": request.user.get_username()})


@bearer_required
async def async_me(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    return JsonResponse({"username": user.get_username()})


async def async_plain_user_view(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    return JsonResponse({"username": user.get_username()})


def _urlpatterns() -> list[Any]:
    from testproject.urls import urlpatterns

    return [
        path("drf/me/", MeView.as_view()),
        path("plain-user/", plain_user_view),
        path("async-me/", async_me),
        path("async-plain-user/", async_plain_user_view),
        *urlpatterns,
    ]


urlpatterns = _urlpatterns()


@pytest.fixture
def web(live_server: Any, fast_hashing: None, settings: Any) -> Iterator[Http]:
    settings.ROOT_URLCONF = __name__
    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages_for("redis", settings)}
    yield Http(live_server.url)
    framework = AuthFramework()
    framework.storage.flush()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _database_down() -> Iterator[None]:
    """Cut every connection to the test database and refuse new ones until the block ends."""
    saved = {key: connection.settings_dict.get(key) for key in ("HOST", "PORT")}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # One settings dict is shared by the connections of every thread (the live server's too).
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(_closed_port()))
    connection.close()
    try:
        yield
    finally:
        connection.settings_dict.update(saved)
        connection.close()


@pytest.fixture
def database_down(web: Http) -> Iterator[None]:
    with _database_down():
        yield


def _assert_unavailable(reply: Reply, *, drf: bool = False) -> None:
    assert reply.headers["Content-Type"] == "application/json", (reply.status, reply.raw[:300])
    assert reply.status == 503, reply.raw[:300]
    if drf:  # DRF views answer in DRF's own shape, as for its other errors
        assert reply.json == {
            "detail": "The token storage or the user database cannot be reached; retry later."
        }
    else:
        assert reply.json["error"] == "temporarily_unavailable"
    assert reply.headers["Cache-Control"] == "no-store" or drf
    assert int(reply.headers["Retry-After"]) > 0


@pytest.fixture
def pairs(web: Http, user_factory: Any) -> list[IssuedToken]:
    user_factory(username="down-ann")
    framework = AuthFramework()
    framework.create_session("down-ann")
    return [framework.authenticate("down-ann", PASSWORD) for _ in range(2)]


def _each_endpoint(web: Http, pairs: list[IssuedToken]) -> dict[str, Reply]:
    access = pairs[0].access_token
    return {
        "login": web.json("POST", "/auth/token/", {"username": "down-ann", "password": PASSWORD}),
        "refresh": web.json(
            "POST", "/auth/token/refresh/", {"refresh_token": pairs[1].refresh_token}
        ),
        "me": web.json("GET", "/api/me/", token=access),
        "sessions": web.json("GET", "/auth/sessions/", token=access),
        "introspect": web.json(
            "POST", "/auth/token/introspect/", {"token": pairs[1].access_token}, token=access
        ),
        "logout-all": web.json("POST", "/auth/logout-all/", token=access),
        "drf": web.json("GET", "/drf/me/", token=access),
        "plain-view": web.json("GET", "/plain-user/", token=access),
    }


def test_every_endpoint_answers_503_while_the_user_database_is_down(
    web: Http, pairs: list[IssuedToken], database_down: None
) -> None:
    # Twice: the first request meets the connection the server killed, the second a refused
    # reconnect.
    wrong = []
    for attempt in range(2):
        for name, reply in _each_endpoint(web, pairs).items():
            try:
                _assert_unavailable(reply, drf=name == "drf")
            except (AssertionError, ValueError, KeyError):
                wrong.append(f"{name} (attempt {attempt + 1}): {reply.status} {reply.raw[:60]!r}")
    assert wrong == []


def test_async_stack_answers_503(web: Http, pairs: list[IssuedToken], database_down: None) -> None:
    # ASGI: the middleware's async path, abearer_refusal, and process_exception in async mode.
    auth = {"Authorization": f"Bearer {pairs[0].access_token}"}

    async def scenario() -> list[Any]:
        client = AsyncClient()
        return [
            await client.get("/async-me/", headers=auth),
            await client.get("/async-plain-user/", headers=auth),
            await client.get("/api/me/", headers=auth),
        ]

    for response in async_to_sync(scenario)():
        assert response.status_code == 503, response.content[:200]
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"] == "temporarily_unavailable"
        assert response["Retry-After"] == "5"


def test_the_framework_raises_storage_unavailable_sync_and_async(
    web: Http, pairs: list[IssuedToken], database_down: None
) -> None:
    framework = AuthFramework()
    record = framework.verify_token(pairs[0].access_token)  # Redis: still fine
    calls: dict[str, Callable[[], object]] = {
        "authenticate": lambda: framework.authenticate("down-ann", PASSWORD),
        "aauthenticate": lambda: async_to_sync(framework.aauthenticate)("down-ann", PASSWORD),
        "get_user": lambda: framework.get_user(record),
        "aget_user": lambda: async_to_sync(framework.aget_user)(record),
        "introspect": lambda: framework.introspect(pairs[1].access_token),
        "aintrospect": lambda: async_to_sync(framework.aintrospect)(pairs[1].access_token),
        "list_sessions": lambda: framework.list_sessions("down-ann"),
        "alist_sessions": lambda: async_to_sync(framework.alist_sessions)("down-ann"),
    }
    for name, call in calls.items():
        with pytest.raises(StorageUnavailable):
            call()
        assert name  # for the traceback


def test_everything_works_again_once_the_database_is_back(
    web: Http, pairs: list[IssuedToken]
) -> None:
    access = pairs[0].access_token
    with _database_down():
        _assert_unavailable(web.json("GET", "/api/me/", token=access))
    # Django closes the server thread's broken connection at the next request and reconnects.
    reply = web.json("GET", "/api/me/", token=access)
    assert reply.status == 200
    assert reply.json["username"] == "down-ann"
    login = {"username": "down-ann", "password": PASSWORD}
    assert web.json("POST", "/auth/token/", login).status == 200
