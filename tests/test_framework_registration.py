"""register_user: the project's password validators by default (with an explicit skip), the
password hashed outside the transaction, and many concurrent registrations on a SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import connection

from django_authfw import AuthFramework
from django_authfw.exceptions import InvalidInput
from django_authfw.storage import AuthStorage
from django_authfw.storage.database.errors import SQLITE_RECOMMENDED_OPTIONS

from .framework_support import (  # noqa: F401  (fixtures are used by name)
    PASSWORD,
    auth_fixture,
    counting_hasher_fixture,
)
from .hashers import CountingArgon2PasswordHasher

User = get_user_model()
REPO = Path(__file__).resolve().parent.parent

VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
]


@pytest.fixture
def validators(settings: Any) -> None:
    settings.AUTH_PASSWORD_VALIDATORS = VALIDATORS


# AUTH_PASSWORD_VALIDATORS ---------------------------------------------------------------------


@pytest.mark.usefixtures("validators")
def test_register_user_runs_the_password_validators(
    auth: AuthFramework, storage: AuthStorage
) -> None:
    with pytest.raises(InvalidInput, match=r"^password: This password is too short\."):
        auth.register_user("fred", "short")
    # The validators see the extra fields too, as UserCreationForm's do.
    with pytest.raises(InvalidInput, match="too similar to the email address"):
        auth.register_user("fred", "frederick.bloggs", email="frederick.bloggs@example.com")
    # Refused before any hashing, and nothing written.
    assert CountingArgon2PasswordHasher.calls == 0
    assert not User.objects.exists()
    assert storage.count_audit(action="register") == 0

    assert auth.register_user("fred", "long enough passphrase").get_username() == "fred"


@pytest.mark.usefixtures("validators")
def test_register_user_skips_the_validators_when_told(auth: AuthFramework) -> None:
    user = auth.register_user("fred", "short", password_validation=False)
    assert user.check_password("short")
    # The keyword is the framework's, never passed on to create_user as a field.
    assert not hasattr(user, "password_validation")
    with pytest.raises(InvalidInput, match="password_validation must be True or False"):
        auth.register_user("ann", "short", password_validation="no")  # type: ignore[arg-type]


@pytest.mark.usefixtures("validators")
def test_aregister_user_runs_the_password_validators(auth: AuthFramework) -> None:
    async def register(password: str, **kwargs: Any) -> Any:
        return await auth.aregister_user("fred", password, **kwargs)

    with pytest.raises(InvalidInput, match=r"^password: This password is too short\."):
        async_to_sync(register)("short")
    assert not User.objects.exists()
    user = async_to_sync(register)("short", password_validation=False)
    assert user.check_password("short")


# Hashing outside the transaction --------------------------------------------------------------


class TransactionSpyHasher(CountingArgon2PasswordHasher):
    """Counts the hashes computed while the default database has a transaction open."""

    inside: list[bool] = []

    def encode(self, password: str, salt: str) -> str:
        TransactionSpyHasher.inside.append(connection.in_atomic_block)
        return super().encode(password, salt)


@pytest.mark.django_db(transaction=True)  # no test-wide transaction: see the real ones
def test_register_user_hashes_before_the_transaction(settings: Any) -> None:
    """A hash inside the transaction holds the database's write lock for the hasher's whole run
    (on SQLite, every other writer then waits for it or fails with "database is locked")."""
    settings.PASSWORD_HASHERS = [f"{__name__}.TransactionSpyHasher"]
    TransactionSpyHasher.inside = []
    auth = AuthFramework()
    user = auth.register_user("fred", PASSWORD)
    async_to_sync(auth.aregister_user)("ann", PASSWORD)
    assert TransactionSpyHasher.inside == [False, False]
    assert user.check_password(PASSWORD)
    assert User.objects.get(username="ann").check_password(PASSWORD)


# SQLite under concurrent writers --------------------------------------------------------------


def run_sqlite_load(tmp_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """40 threads register + log in at once on a fresh SQLite file (tests/sqlite_load.py)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.sqlite_load",
            str(tmp_path / "load.sqlite3"),
            json.dumps(options),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_sqlite_locked_is_storage_unavailable_with_a_hint(tmp_path: Path) -> None:
    """Django's default SQLite OPTIONS (deferred transactions): writers that cannot upgrade
    their read lock fail at once. Each such call is a StorageUnavailable that says what to do,
    never a raw OperationalError."""
    result = run_sqlite_load(tmp_path, {})
    assert result["ok"] + len(result["errors"]) == 40
    for error in result["errors"]:
        assert error["type"] == "StorageUnavailable", error
        assert "is locked" in error["message"]
        assert "'transaction_mode': 'IMMEDIATE'" in error["message"], error


def test_sqlite_with_the_recommended_options_serves_every_writer(tmp_path: Path) -> None:
    result = run_sqlite_load(tmp_path, SQLITE_RECOMMENDED_OPTIONS)
    assert result == {"ok": 40, "errors": []}
