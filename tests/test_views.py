"""The JSON endpoints of django_authfw.urls through Django's test client."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import AsyncClient, Client
from django.urls import reverse

from django_authfw import AuthFramework
from django_authfw.http import MAX_BODY_BYTES
from django_authfw.models import AuditLog, Token

from .factories import PASSWORD
from .http_support import (
    INVALID_TOKEN_BODY,
    bearer,
    body,
    default_storage_backend,
    fast_hashing,
    login,
    post_json,
    user_factory,
)

__all__ = ["default_storage_backend", "fast_hashing", "login", "user_factory"]

pytestmark = pytest.mark.django_db

REGISTER = "/auth/register/"
TOKEN = "/auth/token/"
REFRESH = "/auth/token/refresh/"
REVOKE = "/auth/token/revoke/"
INTROSPECT = "/auth/token/introspect/"
LOGOUT_ALL = "/auth/logout-all/"
SESSIONS = "/auth/sessions/"
ME = "/api/me/"


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    data: dict[str, Any] = body(response)
    assert set(data) == {"error", "error_description"}
    assert data["error"] == code
    assert data["error_description"]
    assert response["Cache-Control"] == "no-store"
    return data


def test_url_names_are_namespaced() -> None:
    assert reverse("authfw:token") == TOKEN
    assert reverse("authfw:session-detail", args=["abc"]) == "/auth/sessions/abc/"


# register/ ------------------------------------------------------------------------------------


def test_register_with_json(client: Client, fast_hashing: None) -> None:
    response = post_json(client, REGISTER, {"username": "ann", "password": "a long passphrase"})
    assert response.status_code == 201
    data = body(response)
    assert data["username"] == "ann"
    assert data["id"]
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    assert AuditLog.objects.filter(action="register", outcome=True, user_id=data["id"]).exists()


def test_register_with_form_fields(client: Client, fast_hashing: None) -> None:
    response = client.post(REGISTER, {"username": "ben", "password": "a long passphrase"})
    assert response.status_code == 201
    # The account works.
    response = client.post(TOKEN, {"username": "ben", "password": "a long passphrase"})
    assert response.status_code == 200


def test_register_multipart_and_urlencoded(client: Client, fast_hashing: None) -> None:
    # Django's test client sends multipart by default; urlencoded by hand.
    response = client.post(
        REGISTER,
        "username=cid&password=a+long+passphrase",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 201


def test_register_taken_username(client: Client, user_factory: Any) -> None:
    user_factory(username="dora")
    response = post_json(client, REGISTER, {"username": "dora", "password": "another passphrase"})
    assert_error(response, 409, "user_exists")


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"password": "a long passphrase"}, "username"),
        ({"username": "eve"}, "password"),
        ({"username": "", "password": "x"}, "username"),
        ({"username": 5, "password": "a long passphrase"}, "string"),
        ({"username": ["eve"], "password": "a long passphrase"}, "string"),
        ({"username": "eve", "password": "p" * 1000}, "255"),
        ({"username": "e" * 1000, "password": "a long passphrase"}, "at most 150"),
        ({"username": "ev\x00e", "password": "a long passphrase"}, "username: Enter a valid"),
        ({"username": "e v e", "password": "a long passphrase"}, "username: Enter a valid"),
    ],
)
def test_register_refuses_bad_parameters(
    client: Client, fast_hashing: None, payload: dict[str, Any], needle: str
) -> None:
    data = assert_error(post_json(client, REGISTER, payload), 400, "invalid_request")
    assert needle in data["error_description"]
    assert not AuditLog.objects.filter(action="register", outcome=True).exists()


def test_register_applies_the_password_validators(client: Client, settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["tests.hashers.CountingArgon2PasswordHasher"]
    settings.AUTH_PASSWORD_VALIDATORS = [
        {
            "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
            "OPTIONS": {"min_length": 12},
        },
        {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    ]
    data = assert_error(
        post_json(client, REGISTER, {"username": "fred", "password": "short"}),
        400,
        "invalid_request",
    )
    assert data["error_description"].startswith("password: This password is too short.")
    data = assert_error(
        post_json(client, REGISTER, {"username": "fredericks", "password": "fredericks1"}),
        400,
        "invalid_request",
    )
    assert "too similar to the username" in data["error_description"]
    response = post_json(
        client, REGISTER, {"username": "fred", "password": "long enough passphrase"}
    )
    assert response.status_code == 201


# Bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_request"),
        (b'["a", "list"]', "application/json", 400, "invalid_request"),
        (b"\xff\xfe\x00", "application/json", 400, "invalid_request"),
        (
            b"username=a&username=b&password=x",
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (b"<xml/>", "application/xml", 415, "unsupported_media_type"),
        (b"x" * (MAX_BODY_BYTES + 1), "application/json", 413, "request_too_large"),
        (b"\xff\xfe", "application/x-www-form-urlencoded", 400, "invalid_request"),
    ],
    ids=["bad-json", "json-list", "binary-json", "repeated", "xml", "too-large", "binary-form"],
)
def test_bodies_are_checked(
    client: Client, content: bytes, content_type: str, status: int, code: str
) -> None:
    for url in (REGISTER, TOKEN, REFRESH, REVOKE):
        response = client.post(url, content, content_type=content_type)
        assert_error(response, status, code)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"username": "nobody", "username": "ann", "password": "x"}',
        b'{"username": "ann", "password": "x", "password": "y"}',
        b'{"refresh_token": "a", "token": "b", "refresh_token": "c", "token": "d"}',
        b'{"username": {"a": 1, "a": 2}, "password": "x"}',
    ],
    ids=["first-member", "last-member", "every-endpoints-own", "nested"],
)
def test_repeated_json_members_are_refused_like_repeated_form_fields(
    client: Client, user_factory: Any, raw: bytes
) -> None:
    # "ann" would log in if the last member won (json.loads' default): refused before that.
    user_factory(username="ann")
    for url in (REGISTER, TOKEN, REFRESH, REVOKE):
        data = assert_error(
            client.post(url, raw, content_type="application/json"), 400, "invalid_request"
        )
        assert "is sent more than once" in data["error_description"]
    assert not AuditLog.objects.filter(action="login").exists()


ENDPOINT_METHODS = {
    REGISTER: "POST, OPTIONS",
    TOKEN: "POST, OPTIONS",
    REFRESH: "POST, OPTIONS",
    REVOKE: "POST, OPTIONS",
    INTROSPECT: "POST, OPTIONS",
    LOGOUT_ALL: "POST, OPTIONS",
    SESSIONS: "GET, HEAD, OPTIONS",
    SESSIONS + "abc/": "POST, DELETE, OPTIONS",
}


@pytest.mark.parametrize(("url", "allowed"), ENDPOINT_METHODS.items())
def test_options_answers_json_with_no_store(client: Client, url: str, allowed: str) -> None:
    # Without a token too: a CORS preflight never carries one.
    response = client.options(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    assert response["Allow"] == allowed
    assert body(response) == {"methods": allowed.split(", ")}


def test_too_many_parameters(client: Client) -> None:
    payload = {f"p{i}": "x" for i in range(50)}
    assert_error(post_json(client, TOKEN, payload), 400, "invalid_request")


def test_oversized_body_refused_by_content_length(client: Client) -> None:
    response = client.generic(
        "POST",
        TOKEN,
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH=str(10 * MAX_BODY_BYTES),
    )
    assert_error(response, 413, "request_too_large")


@pytest.mark.parametrize(
    ("url", "method", "allowed"),
    [
        (REGISTER, "get", "POST, OPTIONS"),
        (TOKEN, "get", "POST, OPTIONS"),
        (TOKEN, "put", "POST, OPTIONS"),
        (REFRESH, "delete", "POST, OPTIONS"),
        (REVOKE, "get", "POST, OPTIONS"),
        (INTROSPECT, "get", "POST, OPTIONS"),
        (LOGOUT_ALL, "get", "POST, OPTIONS"),
        (SESSIONS, "post", "GET, HEAD, OPTIONS"),
        (SESSIONS + "abc/", "get", "POST, DELETE, OPTIONS"),
    ],
)
def test_wrong_method_gets_json_405(client: Client, url: str, method: str, allowed: str) -> None:
    response = getattr(client, method)(url)
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == allowed


def test_endpoints_are_csrf_exempt(fast_hashing: None, user_factory: Any, login: Any) -> None:
    user_factory(username="fay")
    client = Client(enforce_csrf_checks=True)
    response = client.post(TOKEN, {"username": "fay", "password": PASSWORD})
    assert response.status_code == 200
    token = body(response)["access_token"]
    for url in (REGISTER, TOKEN, REFRESH, REVOKE, INTROSPECT, LOGOUT_ALL):
        assert client.post(url, **bearer(token)).status_code != 403, url
    session = AuthFramework().create_session("fay")
    token = login("fay").access_token
    response = client.delete(f"{SESSIONS}{session.session_id}/", **bearer(token))
    assert response.status_code == 200


# token/ ---------------------------------------------------------------------------------------


def test_password_login_returns_rfc6749_response(client: Client, user_factory: Any) -> None:
    user_factory(username="gus")
    response = post_json(client, TOKEN, {"username": "gus", "password": PASSWORD})
    assert response.status_code == 200
    data = body(response)
    assert set(data) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 3600  # the configured lifetime, as docs/http-api.md shows
    assert data["access_token"].startswith("afw_at_")
    assert data["refresh_token"].startswith("afw_rt_")
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    # The token works; only its digest is stored.
    assert body(client.get(ME, **bearer(data["access_token"])))["username"] == "gus"
    assert not Token.objects.filter(access_token=data["access_token"]).exists()


def test_grant_type_password_is_accepted_and_others_refused(
    client: Client, user_factory: Any
) -> None:
    user_factory(username="hal")
    creds = {"username": "hal", "password": PASSWORD}
    assert post_json(client, TOKEN, {**creds, "grant_type": "password"}).status_code == 200
    response = post_json(client, TOKEN, {**creds, "grant_type": "client_credentials"})
    assert_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(timedelta(hours=1), 3600), (timedelta(minutes=5), 300), (timedelta(seconds=90), 90)],
)
def test_expires_in_is_the_configured_lifetime(
    client: Client, user_factory: Any, settings: Any, ttl: timedelta, expected: int
) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "ACCESS_TOKEN_TTL": ttl}
    user_factory(username="ike")
    pair = body(post_json(client, TOKEN, {"username": "ike", "password": PASSWORD}))
    assert pair["expires_in"] == expected
    fresh = body(post_json(client, REFRESH, {"refresh_token": pair["refresh_token"]}))
    assert fresh["expires_in"] == expected
    grant = {"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]}
    assert body(client.post(TOKEN, grant))["expires_in"] == expected


def test_wrong_password_and_unknown_user_look_the_same(client: Client, user_factory: Any) -> None:
    user_factory(username="ivy")
    wrong = post_json(client, TOKEN, {"username": "ivy", "password": "not it"})
    unknown = post_json(client, TOKEN, {"username": "nobody-here", "password": "not it"})
    too_long = post_json(client, TOKEN, {"username": "x" * 300, "password": "not it"})
    assert_error(wrong, 400, "invalid_grant")
    assert wrong.content == unknown.content == too_long.content
    assert AuditLog.objects.filter(action="login", outcome=False).count() == 2


def test_inactive_user_cannot_log_in(client: Client, user_factory: Any) -> None:
    user_factory(username="jay", is_active=False)
    assert_error(
        post_json(client, TOKEN, {"username": "jay", "password": PASSWORD}), 400, "invalid_grant"
    )


# Lockout --------------------------------------------------------------------------------------


def _fail(client: Client, username: str, times: int) -> list[int]:
    return [
        post_json(client, TOKEN, {"username": username, "password": "wrong"}).status_code
        for _ in range(times)
    ]


def test_lockout_after_threshold_with_retry_after(client: Client, user_factory: Any) -> None:
    user_factory(username="kim")
    assert _fail(client, "kim", 5) == [400] * 5
    response = post_json(client, TOKEN, {"username": "kim", "password": PASSWORD})
    data = assert_error(response, 429, "too_many_attempts")
    assert "wait" in data["error_description"]
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 15 * 60
    # Audited: the failures, the lockout, and the refused attempt while locked.
    assert AuditLog.objects.filter(action="lockout").exists()
    assert AuditLog.objects.filter(action="login", outcome=False).count() == 6


@pytest.mark.parametrize("url", [TOKEN, REFRESH])
def test_the_refresh_grant_follows_the_same_lockout_rules_at_both_urls(
    client: Client, user_factory: Any, login: Any, url: str
) -> None:
    # A refresh carries no password: a locked username still refreshes, and failed refreshes
    # are never counted as failed logins.
    issued = login(user_factory(username="lou"))
    assert _fail(client, "lou", 5) == [400] * 5
    assert post_json(client, TOKEN, {"username": "lou", "password": PASSWORD}).status_code == 429
    grant = {"grant_type": "refresh_token"}
    fresh = post_json(client, url, {**grant, "refresh_token": issued.refresh_token})
    assert fresh.status_code == 200
    other = login(user_factory(username="max"))
    for _ in range(10):
        bad = post_json(client, url, {**grant, "refresh_token": "afw_rt_" + "Z" * 43})
        assert_error(bad, 400, "invalid_grant")
    assert post_json(client, TOKEN, {"username": "max", "password": PASSWORD}).status_code == 200
    assert (
        post_json(client, url, {**grant, "refresh_token": other.refresh_token}).status_code == 200
    )


def test_lockout_threshold_and_window_follow_settings(
    client: Client, settings: Any, user_factory: Any
) -> None:
    settings.AUTHFW = {
        **settings.AUTHFW,
        "LOCKOUT_THRESHOLD": 2,
        "LOCKOUT_WINDOW": timedelta(seconds=90),
    }
    user_factory(username="lea")
    assert _fail(client, "lea", 2) == [400, 400]
    response = post_json(client, TOKEN, {"username": "lea", "password": PASSWORD})
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 90


def test_unlock_command_lifts_the_lockout(client: Client, user_factory: Any, settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_IP_THRESHOLD": 5}
    user_factory(username="max")
    _fail(client, "max", 5)
    out = StringIO()
    call_command("authfw_unlock", "--username", "max", "--dry-run", stdout=out)
    assert "locked for" in out.getvalue()
    assert "Nothing changed" in out.getvalue()
    assert post_json(client, TOKEN, {"username": "max", "password": PASSWORD}).status_code == 429
    out = StringIO()
    call_command("authfw_unlock", "--username", "max", stdout=out)
    assert "Unlocked username 'max'" in out.getvalue()
    # The five failures came from one address, which is locked too.
    assert post_json(client, TOKEN, {"username": "max", "password": PASSWORD}).status_code == 429
    call_command("authfw_unlock", "--username", "max", "--ip", "127.0.0.1", stdout=out)
    assert "username 'max' and address 127.0.0.1" in out.getvalue()
    assert post_json(client, TOKEN, {"username": "max", "password": PASSWORD}).status_code == 200


def test_unlock_command_by_ip(client: Client, user_factory: Any, settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_IP_THRESHOLD": 5}
    # Different usernames from one address: the address locks.
    for i in range(5):
        post_json(client, TOKEN, {"username": f"ghost{i}", "password": "wrong"})
    user_factory(username="ned")
    assert post_json(client, TOKEN, {"username": "ned", "password": PASSWORD}).status_code == 429
    out = StringIO()
    call_command("authfw_unlock", "--ip", "127.0.0.1", stdout=out)
    assert "address 127.0.0.1" in out.getvalue()
    assert post_json(client, TOKEN, {"username": "ned", "password": PASSWORD}).status_code == 200


def test_unlock_command_usage_errors(db: None) -> None:
    with pytest.raises(CommandError, match="--username, --ip"):
        call_command("authfw_unlock")
    with pytest.raises(CommandError, match="ip_address"):
        call_command("authfw_unlock", "--ip", "not-an-address")
    out = StringIO()
    call_command("authfw_unlock", "--username", "free", "--dry-run", stdout=out)
    assert "not locked" in out.getvalue()


# token/refresh/ ------------------------------------------------------------------------------


def test_refresh_rotates_and_detects_reuse(client: Client, user_factory: Any, login: Any) -> None:
    issued = login(user_factory(username="ola"))
    response = post_json(client, REFRESH, {"refresh_token": issued.refresh_token})
    assert response.status_code == 200
    fresh = body(response)
    assert set(fresh) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert response["Cache-Control"] == "no-store"
    assert fresh["refresh_token"] != issued.refresh_token
    assert client.get(ME, **bearer(fresh["access_token"])).status_code == 200
    assert client.get(ME, **bearer(issued.access_token)).status_code == 401
    # Replaying the old refresh token revokes the whole family, the new pair included.
    replay = post_json(client, REFRESH, {"refresh_token": issued.refresh_token})
    assert_error(replay, 400, "invalid_grant")
    assert client.get(ME, **bearer(fresh["access_token"])).status_code == 401
    assert AuditLog.objects.filter(action="refresh_reuse").exists()


def test_token_endpoint_takes_the_refresh_grant(
    client: Client, user_factory: Any, login: Any
) -> None:
    # RFC 6749 section 6: grant_type=refresh_token at the token endpoint, as form fields.
    issued = login(user_factory(username="ria"))
    response = client.post(
        TOKEN, {"grant_type": "refresh_token", "refresh_token": issued.refresh_token}
    )
    assert response.status_code == 200
    fresh = body(response)
    assert set(fresh) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert response["Cache-Control"] == "no-store"
    assert fresh["refresh_token"] != issued.refresh_token
    assert body(client.get(ME, **bearer(fresh["access_token"])))["username"] == "ria"
    assert client.get(ME, **bearer(issued.access_token)).status_code == 401
    assert AuditLog.objects.filter(action="refresh", outcome=True).count() == 1
    # A replay is reuse: the whole family goes, audited, as on token/refresh/.
    replay = client.post(
        TOKEN, {"grant_type": "refresh_token", "refresh_token": issued.refresh_token}
    )
    data = assert_error(replay, 400, "invalid_grant")
    assert data["error_description"] == "The refresh token is invalid, expired or revoked."
    assert client.get(ME, **bearer(fresh["access_token"])).status_code == 401
    assert AuditLog.objects.filter(action="refresh_reuse").count() == 1


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": ""}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": 5}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": ["afw_rt_x"]}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "afw_rt_" + "Z" * 43}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "afw_at_" + "Z" * 43}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "x\u0000y"}, "invalid_grant"),
        ({"grant_type": ["refresh_token"], "refresh_token": "afw_rt_x"}, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        # A refresh token without grant_type is a password login missing its username.
        ({"refresh_token": "afw_rt_" + "Z" * 43}, "invalid_request"),
    ],
)
def test_token_endpoint_refresh_grant_refusals(
    client: Client, params: dict[str, Any], code: str
) -> None:
    raw = json.dumps(params).encode()  # a NUL travels as the JSON escape \u0000
    assert_error(client.post(TOKEN, raw, content_type="application/json"), 400, code)
    assert not AuditLog.objects.filter(action="refresh", outcome=True).exists()


def test_refresh_with_form_and_grant_type(client: Client, user_factory: Any, login: Any) -> None:
    issued = login(user_factory())
    response = client.post(
        REFRESH, {"grant_type": "refresh_token", "refresh_token": issued.refresh_token}
    )
    assert response.status_code == 200
    response = client.post(REFRESH, {"grant_type": "password", "refresh_token": "x"})
    assert_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize(
    "refresh_token", ["afw_rt_" + "Z" * 43, "afw_at_" + "Z" * 43, "garbage", "x" * 5000]
)
def test_refresh_with_bad_token(client: Client, refresh_token: str) -> None:
    response = post_json(client, REFRESH, {"refresh_token": refresh_token})
    data = assert_error(response, 400, "invalid_grant")
    assert data["error_description"] == "The refresh token is invalid, expired or revoked."


def test_refresh_needs_the_parameter(client: Client) -> None:
    assert_error(post_json(client, REFRESH, {}), 400, "invalid_request")


# token/revoke/ -------------------------------------------------------------------------------


def test_revoke_access_token(client: Client, user_factory: Any, login: Any) -> None:
    issued = login(user_factory())
    response = post_json(client, REVOKE, {"token": issued.access_token})
    assert response.status_code == 200
    assert body(response) == {}
    assert client.get(ME, **bearer(issued.access_token)).status_code == 401
    assert AuditLog.objects.filter(action="revoke", outcome=True).exists()


def test_revoke_refresh_token_ends_the_login(client: Client, user_factory: Any, login: Any) -> None:
    issued = login(user_factory())
    response = client.post(
        REVOKE, {"token": issued.refresh_token, "token_type_hint": "refresh_token"}
    )
    assert response.status_code == 200
    assert client.get(ME, **bearer(issued.access_token)).status_code == 401
    assert_error(
        post_json(client, REFRESH, {"refresh_token": issued.refresh_token}), 400, "invalid_grant"
    )


@pytest.mark.parametrize("token", ["afw_at_" + "Q" * 43, "afw_rt_" + "Q" * 43, "junk", "é" * 9])
def test_revoke_unknown_token_is_still_200(client: Client, token: str) -> None:
    response = post_json(client, REVOKE, {"token": token})
    assert response.status_code == 200
    assert body(response) == {}


def test_revoke_twice_is_200(client: Client, user_factory: Any, login: Any) -> None:
    issued = login(user_factory())
    assert post_json(client, REVOKE, {"token": issued.access_token}).status_code == 200
    assert post_json(client, REVOKE, {"token": issued.access_token}).status_code == 200


def test_revoke_needs_the_parameter(client: Client) -> None:
    assert_error(post_json(client, REVOKE, {}), 400, "invalid_request")
    assert_error(post_json(client, REVOKE, {"token": 12}), 400, "invalid_request")


# token/introspect/ ---------------------------------------------------------------------------


def test_introspect_needs_authentication(client: Client, user_factory: Any, login: Any) -> None:
    issued = login(user_factory())
    response = post_json(client, INTROSPECT, {"token": issued.access_token})
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"
    # A non-staff admin session is not enough either.
    client.force_login(user_factory())
    assert post_json(client, INTROSPECT, {"token": issued.access_token}).status_code == 401


def test_introspect_own_tokens(client: Client, user_factory: Any, login: Any) -> None:
    user = user_factory(username="pia")
    issued = login(user)
    response = post_json(
        client, INTROSPECT, {"token": issued.access_token}, **bearer(issued.access_token)
    )
    assert response.status_code == 200
    data = body(response)
    assert data["active"] is True
    assert data["username"] == "pia"
    assert data["sub"] == str(user.pk)
    assert data["token_type"] == "Bearer"
    assert data["jti"] == issued.token_id
    assert data["exp"] > data["iat"]
    refresh = body(
        post_json(
            client, INTROSPECT, {"token": issued.refresh_token}, **bearer(issued.access_token)
        )
    )
    assert refresh["active"] is True
    assert refresh["token_type"] == "refresh_token"


def test_introspect_hides_other_users_tokens(client: Client, user_factory: Any, login: Any) -> None:
    mine = login(user_factory())
    theirs = login(user_factory())
    response = post_json(
        client, INTROSPECT, {"token": theirs.access_token}, **bearer(mine.access_token)
    )
    assert body(response) == {"active": False}


def test_staff_introspect_any_token(client: Client, user_factory: Any, login: Any) -> None:
    staff = login(user_factory(is_staff=True))
    theirs = login(user_factory(username="quinn"))
    response = post_json(
        client, INTROSPECT, {"token": theirs.access_token}, **bearer(staff.access_token)
    )
    assert body(response)["username"] == "quinn"
    # By admin session (the CSRF-exempt endpoint only reads).
    client.force_login(user_factory(is_staff=True))
    response = client.post(INTROSPECT, {"token": theirs.access_token})
    assert body(response)["active"] is True


@pytest.mark.parametrize("token", ["afw_at_" + "R" * 43, "junk", "x" * 3000])
def test_introspect_inactive_or_junk(
    client: Client, user_factory: Any, login: Any, token: str
) -> None:
    issued = login(user_factory())
    response = post_json(client, INTROSPECT, {"token": token}, **bearer(issued.access_token))
    assert response.status_code == 200
    assert body(response) == {"active": False}


def test_introspect_revoked(client: Client, user_factory: Any, login: Any) -> None:
    caller = login(user_factory(is_staff=True))
    issued = login(user_factory())
    AuthFramework().revoke_token(issued.access_token)
    response = post_json(
        client, INTROSPECT, {"token": issued.access_token}, **bearer(caller.access_token)
    )
    assert body(response) == {"active": False}


# logout-all/ ---------------------------------------------------------------------------------


def test_logout_all(client: Client, user_factory: Any, login: Any) -> None:
    user = user_factory()
    first, second = login(user), login(user)
    AuthFramework().create_session(user, {"cart": 1})
    other = login(user_factory())
    response = client.post(LOGOUT_ALL, **bearer(first.access_token))
    assert response.status_code == 200
    assert body(response) == {"revoked_tokens": 2, "ended_sessions": 1}
    for issued in (first, second):
        assert client.get(ME, **bearer(issued.access_token)).status_code == 401
    assert client.get(ME, **bearer(other.access_token)).status_code == 200
    assert AuditLog.objects.filter(action="revoke_all", user_id=str(user.pk)).exists()


def test_logout_all_needs_a_token(client: Client, user_factory: Any) -> None:
    response = client.post(LOGOUT_ALL)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"
    # A session is not a Bearer token: no CSRF-exempt write through a cookie.
    client.force_login(user_factory(is_staff=True))
    assert client.post(LOGOUT_ALL).status_code == 401


# sessions/ -----------------------------------------------------------------------------------


def test_sessions_list_and_end(client: Client, user_factory: Any, login: Any) -> None:
    framework = AuthFramework()
    user = user_factory()
    issued = login(user)
    first = framework.create_session(user, {"secret": "not shown"})
    second = framework.create_session(user)
    framework.create_session(user_factory())  # someone else's
    response = client.get(SESSIONS, **bearer(issued.access_token))
    assert response.status_code == 200
    sessions = body(response)["sessions"]
    assert [s["session_id"] for s in sessions] == [first.session_id, second.session_id]
    assert set(sessions[0]) == {
        "session_id",
        "created_at",
        "last_accessed",
        "expires_at",
        "ip_address",
        "user_agent",
    }
    assert "not shown" not in response.content.decode()

    response = client.delete(f"{SESSIONS}{first.session_id}/", **bearer(issued.access_token))
    assert response.status_code == 200
    assert body(response) == {"ended": True}
    assert framework.get_session(first.session_id) is None
    response = client.post(f"{SESSIONS}{second.session_id}/", **bearer(issued.access_token))
    assert response.status_code == 200
    assert body(client.get(SESSIONS, **bearer(issued.access_token))) == {"sessions": []}


def test_ending_someone_elses_session_is_404(client: Client, user_factory: Any, login: Any) -> None:
    framework = AuthFramework()
    issued = login(user_factory())
    theirs = framework.create_session(user_factory())
    for session_id in (theirs.session_id, "unknown", "x" * 300):
        response = client.delete(f"{SESSIONS}{session_id}/", **bearer(issued.access_token))
        assert_error(response, 404, "not_found")
    assert framework.get_session(theirs.session_id) is not None


def test_sessions_need_a_token(client: Client) -> None:
    assert client.get(SESSIONS).status_code == 401
    assert client.delete(f"{SESSIONS}abc/").status_code == 401
    response = client.get(SESSIONS, **bearer("afw_at_" + "S" * 43))
    assert response.status_code == 401
    assert body(response) == INVALID_TOKEN_BODY


# Without the middleware, under ASGI, on every backend -----------------------------------------


def test_endpoints_work_without_the_middleware(
    client: Client, settings: Any, user_factory: Any, login: Any
) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "BearerToken" not in m]
    issued = login(user_factory())
    assert client.get(SESSIONS, **bearer(issued.access_token)).status_code == 200
    assert client.get(SESSIONS).status_code == 401
    assert client.get(SESSIONS, **bearer("afw_at_" + "T" * 43)).status_code == 401
    assert client.get(SESSIONS, HTTP_AUTHORIZATION="Bearer a b").status_code == 400


def test_endpoints_under_asgi(user_factory: Any) -> None:
    from asgiref.sync import async_to_sync

    user_factory(username="rex")

    async def scenario() -> None:
        client = AsyncClient()
        response = await client.post(
            TOKEN, {"username": "rex", "password": PASSWORD}, content_type="application/json"
        )
        assert response.status_code == 200
        pair = body(response)
        auth = {"Authorization": f"Bearer {pair['access_token']}"}
        assert (await client.get(ME, headers=auth)).status_code == 200
        response = await client.post(
            REVOKE, {"token": pair["refresh_token"]}, content_type="application/json"
        )
        assert response.status_code == 200
        assert (await client.get(ME, headers=auth)).status_code == 401

    async_to_sync(scenario)()


def test_full_flow_on_every_backend(
    client: Client, default_storage_backend: str, fast_hashing: None
) -> None:
    """register, log in, call, refresh, introspect, sessions, revoke, lockout: per backend."""
    assert (
        post_json(
            client, REGISTER, {"username": "sam", "password": "a long passphrase"}
        ).status_code
        == 201
    )
    response = post_json(client, TOKEN, {"username": "sam", "password": "a long passphrase"})
    assert response.status_code == 200, default_storage_backend
    pair = body(response)
    assert body(client.get(ME, **bearer(pair["access_token"])))["username"] == "sam"
    fresh = body(post_json(client, REFRESH, {"refresh_token": pair["refresh_token"]}))
    assert client.get(ME, **bearer(pair["access_token"])).status_code == 401
    auth = bearer(fresh["access_token"])
    assert body(post_json(client, INTROSPECT, {"token": fresh["access_token"]}, **auth))["active"]
    AuthFramework().create_session("sam")
    assert len(body(client.get(SESSIONS, **auth))["sessions"]) == 1
    assert post_json(client, REVOKE, {"token": fresh["refresh_token"]}).status_code == 200
    assert client.get(ME, **auth).status_code == 401
    assert _fail(client, "sam", 5) == [400] * 5
    response = post_json(client, TOKEN, {"username": "sam", "password": "a long passphrase"})
    assert response.status_code == 429
    AuthFramework().reset_lockout(username="sam", ip_address="127.0.0.1")
    response = post_json(client, TOKEN, {"username": "sam", "password": "a long passphrase"})
    assert response.status_code == 200
