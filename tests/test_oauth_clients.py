"""Standard OAuth 2.0 client libraries against the endpoints, over real HTTP, unchanged.

authlib's and requests-oauthlib's ``OAuth2Session`` log in with the password grant and then
refresh on their own when the access token expires: RFC 6749 section 6, ``grant_type=
refresh_token`` sent to the one token URL they were given (``token/``). Nothing here tells them
about ``token/refresh/``. The refresh grant at ``token/`` is then attacked as a client would:
hostile bodies, and two refreshes of one token at once.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from django.db import connection
from oauthlib.oauth2 import LegacyApplicationClient
from requests_oauthlib import OAuth2Session as RequestsOAuthlibSession

from django_authfw import AuthFramework
from django_authfw.http import MAX_BODY_BYTES
from django_authfw.models import AuditLog

from .factories import PASSWORD
from .http_support import default_storage_backend, fast_hashing, user_factory
from .test_live_http import Http, Reply

__all__ = ["default_storage_backend", "fast_hashing", "user_factory"]

TOKEN = "/auth/token/"
REFRESH = "/auth/token/refresh/"
ME = "/api/me/"


@pytest.fixture
def web(live_server: Any, fast_hashing: None) -> Http:
    return Http(live_server.url)


def _audit(action: str, outcome: bool | None = None) -> int:
    """Audit events so far (the database audit table, whatever the token storage)."""
    events = AuditLog.objects.filter(action=action)
    if outcome is not None:
        events = events.filter(outcome=outcome)
    return events.count()


def _ttl(settings: Any, ttl: timedelta) -> None:
    # Read live by the live server's thread: the next token it issues has this lifetime.
    settings.AUTHFW = {**settings.AUTHFW, "ACCESS_TOKEN_TTL": ttl}


# authlib ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_auth",
    [
        {},
        {"client_id": "app", "client_secret": "shh"},  # sent as Basic: ignored by the server
        {
            "client_id": "app",
            "client_secret": "shh",
            "token_endpoint_auth_method": "client_secret_post",
        },
    ],
    ids=["no-client", "client-basic", "client-post"],
)
def test_authlib_refreshes_by_itself_at_the_token_endpoint(
    live_server: Any,
    default_storage_backend: str,
    user_factory: Any,
    settings: Any,
    client_auth: dict[str, str],
) -> None:
    user = user_factory()
    token_url = live_server.url + TOKEN
    # authlib refreshes a token that expires within its 60 s leeway: every 30 s token is due.
    # (Set before the login: changing AUTHFW later would rebuild the in-process storages.)
    _ttl(settings, timedelta(seconds=30))
    session = AuthlibSession(token_endpoint=token_url, **client_auth)
    first = session.fetch_token(token_url, username=user.get_username(), password=PASSWORD)
    assert first["expires_in"] == 30

    seen = [first["access_token"]]
    for _ in range(3):
        reply = session.get(live_server.url + ME, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["username"] == user.get_username()
        seen.append(session.token["access_token"])

    # One refresh before each call, each rotating the pair it got from the one before.
    assert len(set(seen)) == 4
    assert session.token["refresh_token"] != first["refresh_token"]
    assert _audit("refresh", outcome=True) == 3
    assert _audit("refresh_reuse") == 0
    # Rotation: the first pair is dead.
    stale = requests.get(
        live_server.url + ME,
        headers={"Authorization": f"Bearer {first['access_token']}"},
        timeout=30,
    )
    assert stale.status_code == 401


# requests-oauthlib ----------------------------------------------------------------------------


def test_requests_oauthlib_refreshes_by_itself_at_the_token_endpoint(
    live_server: Any,
    user_factory: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # oauthlib refuses plain http unless told it is a test; the live server has no TLS.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    user = user_factory()
    token_url = live_server.url + TOKEN
    saved: list[dict[str, Any]] = []
    session = RequestsOAuthlibSession(
        client=LegacyApplicationClient(client_id="app"),
        auto_refresh_url=token_url,
        token_updater=saved.append,
    )
    # oauthlib refreshes only once the token has expired (no leeway): a 1 s token, waited out.
    _ttl(settings, timedelta(seconds=1))
    first = session.fetch_token(token_url, username=user.get_username(), password=PASSWORD)
    _ttl(settings, timedelta(hours=1))
    deadline = first["expires_at"]
    while time.time() <= deadline:
        time.sleep(0.05)

    reply = session.get(live_server.url + ME, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["username"] == user.get_username()
    assert len(saved) == 1
    assert saved[0]["access_token"] != first["access_token"]
    assert saved[0]["refresh_token"] != first["refresh_token"]
    assert _audit("refresh", outcome=True) == 1


# The refresh grant at token/, attacked --------------------------------------------------------


def _form(pairs: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(pairs).encode()


def _hostile_bodies(refresh_token: str) -> dict[str, tuple[bytes, str, int, str]]:
    """name: (body, content type, status, error). None of them may refresh anything."""
    json_type = "application/json"
    form_type = "application/x-www-form-urlencoded"
    grant = ("grant_type", "refresh_token")
    return {
        "missing-json": (b'{"grant_type": "refresh_token"}', json_type, 400, "invalid_request"),
        "missing-form": (_form([grant]), form_type, 400, "invalid_request"),
        "empty": (_form([grant, ("refresh_token", "")]), form_type, 400, "invalid_request"),
        # Repeated, the real token first or last: neither copy may be used.
        "repeated-form": (
            _form([grant, ("refresh_token", refresh_token), ("refresh_token", "afw_rt_x")]),
            form_type,
            400,
            "invalid_request",
        ),
        "repeated-json": (
            json.dumps({"grant_type": "refresh_token", "refresh_token": "afw_rt_x"})[:-1].encode()
            + f', "refresh_token": "{refresh_token}"}}'.encode(),
            json_type,
            400,
            "invalid_request",
        ),
        "repeated-grant-type": (
            _form([grant, ("grant_type", "password"), ("refresh_token", refresh_token)]),
            form_type,
            400,
            "invalid_request",
        ),
        "number": (
            b'{"grant_type": "refresh_token", "refresh_token": 12345}',
            json_type,
            400,
            "invalid_request",
        ),
        "list": (
            json.dumps({"grant_type": "refresh_token", "refresh_token": [refresh_token]}).encode(),
            json_type,
            400,
            "invalid_request",
        ),
        "object": (
            json.dumps(
                {"grant_type": "refresh_token", "refresh_token": {"token": refresh_token}}
            ).encode(),
            json_type,
            400,
            "invalid_request",
        ),
        "true": (
            b'{"grant_type": "refresh_token", "refresh_token": true}',
            json_type,
            400,
            "invalid_request",
        ),
        "grant-type-list": (
            json.dumps({"grant_type": ["refresh_token"], "refresh_token": refresh_token}).encode(),
            json_type,
            400,
            "invalid_request",
        ),
        "nul-json": (
            json.dumps(
                {"grant_type": "refresh_token", "refresh_token": refresh_token + "\x00"}
            ).encode(),
            json_type,
            400,
            "invalid_grant",
        ),
        "nul-form": (
            _form([grant, ("refresh_token", refresh_token[:20] + "\x00" + refresh_token[21:])]),
            form_type,
            400,
            "invalid_grant",
        ),
        "nul-grant-type": (
            _form([("grant_type", "refresh_token\x00"), ("refresh_token", refresh_token)]),
            form_type,
            400,
            "unsupported_grant_type",
        ),
        "surrogate": (
            b'{"grant_type": "refresh_token", "refresh_token": "afw_rt_\\ud800"}',
            json_type,
            400,
            "invalid_request",
        ),
        "long": (
            _form([grant, ("refresh_token", "afw_rt_" + "A" * 5000)]),
            form_type,
            400,
            "invalid_grant",
        ),
        "oversized": (
            _form([grant, ("refresh_token", "afw_rt_" + "A" * MAX_BODY_BYTES)]),
            form_type,
            413,
            "request_too_large",
        ),
        "access-token-instead": (
            _form([grant, ("refresh_token", "afw_at_" + refresh_token[7:])]),
            form_type,
            400,
            "invalid_grant",
        ),
        "xml": (b"<refresh_token/>", "application/xml", 415, "unsupported_media_type"),
    }


def test_hostile_refresh_grant_bodies_over_http(web: Http, user_factory: Any) -> None:
    user = user_factory()
    pair = AuthFramework().authenticate(user.get_username(), PASSWORD)
    assert pair.refresh_token is not None
    for name, (raw, content_type, status, error) in _hostile_bodies(pair.refresh_token).items():
        reply = web.send("POST", TOKEN, raw, [("Content-Type", content_type)])
        assert reply.status == status, (name, reply.raw[:300])
        assert reply.headers["Content-Type"] == "application/json", name
        assert reply.headers["Cache-Control"] == "no-store", name
        assert reply.json["error"] == error, (name, reply.json)
        assert pair.refresh_token not in reply.raw.decode("utf-8", "replace"), name
    # Nothing was refreshed, revoked or taken for a replay: the real token still works once.
    assert _audit("refresh", outcome=True) == 0
    assert _audit("refresh_reuse") == 0
    reply = web.form(TOKEN, {"grant_type": "refresh_token", "refresh_token": pair.refresh_token})
    assert reply.status == 200, reply.raw


needs_server_database = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="requests served at once need a server database; SQLite serialises writers",
)


def _race(web: Http, path: str, body: dict[str, str], count: int = 2) -> list[Reply]:
    barrier = threading.Barrier(count)
    replies: list[Reply | BaseException] = [RuntimeError("not run")] * count

    def send(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            replies[index] = web.form(path, body)
        except BaseException as exc:
            replies[index] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(r, Reply) for r in replies), replies
    return [r for r in replies if isinstance(r, Reply)]


@needs_server_database
@pytest.mark.parametrize("path", [TOKEN, REFRESH], ids=["token", "token-refresh"])
def test_two_refreshes_of_one_token_at_once(
    web: Http, default_storage_backend: str, user_factory: Any, path: str
) -> None:
    """Exactly one wins; the other is a replay of a rotated token, so the family is revoked
    and the reuse audited, the same at ``token/`` and at ``token/refresh/``."""
    user = user_factory()
    pair = AuthFramework().authenticate(user.get_username(), PASSWORD)
    assert pair.refresh_token is not None
    replies = _race(web, path, {"grant_type": "refresh_token", "refresh_token": pair.refresh_token})
    statuses = sorted(r.status for r in replies)
    assert statuses == [200, 400], [r.raw for r in replies]
    winner = next(r for r in replies if r.status == 200).json
    loser = next(r for r in replies if r.status == 400).json
    assert loser == {
        "error": "invalid_grant",
        "error_description": "The refresh token is invalid, expired or revoked.",
    }
    # The loser presented a token that had just been rotated: reuse, the whole family revoked.
    assert web.json("GET", ME, token=winner["access_token"]).status == 401
    assert web.json("GET", ME, token=pair.access_token).status == 401
    assert _audit("refresh", outcome=True) == 1
    assert _audit("refresh_reuse") == 1
    reply = web.form(
        TOKEN, {"grant_type": "refresh_token", "refresh_token": winner["refresh_token"]}
    )
    assert reply.status == 400
