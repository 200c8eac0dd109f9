"""Settings of the demo and test project.

``DATABASE_URL`` (``postgres://...`` or ``sqlite:///path``) and ``REDIS_URL`` choose the
services; unset, the project runs on SQLite and locmem with nothing else installed.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "authfw-demo-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_authfw",
    "testproject.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After AuthenticationMiddleware: a Bearer token wins, an admin session still works.
    "django_authfw.middleware.BearerTokenMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "testproject.wsgi.application"
ASGI_APPLICATION = "testproject.asgi.application"


# What django_authfw recommends for SQLite (system check authfw.W030): each transaction takes the
# write lock when it starts (Django 5.1+) and other writers wait up to 20 s for it, instead of
# failing with "database is locked" when many threads log in at once.
SQLITE_OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": 20}


def sqlite_database(name: object) -> dict[str, Any]:
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": name, "OPTIONS": dict(SQLITE_OPTIONS)}


def database_from_url(url: str) -> dict[str, Any]:
    """Turn ``postgres://user:pass@host:port/name`` or ``sqlite:///path`` into a DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return sqlite_database(parts.path[1:] or ":memory:")
    if parts.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/") or "test",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
            # A server that does not answer fails within seconds, not after the TCP timeout.
            "OPTIONS": {"connect_timeout": 10},
        }
    raise ValueError(f"DATABASE_URL scheme {parts.scheme!r} is not supported")


DATABASE_URL = os.environ.get("DATABASE_URL", "")
DATABASES = {
    "default": database_from_url(DATABASE_URL)
    if DATABASE_URL
    else sqlite_database(BASE_DIR / "demo.sqlite3")
}
if os.environ.get("AUTHFW_TEST_DB_NAME"):
    # The test suite names its PostgreSQL database per run (tests/conftest.py); this sets it.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["AUTHFW_TEST_DB_NAME"]}
# A second, in-memory database for the tests of DatabaseStorage's `using` option and of database
# routers. Nothing else connects to it; test runs create it only for tests that list it.
DATABASES["authfw_second"] = sqlite_database(":memory:")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "authfw": (
        {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "authfw"}
    ),
}

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

AUTHFW: dict[str, Any] = {
    "STORAGES": {
        "default": {"BACKEND": "django_authfw.storage.DatabaseStorage"},
        "cache": {
            "BACKEND": "django_authfw.storage.CacheStorage",
            "OPTIONS": {"cache": "authfw", "key_prefix": "auth:"},
        },
    },
    "ACCESS_TOKEN_TTL": timedelta(hours=1),
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
LOGIN_URL = "admin:login"
