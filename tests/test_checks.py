"""System checks authfw.E001-E005, W001, W002."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.utils.module_loading import import_string

from django_authfw.conf import DEFAULTS

ARGON2 = "django.contrib.auth.hashers.Argon2PasswordHasher"
PBKDF2 = "django.contrib.auth.hashers.PBKDF2PasswordHasher"


def authfw_messages(databases: list[str] | None = None) -> list[checks.CheckMessage]:
    """What `check --tag authfw` reports, plus the database checks for ``databases``."""
    tags = ["authfw"] if databases is None else ["authfw", checks.Tags.database]
    messages = checks.run_checks(tags=tags, databases=databases)
    return [m for m in messages if m.id is not None and m.id.startswith("authfw.")]


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return sorted(str(m.id) for m in messages)


@pytest.fixture
def authfw(settings: Any) -> Any:
    """Set AUTHFW keys on top of the project's settings: ``authfw(KEY=value)``."""

    def apply(**values: Any) -> None:
        settings.AUTHFW = {**settings.AUTHFW, **values}

    return apply


def test_the_project_settings_pass(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [ARGON2, PBKDF2]
    assert authfw_messages() == []


def test_every_message_has_an_id_and_a_hint(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [PBKDF2]
    settings.AUTHFW = {
        "STORAGES": {"main": {"BACKEND": "no.such.Backend"}},
        "ACCESS_TOKEN_TTL": "1h",
        "MIGRATION_MODE": "lazy",
        "TYPO": 1,
    }
    messages = authfw_messages()
    assert ids(messages) == [
        "authfw.E001",
        "authfw.E002",
        "authfw.E004",
        "authfw.E005",
        "authfw.W001",
        "authfw.W002",
    ]
    for message in messages:
        assert message.hint
        assert message.msg
        assert message.obj


def test_e001_unknown_keys(authfw: Any) -> None:
    authfw(ACCES_TOKEN_TTL=timedelta(hours=1), EXTRA=True)
    messages = authfw_messages()
    assert ids(messages) == ["authfw.E001", "authfw.E001"]
    assert "'ACCES_TOKEN_TTL'" in messages[0].msg or "'ACCES_TOKEN_TTL'" in messages[1].msg
    hint = messages[0].hint
    assert hint is not None
    for key in DEFAULTS:
        assert key in hint


@pytest.mark.django_db(databases="__all__")  # Django's model checks look at every database
def test_e001_through_the_check_command(authfw: Any) -> None:
    authfw(NOT_A_SETTING=1)
    with pytest.raises(SystemCheckError, match=r"authfw\.E001"):
        call_command("check")


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"OPTIONS": {}}, "no 'BACKEND'"),
        ({"BACKEND": "django_authfw.storage.NoSuchStorage"}, "cannot be imported"),
        ({"BACKEND": "not_a_module_at_all.Storage"}, "cannot be imported"),
        ({"BACKEND": "django_authfw.records.AuthToken"}, "not a subclass of AuthStorage"),
        (
            {"BACKEND": "django_authfw.storage.DatabaseStorage", "OPTIONS": ["using"]},
            "must be a dict",
        ),
        (
            {"BACKEND": "django_authfw.storage.DatabaseStorage", "OPTIONS": {"usin": "x"}},
            "unknown option(s) 'usin'",
        ),
        (
            {"BACKEND": "django_authfw.storage.CacheStorage", "OPTIONS": {"prefix": "a:"}},
            "unknown option(s) 'prefix'",
        ),
        ({"BACKEND": "django_authfw.storage.DatabaseStorage", "OPTION": {}}, "unknown keys"),
        ("django_authfw.storage.DatabaseStorage", "must be a dict"),
    ],
)
def test_e002_bad_storage_entries(authfw: Any, config: Any, fragment: str) -> None:
    authfw(STORAGES={"default": config})
    [message] = authfw_messages()
    assert message.id == "authfw.E002"
    assert fragment in message.msg
    assert message.hint


@pytest.mark.parametrize(
    ("class_name", "options"),
    [
        ("DatabaseStorage", {"cache": "authfw"}),
        ("CacheStorage", {"url": "redis://127.0.0.1:6379/0"}),
        ("InMemoryStorage", {"cache": "authfw"}),
        ("InMemoryStorage", {"key_prefix": "a:"}),
        ("RedisStorage", {"cache": "authfw"}),
        ("RedisStorage", {"cleanup_interval": 5}),
    ],
)
def test_e002_refuses_another_backends_options_on_all_four(
    authfw: Any, class_name: str, options: dict[str, Any]
) -> None:
    # InMemoryStorage and RedisStorage once subclassed CacheStorage without running its
    # __init__, so E002 took CacheStorage's names for theirs and building then failed.
    path = f"django_authfw.storage.{class_name}"
    authfw(STORAGES={"default": {"BACKEND": path, "OPTIONS": options}})
    [message] = authfw_messages()
    assert message.id == "authfw.E002"
    assert "unknown option(s)" in message.msg
    with pytest.raises(TypeError, match="unknown OPTIONS"):
        import_string(path)(**options)


def test_e002_accepts_each_backends_own_options(authfw: Any) -> None:
    authfw(
        STORAGES={
            "default": {"BACKEND": "django_authfw.storage.DatabaseStorage"},
            "redis": {
                "BACKEND": "django_authfw.storage.RedisStorage",
                "OPTIONS": {"url": "redis://127.0.0.1:6379/0", "key_prefix": "a:", "timeout": 2},
            },
            "mem": {
                "BACKEND": "django_authfw.storage.InMemoryStorage",
                "OPTIONS": {"cleanup_interval": None, "default_ttl": 60},
            },
        }
    )
    assert authfw_messages() == []


def test_e002_accepts_real_options(authfw: Any) -> None:
    authfw(
        STORAGES={
            "default": {"BACKEND": "django_authfw.storage.DatabaseStorage"},
            "db2": {"BACKEND": "django_authfw.storage.DatabaseStorage", "OPTIONS": {"using": "x"}},
            "cache": {
                "BACKEND": "django_authfw.storage.CacheStorage",
                "OPTIONS": {"cache": "authfw", "key_prefix": "a:", "default_ttl": 60},
            },
            "mem": {"BACKEND": "django_authfw.storage.InMemoryStorage", "OPTIONS": None},
        }
    )
    assert authfw_messages() == []


def test_e002_unknown_alias_for_audit_or_lockout(authfw: Any) -> None:
    authfw(AUDIT_STORAGE="audit", LOCKOUT_STORAGE="default")
    [message] = authfw_messages()
    assert message.id == "authfw.E002"
    assert "AUDIT_STORAGE" in message.msg
    assert message.hint is not None
    assert "'default'" in message.hint


def test_e002_empty_storages(authfw: Any) -> None:
    authfw(STORAGES={})
    assert ids(authfw_messages()) == ["authfw.E002"]


def test_w002_no_default_alias(authfw: Any) -> None:
    authfw(STORAGES={"main": {"BACKEND": "django_authfw.storage.DatabaseStorage"}})
    [message] = authfw_messages()
    assert message.id == "authfw.W002"
    assert isinstance(message, checks.Warning)


@pytest.mark.parametrize(
    ("hashers", "warned"),
    [
        ([ARGON2, PBKDF2], False),
        (["tests.hashers.CountingArgon2PasswordHasher"], False),  # a subclass counts
        ([PBKDF2, ARGON2], True),
        (["django.contrib.auth.hashers.ScryptPasswordHasher"], True),
        ([], True),
    ],
)
def test_w001_argon2_first(settings: Any, hashers: list[str], warned: bool) -> None:
    settings.PASSWORD_HASHERS = hashers
    messages = authfw_messages()
    assert ids(messages) == (["authfw.W001"] if warned else [])
    if warned:
        assert ARGON2 in (messages[0].hint or "")


def test_e004_migration_mode(authfw: Any) -> None:
    authfw(MIGRATION_MODE="lazy")
    [message] = authfw_messages()
    assert message.id == "authfw.E004"
    assert "'lazy'" in message.msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ACCESS_TOKEN_TTL", "1h"),
        ("REFRESH_TOKEN_TTL", timedelta(0)),
        ("SESSION_TTL", -5),
        ("LOCKOUT_WINDOW", True),
        ("CLEANUP_INTERVAL", None),
        ("LOCKOUT_THRESHOLD", -1),
        ("LOCKOUT_THRESHOLD", 2.5),
        ("LOCKOUT_THRESHOLD", True),
        ("LOCKOUT_IP_THRESHOLD", -1),
        ("LOCKOUT_IP_THRESHOLD", "50"),
        ("ENABLE_AUDIT_LOG", "yes"),
        ("ROTATE_REFRESH_TOKENS", 1),
        ("TABLE_PREFIX", "auth-"),
        ("TABLE_PREFIX", 7),
        ("AUDIT_STORAGE", 5),
        ("REFRESH_REUSE_GRACE", -1),
        ("REFRESH_REUSE_GRACE", "10s"),
        ("REFRESH_REUSE_GRACE", True),
        ("REFRESH_REUSE_GRACE", timedelta(seconds=-1)),
        # conf.REFRESH_REUSE_GRACE would raise OverflowError on the first replayed token.
        ("REFRESH_REUSE_GRACE", float("inf")),
        ("REFRESH_REUSE_GRACE", float("nan")),
        ("REFRESH_REUSE_GRACE", 1e300),
        ("ACCESS_TOKEN_TTL", float("inf")),
    ],
)
def test_e005_bad_values(authfw: Any, key: str, value: Any) -> None:
    authfw(**{key: value})
    [message] = authfw_messages()
    assert message.id == "authfw.E005"
    assert key in message.msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ACCESS_TOKEN_TTL", timedelta(minutes=5)),
        ("SESSION_TTL", 3600),
        ("LOCKOUT_WINDOW", 90.5),
        ("LOCKOUT_THRESHOLD", 0),
        ("LOCKOUT_IP_THRESHOLD", 0),
        ("LOCKOUT_IP_THRESHOLD", 200),
        ("ENABLE_AUDIT_LOG", False),
        ("TABLE_PREFIX", "myapp_auth_"),
        ("AUDIT_STORAGE", None),
        ("REFRESH_REUSE_GRACE", 0),
        ("REFRESH_REUSE_GRACE", 10),
        ("REFRESH_REUSE_GRACE", timedelta(seconds=2.5)),
    ],
)
def test_e005_accepts_good_values(authfw: Any, key: str, value: Any) -> None:
    authfw(**{key: value})
    assert authfw_messages() == []


def test_e005_authfw_not_a_dict(settings: Any) -> None:
    settings.AUTHFW = [("ACCESS_TOKEN_TTL", 60)]
    assert ids(authfw_messages()) == ["authfw.E005"]


# E003: strict migration mode --------------------------------------------------------------------


def forget_migration() -> str:
    """Make the test database look as if the latest django_authfw migration were unapplied."""
    graph = MigrationLoader(connection).graph
    leaves: list[tuple[str, str]] = graph.leaf_nodes("django_authfw")
    [(_, name)] = leaves
    MigrationRecorder.Migration.objects.filter(app="django_authfw", name=name).delete()
    return name


@pytest.mark.django_db(databases="__all__")
def test_e003_not_run_without_database_or_in_auto_mode(authfw: Any) -> None:
    forget_migration()
    authfw(MIGRATION_MODE="auto")
    assert authfw_messages(databases=["default"]) == []
    authfw(MIGRATION_MODE="strict")
    call_command("check")  # database checks run only with --database


def test_e003_strict_with_everything_applied(authfw: Any, db: None) -> None:
    authfw(MIGRATION_MODE="strict")
    assert authfw_messages(databases=["default"]) == []


def test_e003_strict_with_unapplied_migrations(authfw: Any, db: None) -> None:
    authfw(MIGRATION_MODE="strict")
    name = forget_migration()
    [message] = authfw_messages(databases=["default"])
    assert message.id == "authfw.E003"
    assert name in message.msg
    assert message.hint == "Run `python manage.py migrate django_authfw --database default`."
    with pytest.raises(SystemCheckError, match=r"authfw\.E003"):
        call_command("check", "--database", "default")


def test_e003_stands_aside_for_migrate(authfw: Any, db: None) -> None:
    """`migrate` runs the database checks first; failing there would block the cure."""
    authfw(MIGRATION_MODE="strict")
    forget_migration()
    call_command("migrate", "django_authfw", plan=True, skip_checks=False, verbosity=0)


def test_e005_authfw_a_tuple_is_a_check_error_not_a_traceback(tmp_path: Any) -> None:
    """``AUTHFW = {...},`` (a trailing comma) used to crash importing the models."""
    (tmp_path / "tuple_settings.py").write_text(
        "from testproject.settings import *  # noqa: F403\nAUTHFW = ({'ACCESS_TOKEN_TTL': 60},)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tuple_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)]),
    }
    done = subprocess.run(
        [sys.executable, str(root / "manage.py"), "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "(authfw.E005) AUTHFW must be a dict, not tuple" in done.stderr
    assert "trailing comma" in done.stderr


# W030: SQLite and concurrent writers ------------------------------------------------------------

SQLITE = "django.db.backends.sqlite3"


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        (None, ["transaction_mode", "timeout"]),
        ({}, ["transaction_mode", "timeout"]),
        ({"timeout": 20}, ["transaction_mode"]),
        ({"transaction_mode": "DEFERRED", "timeout": 20}, ["transaction_mode"]),
        ({"transaction_mode": "immediate"}, ["timeout"]),
        ({"transaction_mode": "IMMEDIATE", "timeout": 20}, []),
        ({"transaction_mode": "EXCLUSIVE", "timeout": 5}, []),
    ],
)
def test_w030_sqlite_without_immediate_transactions_and_a_timeout(
    options: Any, missing: list[str]
) -> None:
    from django_authfw.checks import sqlite_lock_warnings

    entry: dict[str, Any] = {"ENGINE": SQLITE, "NAME": "db.sqlite3"}
    if options is not None:
        entry["OPTIONS"] = options
    messages = sqlite_lock_warnings({"default": entry, "pg": {"ENGINE": "x.postgresql"}})
    if not missing:
        assert messages == []
        return
    [message] = messages
    assert message.id == "authfw.W030"
    assert isinstance(message, checks.Warning)
    assert message.obj == "DATABASES['default']"
    for name in missing:
        assert name in message.msg
    assert "'transaction_mode': 'IMMEDIATE', 'timeout': 20" in (message.hint or "")


def test_w030_the_project_and_demo_settings_follow_it() -> None:
    import importlib

    from django_authfw.checks import sqlite_lock_warnings

    for module in ("testproject.settings", "testproject.demo.settings"):
        configured = importlib.import_module(module).DATABASES
        assert any(entry["ENGINE"] == SQLITE for entry in configured.values())
        assert sqlite_lock_warnings(configured) == [], module
