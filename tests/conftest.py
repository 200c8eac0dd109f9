from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from django_authfw.storage import AuthStorage

from .backends import (
    RUN_ID,
    SERVER_BACKENDS,
    backend_id,
    built_storage,
    runs_on_server_backends,
    selected_backends,
)
from .factories import UserFactory
from .hashers import COUNTING_HASHER
from .redis_servers import (  # noqa: F401  (session fixtures: servers stop at the end)
    _stop_redis_servers_at_session_end,
    redis_cluster,
    redis_sentinel,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = selected_backends(servers=runs_on_server_backends(metafunc.module.__name__))
        metafunc.parametrize(
            "backend",
            [
                pytest.param(n, id=backend_id(n), marks=[pytest.mark.slow] * (n in SERVER_BACKENDS))
                for n in names
            ],
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the contract classes (tests/contract) of backends the run does not cover."""
    selected = set(selected_backends(servers=True))
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        name = getattr(getattr(item, "cls", None), "backend_name", None)
        (dropped if name is not None and name not in selected else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header() -> list[str]:
    from django.db import connection

    from .backends import REDIS_TEST_URL

    header = [
        f"authfw: database vendor {connection.vendor}, backends "
        f"{', '.join(selected_backends(servers=True))}"
    ]
    if connection.vendor == "postgresql":
        header.append(f"authfw: test database {run_database_name()!r}")
    header.append(f"authfw: Redis {REDIS_TEST_URL}, keys under 'authfw-test:{RUN_ID}:'")
    return header


# The PostgreSQL test database ------------------------------------------------------------------


def run_database_name() -> str:
    """``AUTHFW_TEST_DB_NAME``, else one of this run's own: checkouts and runs that share a
    server never drop or fill each other's database."""
    return os.environ.get("AUTHFW_TEST_DB_NAME") or f"authfw_test_{RUN_ID}"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Name the PostgreSQL test database for this run (pytest-django's hook for it)."""
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    if settings_dict["ENGINE"] == "django.db.backends.postgresql":
        settings_dict.setdefault("TEST", {})["NAME"] = run_database_name()


class _DatabaseSetupAdvice:
    """A test database that cannot be created ends the run at once, saying what to do, instead
    of failing every test that needs it (Django exits with SystemExit when it cannot recreate
    one that exists).

    A plugin of its own, registered below: a conftest's hooks only see fixtures set up for its
    directory's nodes, and the session-scoped ``django_db_setup`` belongs to the session.
    """

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        try:
            return (yield)
        except (Exception, SystemExit) as exc:
            if fixturedef.argname != "django_db_setup":
                raise
            pytest.exit(_database_advice(exc), returncode=3)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_DatabaseSetupAdvice(), "authfw-database-setup-advice")


def _database_advice(exc: BaseException) -> str:
    from django.db import connections

    db = connections["default"].settings_dict
    host, port = db.get("HOST") or "localhost", db.get("PORT") or 5432
    name = db.get("TEST", {}).get("NAME") or f"test_{db.get('NAME')}"
    reason = "see Django's message above" if isinstance(exc, SystemExit) else str(exc).strip()
    return (
        f"Could not create the test database {name!r} on {db.get('USER')}@{host}:{port}: "
        f"{reason}\nWhat to do: check that PostgreSQL is up there (pg_isready -h {host} -p "
        f"{port}) and that the role may CREATE DATABASE; or point the suite at another server "
        "with AUTHFW_TEST_POSTGRES_URL (tests/run.sh) or DATABASE_URL. If another run uses that "
        "database name, leave AUTHFW_TEST_DB_NAME unset (each run then gets its own, "
        "authfw_test_<checkout>_<pid>) or set it to a name of your own."
    )


@pytest.fixture(autouse=True)
def _cheap_argon2(settings: Any) -> None:
    """Real Argon2 with a small work factor for every test; the default costs ~100 MiB a hash.

    Tests about hashing policy set PASSWORD_HASHERS themselves (Django's own Argon2 included).
    """
    settings.PASSWORD_HASHERS = [
        COUNTING_HASHER,
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]


@pytest.fixture
def storage(backend: str, settings: object, db: None) -> Iterator[AuthStorage]:
    """A fresh, empty storage of each selected backend."""
    with built_storage(backend, settings) as built:
        yield built


@pytest.fixture
def other_storage(backend: str, settings: object, db: None) -> Iterator[AuthStorage]:
    """A second, independent, empty storage of the same backend (import and migration)."""
    with built_storage(backend, settings) as built:
        yield built


@pytest.fixture
def make_user(db: None) -> Callable[..., str]:
    """Create a real user and return its id as records carry it (str of the pk)."""

    def make(**kwargs: object) -> str:
        return str(UserFactory.create(**kwargs).pk)

    return make
