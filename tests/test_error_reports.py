"""Error reports never show a password or a token (issue 10 item 7).

A real exception is raised inside the endpoints' frames after the secrets are bound: the token
storage is misconfigured (``AUTHFW["STORAGES"]`` has no ``default`` alias), so building the
framework raises ``StorageError`` in the view, or in the middleware for a Bearer request.
Django's own ``ExceptionReporter`` with the default ``SafeExceptionReporterFilter`` (what the
DEBUG 500 page and the admins' error email show) must not contain the secret anywhere. Before the
fix ``TokenView.post`` and the others left ``params``, ``password`` and the tokens as plain
locals, and the page showed them.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.views.debug import ExceptionReporter

from .http_support import fast_hashing, user_factory

__all__ = ["fast_hashing", "user_factory"]

PASSWORD = "Sekrit-passphrase-7731"
REFRESH = "afw_rt_SekritRefreshToken7731xxxxxxxxxxxxxxxxxxxxxx"
ACCESS = "afw_at_SekritAccessToken7731xxxxxxxxxxxxxxxxxxxxxxx"
SECRETS = (PASSWORD, REFRESH, ACCESS, "Sekrit")


class ReadBodyMiddleware:
    """Reads ``request.body`` first, as request-logging middleware does: with the body cached,
    ``request.POST`` is parsed and appears in error reports."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.body  # noqa: B018
        return self.get_response(request)


@pytest.fixture
def broken_storage(settings: Any, db: None) -> None:
    # A configuration mistake: no "default" alias. Building the framework raises StorageError.
    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": {"other": {"BACKEND": "django_authfw.storage.InMemoryStorage"}},
    }
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.ReadBodyMiddleware"]


def _report(response: Any) -> str:
    assert response.status_code == 500
    assert response.exc_info is not None, "no exception was raised in the request"
    reporter = ExceptionReporter(response.wsgi_request, *response.exc_info)
    return reporter.get_traceback_text() + reporter.get_traceback_html()


def _assert_clean(report: str) -> None:
    for secret in SECRETS:
        assert secret not in report
    assert "StorageError" in report  # the report is the real one, with the real exception


CASES = [
    ("/auth/register/", "json", {"username": "report-ann", "password": PASSWORD}),
    ("/auth/register/", "form", {"username": "report-ann", "password": PASSWORD}),
    ("/auth/token/", "json", {"username": "report-ann", "password": PASSWORD}),
    ("/auth/token/", "form", {"username": "report-ann", "password": PASSWORD}),
    ("/auth/token/refresh/", "json", {"refresh_token": REFRESH}),
    ("/auth/token/refresh/", "form", {"refresh_token": REFRESH}),
    ("/auth/token/revoke/", "form", {"token": REFRESH}),
    ("/auth/token/introspect/", "form", {"token": ACCESS}),
]


@pytest.mark.parametrize(("path", "kind", "fields"), CASES)
def test_endpoint_reports_hide_secrets(
    broken_storage: None, user_factory: Any, path: str, kind: str, fields: dict[str, str]
) -> None:
    client = Client(raise_request_exception=False)
    if path.endswith("introspect/"):
        client.force_login(user_factory(is_staff=True))  # a staff session reaches the body
    if kind == "json":
        response = client.post(path, json.dumps(fields), content_type="application/json")
    else:
        response = client.post(
            path,
            urllib.parse.urlencode(fields),
            content_type="application/x-www-form-urlencoded",
        )
    report = _report(response)
    _assert_clean(report)
    # The view's own frame is there, its locals hidden rather than missing.
    assert "in post" in report
    assert "********************" in report


def test_middleware_report_hides_the_bearer_token(broken_storage: None) -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {ACCESS}")
    report = _report(response)
    _assert_clean(report)
    assert "in authenticate_request" in report


def test_framework_frames_hide_the_issued_tokens(
    monkeypatch: pytest.MonkeyPatch, user_factory: Any, settings: Any
) -> None:
    """Called outside a view (a management command, a task), ``authenticate`` (the facade's and
    login.py's) and ``mint`` mark their own frames: an exception after the raw tokens exist
    shows none of them."""

    from django_authfw import AuthFramework, tokens
    from django_authfw.storage import InMemoryStorage

    from .factories import PASSWORD as USER_PASSWORD

    settings.DEBUG = False
    user = user_factory(username="ann")
    minted: list[str] = []
    real_new_secret = tokens.new_secret

    def new_secret(prefix: str) -> str:
        minted.append(real_new_secret(prefix))
        return minted[-1]

    def token_id_for(access_digest: str) -> str:  # the record's id, after both secrets exist
        raise RuntimeError("storage id generator failed")

    monkeypatch.setattr(tokens, "new_secret", new_secret)
    monkeypatch.setattr(tokens, "token_id_for", token_id_for)
    storage = InMemoryStorage()
    with pytest.raises(RuntimeError) as caught:
        AuthFramework(storage=storage, audit_storage=storage).authenticate(
            user.get_username(), USER_PASSWORD
        )
    frames = ExceptionReporter(None, caught.type, caught.value, caught.tb).get_traceback_frames()
    assert len(minted) == 2
    # The library's frames only: this test's own frames hold the secrets it collected.
    ours = [f for f in frames if "/django_authfw/" in f["filename"]]
    assert [f["function"] for f in ours].count("authenticate") == 2
    assert {f["function"] for f in ours} >= {"authenticate", "mint"}
    shown = repr([f["vars"] for f in ours])
    for secret in (*minted, USER_PASSWORD):
        assert secret not in shown
