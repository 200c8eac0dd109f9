"""System checks for the ``AUTHFW`` settings (imported by ``AppConfig.ready``).

======================  ===================================================================
``authfw.E001``         an unknown key in ``AUTHFW``
``authfw.E002``         a storage entry that cannot work: ``BACKEND`` missing, not importable,
                        not an ``AuthStorage``; ``OPTIONS`` not a dict or not accepted;
                        ``AUDIT_STORAGE``/``LOCKOUT_STORAGE`` naming an unknown alias
``authfw.E003``         ``MIGRATION_MODE = "strict"`` with unapplied django_authfw migrations
                        (a database check: ``manage.py check --database default``)
``authfw.E004``         ``MIGRATION_MODE`` other than ``"auto"`` or ``"strict"``
``authfw.E005``         a value of the wrong type or range (TTLs, threshold, flags, prefix,
                        ``REFRESH_REUSE_GRACE``, ``BEARER_EXEMPT_NAMESPACES``), or ``AUTHFW``
                        not a dict
``authfw.W001``         Argon2 is not the first of ``PASSWORD_HASHERS``
``authfw.W002``         ``AUTHFW["STORAGES"]`` has no ``"default"`` alias
``authfw.W030``         a SQLite database without ``OPTIONS`` ``transaction_mode="IMMEDIATE"``
                        and a busy ``timeout``: concurrent writers fail "database is locked"
======================  ===================================================================
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import FrameType
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage
from django.utils.module_loading import import_string

from .conf import DEFAULTS

APP_LABEL = "django_authfw"
#: `manage.py check --tag authfw` runs the settings checks; E003 is a database check and runs
#: with `check --database ALIAS` (and `--tag database`), as Django's own database checks do.
TAG = "authfw"
ARGON2 = "django.contrib.auth.hashers.Argon2PasswordHasher"
MIGRATION_MODES = ("auto", "strict")
DURATION_KEYS = (
    "ACCESS_TOKEN_TTL",
    "REFRESH_TOKEN_TTL",
    "SESSION_TTL",
    "CLEANUP_INTERVAL",
    "LOCKOUT_WINDOW",
)
BOOL_KEYS = ("ENABLE_AUDIT_LOG", "ROTATE_REFRESH_TOKENS", "USER_SNAPSHOT")
ALIAS_KEYS = ("AUDIT_STORAGE", "LOCKOUT_STORAGE")
# A table prefix goes into SQL identifiers: letters, digits and underscores only.
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _user_settings() -> Any:
    return getattr(settings, "AUTHFW", None) or {}


def _valid_keys() -> str:
    return ", ".join(sorted(DEFAULTS))


@checks.register(TAG)
def check_settings_keys(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.E001 (unknown keys) and authfw.E005 when AUTHFW is not a dict."""
    user = _user_settings()
    if not isinstance(user, Mapping):
        return [
            checks.Error(
                f"AUTHFW must be a dict, not {type(user).__name__}; the defaults apply until "
                "it is one.",
                hint="Set AUTHFW = {...} with keys among: " + _valid_keys() + " (a trailing "
                "comma after the closing brace makes it a tuple).",
                obj="settings.AUTHFW",
                id="authfw.E005",
            )
        ]
    return [
        checks.Error(
            f"AUTHFW has an unknown key {key!r}.",
            hint=f"Remove it or fix its spelling; valid keys are: {_valid_keys()}.",
            obj="settings.AUTHFW",
            id="authfw.E001",
        )
        for key in user
        if key not in DEFAULTS
    ]


def _rejected_options(cls: type, options: Mapping[str, Any]) -> str:
    """Why ``cls(**options)`` would be refused for its argument names, or "" (no instance).

    django_authfw's storages pass ``**options`` up to ``AuthStorage.__init__``, which refuses
    any left over; so for them the accepted names are the named parameters along the MRO. A
    storage from elsewhere is judged by its own signature only.
    """
    from .storage import AuthStorage

    chain = [k for k in cls.__mro__ if "__init__" in vars(k) and k is not object]
    if all(k.__module__.startswith("django_authfw.") for k in chain) and AuthStorage in chain:
        accepted = {
            name
            for k in chain
            for name, param in inspect.signature(vars(k)["__init__"]).parameters.items()
            if param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD) and name != "self"
        }
        unknown = sorted(set(options) - accepted)
        return f"unknown option(s) {', '.join(map(repr, unknown))}" if unknown else ""
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        return str(exc)
    except ValueError:  # no introspectable signature: left to construction time
        pass
    return ""


def _refused_values(cls: type, options: Mapping[str, Any]) -> str:
    """Why this package's ``cls(**options)`` refuses the option values, or "".

    Building one of our storages checks every option and never contacts a server (clients
    connect on first use), so the check builds a throwaway instance and closes it. A problem
    with what an option names (a missing cache or database alias) is left to the checks of
    that setting; a storage from elsewhere is not built, as its constructor may do anything.
    """
    from .exceptions import InvalidInput

    if not cls.__module__.startswith("django_authfw."):
        return ""
    try:
        storage = cls(**options)
    except (TypeError, ValueError, InvalidInput) as exc:
        return str(exc)
    except Exception:  # a missing alias: reported by the checks of that setting
        return ""
    storage.close()
    return ""


def _storage_errors(alias: object, config: object) -> list[Any]:
    where = f"AUTHFW['STORAGES'][{alias!r}]"

    def error(msg: str, hint: str) -> Any:
        return checks.Error(msg, hint=hint, obj=where, id="authfw.E002")

    if not isinstance(config, Mapping):
        return [
            error(
                f"{where} must be a dict, not {type(config).__name__}.",
                'Use {"BACKEND": "django_authfw.storage.DatabaseStorage", "OPTIONS": {...}}.',
            )
        ]
    backend = config.get("BACKEND")
    if not isinstance(backend, str) or not backend:
        return [
            error(
                f"{where} has no 'BACKEND' import string.",
                "Set 'BACKEND' to a dotted path such as "
                "'django_authfw.storage.DatabaseStorage' or 'django_authfw.storage.CacheStorage'.",
            )
        ]
    try:
        cls = import_string(backend)
    except ImportError as exc:
        return [
            error(
                f"{where}['BACKEND'] = {backend!r} cannot be imported: {exc}",
                "Check the dotted path and that the package providing it is installed (Redis "
                "needs the 'redis' extra: pip install django-authfw[redis]).",
            )
        ]
    from .storage import AuthStorage

    if not (isinstance(cls, type) and issubclass(cls, AuthStorage)):
        return [
            error(
                f"{where}['BACKEND'] = {backend!r} is not a subclass of AuthStorage.",
                "Point BACKEND at a class derived from django_authfw.storage.AuthStorage.",
            )
        ]
    options = config.get("OPTIONS", {})
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        return [
            error(
                f"{where}['OPTIONS'] must be a dict, not {type(options).__name__}.",
                "Pass the backend's keyword arguments as a dict, e.g. {'cache': 'authfw'}.",
            )
        ]
    rejected = _rejected_options(cls, options)
    if rejected:
        return [
            error(
                f"{where}['OPTIONS'] are not accepted by {cls.__name__}: {rejected}.",
                f"Use only the keyword arguments {cls.__name__}() takes; see docs/settings.md.",
            )
        ]
    refused = _refused_values(cls, options)
    if refused:
        return [
            error(
                f"{where}['OPTIONS'] are refused by {cls.__name__}: {refused}",
                f"Fix the value; {cls.__name__}'s options and their types are in docs/backends.md.",
            )
        ]
    unknown = sorted(set(config) - {"BACKEND", "OPTIONS"})
    if unknown:
        return [
            error(
                f"{where} has unknown keys: {', '.join(map(repr, unknown))}.",
                "A storage entry takes only 'BACKEND' and 'OPTIONS'.",
            )
        ]
    return []


@checks.register(TAG)
def check_storages(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.E002 for every storage entry that cannot work; authfw.W002 without "default"."""
    user = _user_settings()
    if not isinstance(user, Mapping):
        return []
    storages = user.get("STORAGES", DEFAULTS["STORAGES"])
    if not isinstance(storages, Mapping) or not storages:
        return [
            checks.Error(
                "AUTHFW['STORAGES'] must be a non-empty dict of aliases.",
                hint='Use {"default": {"BACKEND": "django_authfw.storage.DatabaseStorage"}}.',
                obj="AUTHFW['STORAGES']",
                id="authfw.E002",
            )
        ]
    errors: list[Any] = []
    for alias, config in storages.items():
        errors.extend(_storage_errors(alias, config))
    for key in ALIAS_KEYS:
        alias = user.get(key)
        if isinstance(alias, str) and alias not in storages:
            errors.append(
                checks.Error(
                    f"AUTHFW[{key!r}] = {alias!r} is not an alias of AUTHFW['STORAGES'].",
                    hint=f"Use one of: {', '.join(map(repr, storages))}, or None.",
                    obj=f"AUTHFW[{key!r}]",
                    id="authfw.E002",
                )
            )
    if "default" not in storages:
        errors.append(
            checks.Warning(
                "AUTHFW['STORAGES'] has no 'default' alias, so AuthFramework() without a "
                "storage argument, the middleware and the commands' default fail.",
                hint="Name one of the storages 'default'.",
                obj="AUTHFW['STORAGES']",
                id="authfw.W002",
            )
        )
    return errors


def _as_duration(value: object) -> timedelta | None:
    """``value`` as conf reads it (a timedelta, or seconds), or None if it is not one.

    Infinity, NaN and seconds beyond ``timedelta.max`` are refused here: conf would raise
    OverflowError on the request that first reads the setting.
    """
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return timedelta(seconds=value)
    except (OverflowError, ValueError):
        return None


def _positive_duration(value: object) -> bool:
    duration = _as_duration(value)
    return duration is not None and duration > timedelta(0)


def _non_negative_duration(value: object) -> bool:
    duration = _as_duration(value)
    return duration is not None and duration >= timedelta(0)


@checks.register(TAG)
def check_values(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.E004 (MIGRATION_MODE) and authfw.E005 (types and ranges of the other values)."""
    user = _user_settings()
    if not isinstance(user, Mapping):
        return []
    errors: list[Any] = []

    def bad(key: str, expected: str, hint: str) -> None:
        errors.append(
            checks.Error(
                f"AUTHFW[{key!r}] must be {expected}, not {user[key]!r}.",
                hint=hint,
                obj=f"AUTHFW[{key!r}]",
                id="authfw.E005",
            )
        )

    if "MIGRATION_MODE" in user and user["MIGRATION_MODE"] not in MIGRATION_MODES:
        errors.append(
            checks.Error(
                f"AUTHFW['MIGRATION_MODE'] must be 'auto' or 'strict', "
                f"not {user['MIGRATION_MODE']!r}.",
                hint="'auto' (the default) trusts `migrate`; 'strict' also makes "
                "`check --database` fail while django_authfw migrations are unapplied.",
                obj="AUTHFW['MIGRATION_MODE']",
                id="authfw.E004",
            )
        )
    for key in DURATION_KEYS:
        if key in user and not _positive_duration(user[key]):
            bad(key, "a positive timedelta (or seconds)", "For example timedelta(minutes=15).")
    if "LOCKOUT_THRESHOLD" in user:
        value = user["LOCKOUT_THRESHOLD"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            bad(
                "LOCKOUT_THRESHOLD",
                "an integer >= 0",
                "The number of failed logins that locks a username or address (0 disables it).",
            )
    if "REFRESH_REUSE_GRACE" in user and not _non_negative_duration(user["REFRESH_REUSE_GRACE"]):
        bad(
            "REFRESH_REUSE_GRACE",
            "seconds >= 0 (or a timedelta)",
            "0 (the default) keeps RFC 9700's rule: any replay revokes the login; a few seconds "
            "(e.g. 10) lets a client retry a refresh whose response it lost.",
        )
    if "LOCKOUT_IP_THRESHOLD" in user:
        value = user["LOCKOUT_IP_THRESHOLD"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            bad(
                "LOCKOUT_IP_THRESHOLD",
                "an integer >= 0",
                "The number of failed logins that locks an address (0: no per-address limit).",
            )
    for key in BOOL_KEYS:
        if key in user and not isinstance(user[key], bool):
            bad(key, "True or False", "Use a bool.")
    for key in ALIAS_KEYS:
        if key in user and user[key] is not None and not isinstance(user[key], str):
            bad(key, "a storage alias (str) or None", "Name an alias of AUTHFW['STORAGES'].")
    if "TABLE_PREFIX" in user:
        prefix = user["TABLE_PREFIX"]
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            bad(
                "TABLE_PREFIX",
                "letters, digits and underscores, starting with a letter or underscore",
                "For example 'auth_' (the default).",
            )
    return errors


@checks.register(TAG)
def check_bearer_exempt_namespaces(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.E005 when BEARER_EXEMPT_NAMESPACES is not a list or tuple of namespace names."""
    user = _user_settings()
    if not isinstance(user, Mapping) or "BEARER_EXEMPT_NAMESPACES" not in user:
        return []
    value = user["BEARER_EXEMPT_NAMESPACES"]
    # A bare string would be taken letter by letter: "admin" is not ("admin",).
    if isinstance(value, list | tuple) and all(isinstance(n, str) and n for n in value):
        return []
    return [
        checks.Error(
            "AUTHFW['BEARER_EXEMPT_NAMESPACES'] must be a list or tuple of URL namespace "
            f"names, not {value!r}.",
            hint="For example ['admin'] (the default); [] lets Bearer tokens authenticate "
            "every view.",
            obj="AUTHFW['BEARER_EXEMPT_NAMESPACES']",
            id="authfw.E005",
        )
    ]


@checks.register(TAG, checks.Tags.security)
def check_password_hashers(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.W001 when the first (preferred) password hasher is not Argon2."""
    hashers = list(getattr(settings, "PASSWORD_HASHERS", []) or [])
    if hashers:
        first = hashers[0]
        if first == ARGON2:
            return []
        try:
            cls = import_string(first)
            argon2 = import_string(ARGON2)
        except ImportError:
            pass
        else:
            if isinstance(cls, type) and issubclass(cls, argon2):
                return []
    return [
        checks.Warning(
            "Argon2PasswordHasher is not the first entry of PASSWORD_HASHERS, so new passwords "
            "are not hashed with Argon2.",
            hint=f"Put {ARGON2!r} first in PASSWORD_HASHERS (keep the others after it so "
            "existing hashes still verify and are upgraded at the next login), and install "
            "argon2-cffi.",
            obj="settings.PASSWORD_HASHERS",
            id="authfw.W001",
        )
    ]


def _running_migrate() -> bool:
    """Whether this check runs inside the ``migrate`` command.

    ``migrate`` runs the database checks before applying migrations; failing there for
    unapplied migrations would make the cure impossible, so E003 stands aside for it.
    """
    from django.core.management.commands.migrate import Command as Migrate

    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), Migrate):
            return True
        frame = frame.f_back
    return False


def _unapplied(alias: str) -> list[str]:
    from django.db import connections, router
    from django.db.migrations.loader import MigrationLoader

    models = apps.get_app_config(APP_LABEL).get_models()
    if not any(router.allow_migrate_model(alias, model) for model in models):
        return []
    loader = MigrationLoader(connections[alias], ignore_no_migrations=True)
    return sorted(
        name
        for app_label, name in loader.graph.nodes
        if app_label == APP_LABEL and (app_label, name) not in loader.applied_migrations
    )


@checks.register(checks.Tags.database)
def check_migrations_applied(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.E003: strict mode and unapplied django_authfw migrations on a checked database."""
    user = _user_settings()
    if not isinstance(user, Mapping) or user.get("MIGRATION_MODE") != "strict" or not databases:
        return []
    if _running_migrate():
        return []
    errors: list[Any] = []
    for alias in databases:
        try:
            missing = _unapplied(alias)
        except Exception as exc:
            errors.append(
                checks.Error(
                    f"Cannot tell whether django_authfw migrations are applied on database "
                    f"{alias!r}: {type(exc).__name__}: {exc}",
                    hint="Make sure the database is reachable, then run the check again.",
                    obj=f"DATABASES[{alias!r}]",
                    id="authfw.E003",
                )
            )
            continue
        if missing:
            errors.append(
                checks.Error(
                    f"MIGRATION_MODE is 'strict' and database {alias!r} has unapplied "
                    f"django_authfw migrations: {', '.join(missing)}.",
                    hint=f"Run `python manage.py migrate {APP_LABEL} --database {alias}`.",
                    obj=f"DATABASES[{alias!r}]",
                    id="authfw.E003",
                )
            )
    return errors


# SQLite under concurrent writers (authfw.W030) --------------------------------------------------

SQLITE_ENGINE = "django.db.backends.sqlite3"
# BEGIN EXCLUSIVE also takes the write lock at the start of the transaction.
_SQLITE_LOCKING_MODES = ("IMMEDIATE", "EXCLUSIVE")


def sqlite_lock_warnings(databases: Mapping[str, Any]) -> list[CheckMessage]:
    """authfw.W030 for each SQLite entry of ``databases`` that lets concurrent writers fail."""
    from .storage.database.errors import SQLITE_RECOMMENDED_OPTIONS

    warnings: list[CheckMessage] = []
    for alias, entry in databases.items():
        if not isinstance(entry, Mapping) or entry.get("ENGINE") != SQLITE_ENGINE:
            continue
        options = entry.get("OPTIONS") or {}
        if not isinstance(options, Mapping):
            continue  # Django itself refuses it
        mode = options.get("transaction_mode")
        missing = []
        if not (isinstance(mode, str) and mode.upper() in _SQLITE_LOCKING_MODES):
            missing.append("'transaction_mode': 'IMMEDIATE'")
        if "timeout" not in options:
            missing.append("a busy 'timeout' in seconds")
        if not missing:
            continue
        recommended = ", ".join(f"{k!r}: {v!r}" for k, v in SQLITE_RECOMMENDED_OPTIONS.items())
        warnings.append(
            checks.Warning(
                f"DATABASES[{alias!r}] is SQLite without {' and '.join(missing)} in OPTIONS, "
                "so concurrent logins and registrations can fail with 'database is locked' "
                "(StorageUnavailable).",
                hint=f"Set DATABASES[{alias!r}]['OPTIONS'] = {{{recommended}}}: each "
                "transaction then takes the write lock when it starts and other writers wait "
                "up to `timeout` seconds for it. See docs/installation.md.",
                obj=f"DATABASES[{alias!r}]",
                id="authfw.W030",
            )
        )
    return warnings


@checks.register(TAG)
def check_sqlite_options(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.W030: SQLite databases that let concurrent writers fail 'database is locked'."""
    configured = getattr(settings, "DATABASES", None)
    if not isinstance(configured, Mapping):
        return []
    return sqlite_lock_warnings(configured)
