"""Helpers shared by the HTTP-surface tests (middleware, views, admin, DRF, live server, browser).

Import the fixtures you use into the test module (pytest finds fixtures by module namespace).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client

from django_authfw import AuthFramework
from django_authfw.tokens import IssuedToken

from .backends import REDIS_TEST_URL, RUN_ID
from .factories import PASSWORD, UserFactory
from .hashers import COUNTING_HASHER

INVALID_TOKEN_BODY = {
    "error": "invalid_token",
    "error_description": "The access token is invalid, expired or revoked.",
}
INVALID_TOKEN_CHALLENGE = (
    'Bearer error="invalid_token", '
    'error_description="The access token is invalid, expired or revoked."'
)


@pytest.fixture(autouse=False)
def fast_hashing(settings: Any) -> None:
    """Real Argon2 with a small work factor, so logins in tests take milliseconds."""
    settings.PASSWORD_HASHERS = [COUNTING_HASHER]


@pytest.fixture
def user_factory(db: None, fast_hashing: None) -> Callable[..., AbstractBaseUser]:
    """Make a real user with the factories' password (``tests.factories.PASSWORD``)."""

    def make(**kwargs: Any) -> AbstractBaseUser:
        user: AbstractBaseUser = UserFactory.create(**kwargs)
        return user

    return make


@pytest.fixture
def login(fast_hashing: None) -> Callable[..., IssuedToken]:
    """Log a user in through the framework and return the issued pair."""

    def issue(user: AbstractBaseUser | str, password: str = PASSWORD) -> IssuedToken:
        username = user if isinstance(user, str) else user.get_username()
        return AuthFramework().authenticate(username, password)

    return issue


class BearerHeader(TypedDict):
    """The test client's WSGI-environ keyword for the ``Authorization`` header.

    A TypedDict, not ``dict[str, str]``: unpacked into ``Client.get(url, **bearer(token))`` its
    one key can only land in ``**extra``, never in ``follow``, ``secure`` or ``headers``.
    """

    HTTP_AUTHORIZATION: str


def bearer(token: str) -> BearerHeader:
    """Test-client keyword arguments that send ``Authorization: Bearer <token>``."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def post_json(client: Client, url: str, data: Any, **extra: Any) -> Any:
    return client.post(url, data=json.dumps(data), content_type="application/json", **extra)


def body(response: Any) -> Any:
    return json.loads(response.content)


def storages_for(backend: str, settings: Any) -> dict[str, dict[str, Any]]:
    """``AUTHFW["STORAGES"]`` whose ``default`` alias is a fresh storage of ``backend``.

    Registered under an alias (not built in code), as a project configures it, so that the
    middleware and the endpoints resolve it the way they do in production.
    """
    if backend == "database":
        default: dict[str, Any] = {"BACKEND": "django_authfw.storage.DatabaseStorage"}
    elif backend == "memory":
        default = {"BACKEND": "django_authfw.storage.InMemoryStorage"}
    elif backend in ("locmem", "redis"):
        alias = f"authfw-http-{backend}-{uuid.uuid4().hex[:8]}"
        cache: dict[str, Any] = (
            {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": alias}
            if backend == "locmem"
            else {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_TEST_URL}
        )
        settings.CACHES = {**settings.CACHES, alias: cache}
        default = {
            "BACKEND": "django_authfw.storage.CacheStorage",
            "OPTIONS": {
                "cache": alias,
                "key_prefix": f"authfw-test:{RUN_ID}:http-{uuid.uuid4().hex[:12]}:",
            },
        }
    else:
        raise ValueError(backend)
    return {"default": default}


# The backends the HTTP flow runs on: the ones a project configures by alias with no extra
# servers. Cluster and Sentinel differ only below the storage contract, which the contract
# suite covers on them.
HTTP_BACKENDS = ("database", "memory", "locmem", "redis")


def http_backends() -> list[str]:
    """The selected backends (``AUTHFW_TEST_BACKENDS``) the HTTP flow runs on."""
    from .backends import selected_backends

    return [name for name in selected_backends() if name in HTTP_BACKENDS]


@pytest.fixture(params=http_backends())
def default_storage_backend(
    request: pytest.FixtureRequest, settings: Any, db: None
) -> Iterator[str]:
    """Point the ``default`` alias at each selected backend; flush it afterwards."""
    backend: str = request.param
    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages_for(backend, settings)}
    yield backend
    framework = AuthFramework()
    try:
        framework.storage.flush()
    finally:
        framework.storage.close()


def usernames(count: int) -> list[str]:
    return [f"http-user-{uuid.uuid4().hex[:8]}" for _ in range(count)]


def user_model() -> Any:
    return get_user_model()
