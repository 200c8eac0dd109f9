"""The ``AUTHFW`` settings dict, read live through a typed object.

``conf.ACCESS_TOKEN_TTL`` reads ``settings.AUTHFW["ACCESS_TOKEN_TTL"]`` at the moment of the
call, falling back to :data:`DEFAULTS`, so ``override_settings`` works and nothing is read at
import time. Unknown keys are reported by the system check ``authfw.E001``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal, cast

from django.conf import settings

DEFAULT_STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django_authfw.storage.DatabaseStorage", "OPTIONS": {}},
}

DEFAULTS: dict[str, Any] = {
    "STORAGES": DEFAULT_STORAGES,
    "ACCESS_TOKEN_TTL": timedelta(hours=1),
    "REFRESH_TOKEN_TTL": timedelta(days=14),
    "SESSION_TTL": timedelta(days=14),
    "TABLE_PREFIX": "auth_",
    "MIGRATION_MODE": "auto",
    "ENABLE_AUDIT_LOG": True,
    "AUDIT_STORAGE": None,
    "CLEANUP_INTERVAL": timedelta(hours=1),
    "LOCKOUT_THRESHOLD": 5,
    # Ten times the username threshold: see docs/settings.md for the reasoning.
    "LOCKOUT_IP_THRESHOLD": 50,
    "LOCKOUT_WINDOW": timedelta(minutes=15),
    "LOCKOUT_STORAGE": None,
    "ROTATE_REFRESH_TOKENS": True,
    "REFRESH_REUSE_GRACE": 0,
    # URL namespaces whose views BearerTokenMiddleware leaves alone (cookie and CSRF views).
    "BEARER_EXEMPT_NAMESPACES": ("admin",),
    # request.user's pk, is_authenticated and is_active from the token, without a query, where
    # the storage cannot read the user with the token (see docs/middleware.md).
    "USER_SNAPSHOT": False,
}


def _as_timedelta(value: Any) -> timedelta:
    # Seconds are accepted too, as in Django's own SESSION_COOKIE_AGE.
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=value)


class AuthfwSettings:
    """Typed, live view of ``settings.AUTHFW``."""

    def _get(self, name: str) -> Any:
        user = getattr(settings, "AUTHFW", None)
        # A non-dict AUTHFW (a tuple from a trailing comma) is reported by the system check
        # authfw.E005; until then the defaults apply, so that importing the models (which read
        # TABLE_PREFIX) does not crash before the check can run.
        if not isinstance(user, Mapping):
            return DEFAULTS[name]
        return user.get(name, DEFAULTS[name])

    @property
    def STORAGES(self) -> dict[str, dict[str, Any]]:
        """Storage aliases: ``{"alias": {"BACKEND": "dotted.path", "OPTIONS": {...}}}``."""
        return cast(dict[str, dict[str, Any]], self._get("STORAGES"))

    @property
    def ACCESS_TOKEN_TTL(self) -> timedelta:
        return _as_timedelta(self._get("ACCESS_TOKEN_TTL"))

    @property
    def REFRESH_TOKEN_TTL(self) -> timedelta:
        return _as_timedelta(self._get("REFRESH_TOKEN_TTL"))

    @property
    def SESSION_TTL(self) -> timedelta:
        return _as_timedelta(self._get("SESSION_TTL"))

    @property
    def TABLE_PREFIX(self) -> str:
        return cast(str, self._get("TABLE_PREFIX"))

    @property
    def MIGRATION_MODE(self) -> Literal["auto", "strict"]:
        return cast(Literal["auto", "strict"], self._get("MIGRATION_MODE"))

    @property
    def ENABLE_AUDIT_LOG(self) -> bool:
        return bool(self._get("ENABLE_AUDIT_LOG"))

    @property
    def AUDIT_STORAGE(self) -> str | None:
        """Alias that receives audit events; None means the database audit table."""
        return cast("str | None", self._get("AUDIT_STORAGE"))

    @property
    def CLEANUP_INTERVAL(self) -> timedelta:
        return _as_timedelta(self._get("CLEANUP_INTERVAL"))

    @property
    def LOCKOUT_THRESHOLD(self) -> int:
        return int(self._get("LOCKOUT_THRESHOLD"))

    @property
    def LOCKOUT_IP_THRESHOLD(self) -> int:
        """Attempts from one address (IPv6: one /64) per window that lock it; 0 = no limit."""
        return int(self._get("LOCKOUT_IP_THRESHOLD"))

    @property
    def LOCKOUT_WINDOW(self) -> timedelta:
        return _as_timedelta(self._get("LOCKOUT_WINDOW"))

    @property
    def LOCKOUT_STORAGE(self) -> str | None:
        """Alias that counts failed logins; None means the framework's own storage."""
        return cast("str | None", self._get("LOCKOUT_STORAGE"))

    @property
    def ROTATE_REFRESH_TOKENS(self) -> bool:
        return bool(self._get("ROTATE_REFRESH_TOKENS"))

    @property
    def REFRESH_REUSE_GRACE(self) -> timedelta:
        """How long a just-rotated refresh token may be presented again; 0 = never (default)."""
        return _as_timedelta(self._get("REFRESH_REUSE_GRACE"))

    @property
    def BEARER_EXEMPT_NAMESPACES(self) -> tuple[str, ...]:
        """URL namespaces (instance or application) the Bearer middleware does not authenticate."""
        return tuple(self._get("BEARER_EXEMPT_NAMESPACES"))

    @property
    def USER_SNAPSHOT(self) -> bool:
        """Whether ``request.user`` answers ``pk``/``is_authenticated``/``is_active`` from the
        verified token, loading the user only for other attributes."""
        return bool(self._get("USER_SNAPSHOT"))

    def table(self, kind: str) -> str:
        """Table name for ``kind``: ``tokens``, ``sessions``, ``kv_store`` or ``audit_log``."""
        return f"{self.TABLE_PREFIX}{kind}"


conf = AuthfwSettings()
