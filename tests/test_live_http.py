"""Every endpoint over real HTTP (http.client) against pytest-django's live server, and the demo
script as a newcomer runs it.

The test client skips the HTTP layer; here requests go over a socket, through the WSGI server,
with the bytes a real client sends (raw junk headers, duplicates, oversized lines).
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_authfw import AuthFramework
from django_authfw.models import AuditLog

from .factories import PASSWORD
from .http_support import INVALID_TOKEN_BODY, INVALID_TOKEN_CHALLENGE, fast_hashing, user_factory

__all__ = ["fast_hashing", "user_factory"]

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class Http:
    """A tiny real HTTP client: one connection per request, bytes as given."""

    def __init__(self, base_url: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: list[tuple[str | bytes, str | bytes]] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.putrequest(method, path)
            for name, value in headers or []:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def json(self, method: str, path: str, data: Any = None, token: str | None = None) -> Reply:
        headers: list[tuple[str | bytes, str | bytes]] = []
        body = None
        if data is not None:
            body = json.dumps(data).encode()
            headers.append(("Content-Type", "application/json"))
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        return self.send(method, path, body, headers)

    def form(self, path: str, data: dict[str, str], token: str | None = None) -> Reply:
        headers: list[tuple[str | bytes, str | bytes]] = [
            ("Content-Type", "application/x-www-form-urlencoded")
        ]
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        return self.send("POST", path, urllib.parse.urlencode(data).encode(), headers)


@pytest.fixture
def web(live_server: Any, fast_hashing: None) -> Http:
    return Http(live_server.url)


def test_every_endpoint_over_http(web: Http, user_factory: Any) -> None:
    # register/ (JSON) and token/ (form fields)
    reply = web.json(
        "POST", "/auth/register/", {"username": "http-ann", "password": "passphrase 1"}
    )
    assert reply.status == 201
    user_id = reply.json["id"]
    reply = web.form("/auth/token/", {"username": "http-ann", "password": "passphrase 1"})
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Pragma"] == "no-cache"
    assert reply.headers["Content-Type"] == "application/json"
    pair = reply.json
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token"}

    # A protected endpoint.
    reply = web.json("GET", "/api/me/", token=pair["access_token"])
    assert reply.status == 200
    assert reply.json["username"] == "http-ann"
    reply = web.json("GET", "/api/me/")
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"

    # token/refresh/: rotation.
    reply = web.json("POST", "/auth/token/refresh/", {"refresh_token": pair["refresh_token"]})
    assert reply.status == 200
    fresh = reply.json
    assert web.json("GET", "/api/me/", token=pair["access_token"]).status == 401
    token = fresh["access_token"]

    # token/introspect/ (authenticated callers only).
    reply = web.json("POST", "/auth/token/introspect/", {"token": token}, token=token)
    assert reply.status == 200
    assert reply.json["active"] is True
    assert reply.json["sub"] == user_id
    assert web.json("POST", "/auth/token/introspect/", {"token": token}).status == 401

    # sessions/: list and end.
    session = AuthFramework().create_session("http-ann")
    reply = web.json("GET", "/auth/sessions/", token=token)
    assert reply.status == 200
    assert [s["session_id"] for s in reply.json["sessions"]] == [session.session_id]
    reply = web.json("DELETE", f"/auth/sessions/{session.session_id}/", token=token)
    assert reply.status == 200
    assert reply.json == {"ended": True}
    reply = web.json("DELETE", f"/auth/sessions/{session.session_id}/", token=token)
    assert reply.status == 404
    assert reply.json["error"] == "not_found"

    # logout-all/, then token/revoke/ (RFC 7009: 200 even for a dead or unknown token).
    second = web.form("/auth/token/", {"username": "http-ann", "password": "passphrase 1"}).json
    reply = web.json("POST", "/auth/logout-all/", token=token)
    assert reply.status == 200
    assert reply.json["revoked_tokens"] == 2
    assert web.json("GET", "/api/me/", token=second["access_token"]).status == 401
    for dead in (second["refresh_token"], "afw_rt_" + "Z" * 43, "junk"):
        reply = web.json("POST", "/auth/token/revoke/", {"token": dead})
        assert reply.status == 200
        assert reply.json == {}

    # Wrong method: JSON 405 with Allow.
    reply = web.json("GET", "/auth/token/")
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST, OPTIONS"
    assert reply.json["error"] == "method_not_allowed"


def test_lockout_over_http(web: Http, user_factory: Any) -> None:
    user_factory(username="http-bob")
    statuses = [
        web.json("POST", "/auth/token/", {"username": "http-bob", "password": "wrong"}).status
        for _ in range(5)
    ]
    assert statuses == [400] * 5
    reply = web.json("POST", "/auth/token/", {"username": "http-bob", "password": PASSWORD})
    assert reply.status == 429
    assert reply.json["error"] == "too_many_attempts"
    assert 0 < int(reply.headers["Retry-After"]) <= 900
    assert AuditLog.objects.filter(action="lockout").exists()


def test_invalid_tokens_over_http_are_indistinguishable(web: Http, user_factory: Any) -> None:
    user_factory(username="http-cy")
    pair = web.json("POST", "/auth/token/", {"username": "http-cy", "password": PASSWORD}).json
    web.json("POST", "/auth/token/revoke/", {"token": pair["access_token"]})
    replies = [
        web.json("GET", "/", token=token)
        for token in (pair["access_token"], "afw_at_" + "U" * 43, "some.jwt.value")
    ]
    for reply in replies:
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
        assert reply.json == INVALID_TOKEN_BODY
    assert len({r.raw for r in replies}) == 1


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe\xfd",
        b"Bearer abc\x00def",
        b"\x00\x01\x02\x03",
        b"\xc3\x28 \xa0\xa1",
        b"Bearer " + b"A" * 8000,
        b"Bearer a b c",
        b"Bearer\tabc",
    ],
    ids=["latin1", "nul", "control", "bad-utf8", "8kb", "spaces", "tab"],
)
def test_junk_authorization_bytes_get_400(web: Http, value: bytes) -> None:
    reply = web.send("GET", "/api/me/", headers=[("Authorization", value)])
    assert reply.status == 400
    assert reply.json["error"] == "invalid_request"
    assert reply.headers["WWW-Authenticate"].startswith('Bearer error="invalid_request"')


def test_duplicate_authorization_headers_are_malformed(web: Http, user_factory: Any) -> None:
    user_factory(username="http-dee")
    pair = web.json("POST", "/auth/token/", {"username": "http-dee", "password": PASSWORD}).json
    value = f"Bearer {pair['access_token']}"
    reply = web.send(
        "GET", "/api/me/", headers=[("Authorization", value), ("Authorization", value)]
    )
    assert reply.status == 400


def test_oversized_header_line_is_refused_by_the_server(web: Http) -> None:
    # Past the server's 64 KB line limit: refused with 431 before Django sees it.
    reply = web.send("GET", "/api/me/", headers=[("Authorization", b"Bearer " + b"A" * 70_000)])
    assert reply.status == 431
    # The server is still fine.
    assert web.json("GET", "/api/me/").status == 401


def test_oversized_body_over_http(web: Http) -> None:
    body = b'{"username": "' + b"x" * 100_000 + b'"}'
    reply = web.send("POST", "/auth/token/", body, [("Content-Type", "application/json")])
    assert reply.status == 413
    assert reply.json["error"] == "request_too_large"


# The demo, as the README starts it ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _demo_env(database: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "AUTHFW_TEST_DB_NAME")
    }
    env["DATABASE_URL"] = f"sqlite:///{database}"
    return env


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "testproject" / "demo.sh"), *args],
        cwd=tmp_path,
        env=_demo_env(tmp_path / "demo.sqlite3"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_refuses_a_taken_port_before_changing_anything(tmp_path: Path) -> None:
    database = tmp_path / "demo.sqlite3"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A fresh database: refused before the migration creates it.
        result = _demo(tmp_path, f"127.0.0.1:{port}")
        assert result.returncode != 0
        assert not database.exists(), result.stdout
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith(f"CommandError: Cannot serve on 127.0.0.1:{port} ("), message
        assert "Nothing was changed. Choose another port with the ADDR:PORT argument: " in message
        assert "bash testproject/demo.sh [ADDR:PORT]" in message
        assert "password" not in result.stdout

        # A set-up demo: the admin's password (and everything else) stays as it was.
        setup = _demo(tmp_path, "--no-serve", "--password", "first password")
        assert setup.returncode == 0, setup.stderr
        before = database.read_bytes()
        result = _demo(tmp_path, f"127.0.0.1:{port}", "--password", "second password")
        assert result.returncode != 0
        assert "Cannot serve on" in result.stderr
        assert database.read_bytes() == before
        assert "second password" not in result.stdout


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """``bash testproject/demo.sh`` on a fresh SQLite file; yields (url, username, password)."""
    port = _free_port()
    env = _demo_env(tmp_path / "demo.sqlite3")
    log = (tmp_path / "demo.log").open("w+")
    process = subprocess.Popen(
        ["bash", str(REPO / "testproject" / "demo.sh"), f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped below with everything it ran
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            output = (tmp_path / "demo.log").read_text()
            if process.poll() is not None:
                pytest.fail(f"demo.sh exited with {process.returncode}:\n{output}")
            if "Quit the server" in output:
                try:
                    with urllib.request.urlopen(url, timeout=5):
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(f"demo.sh did not serve within 120 s:\n{output}")
            time.sleep(0.2)
        login = re.search(r"login:\s+username '([^']+)', password '([^']+)'", output)
        assert login, output
        assert f"demo page:  {url}" in output
        assert f"admin:      {url}admin/" in output
        yield url, login.group(1), login.group(2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_demo_script_serves_the_walkthrough_and_the_admin(
    demo_server: tuple[str, str, str],
) -> None:
    url, username, password = demo_server
    web = Http(url)
    page = web.send("GET", "/")
    assert page.status == 200
    assert b"django_authfw demo" in page.raw
    assert web.send("GET", "/static/demo/demo.js").status == 200
    assert (
        web.json(
            "POST", "/auth/register/", {"username": "newcomer", "password": "pass phrase"}
        ).status
        == 201
    )
    pair = web.json(
        "POST", "/auth/token/", {"username": "newcomer", "password": "pass phrase"}
    ).json
    assert web.json("GET", "/api/me/", token=pair["access_token"]).json["username"] == "newcomer"

    # The printed credentials open the admin, and the audit log shows the login.
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(url + "admin/login/").read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert csrf
    data = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": csrf.group(1),
            "username": username,
            "password": password,
            "next": "/admin/django_authfw/auditlog/",
        }
    ).encode()
    request = urllib.request.Request(url + "admin/login/?next=/admin/django_authfw/auditlog/", data)
    request.add_header("Referer", url + "admin/login/")
    audit = opener.open(request).read().decode()
    assert "Select audit event to view" in audit
    assert "newcomer" in audit
