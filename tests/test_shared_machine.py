"""The suite on a machine it shares: its own PostgreSQL test database and Redis keys per run,
and a test database that cannot be created ends the run at once with what to do.

The failing runs are real ``pytest`` processes on one database test of this suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection

from .backends import CHECKOUT_ID, RUN_ID, postgres_server_url, unique_prefix
from .conftest import run_database_name

REPO = Path(__file__).resolve().parent.parent
# One test that needs the database and nothing else.
DB_TEST = "tests/test_views.py::test_url_names_are_namespaced"

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the test database is named only on PostgreSQL"
)


def test_the_run_id_names_the_checkout_and_the_process() -> None:
    assert f"{CHECKOUT_ID}_{os.getpid()}" == RUN_ID
    assert unique_prefix().startswith(f"authfw-test:{RUN_ID}:")
    assert unique_prefix() != unique_prefix()


@needs_postgres
@pytest.mark.django_db
def test_this_run_uses_a_database_of_its_own() -> None:
    expected = os.environ.get("AUTHFW_TEST_DB_NAME") or f"authfw_test_{RUN_ID}"
    assert run_database_name() == expected
    assert connection.settings_dict["NAME"] == expected


def _pytest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The advice must come within a minute: a run that takes longer fails here by timing out.
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", DB_TEST],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("AUTHFW_TEST_DB_NAME", None)
    env.update(overrides)
    return env


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_server_ends_the_run_with_advice() -> None:
    result = _pytest(_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:{_closed_port()}/test"))
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "Could not create the test database 'authfw_test_" in output, output
    assert "What to do: check that PostgreSQL is up there (pg_isready -h 127.0.0.1" in output
    assert "AUTHFW_TEST_POSTGRES_URL" in output
    assert " passed" not in output


@pytest.fixture
def busy_database() -> Iterator[tuple[str, str]]:
    """(server URL, name): a database another client is connected to, as another run's is."""
    import psycopg

    url = postgres_server_url() + "test"
    parts = urlsplit(url)
    admin_url = parts._replace(path="/postgres", query="connect_timeout=10").geturl()
    name = f"authfw_busy_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with psycopg.connect(parts._replace(path=f"/{name}").geturl()):
                yield url, name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@needs_postgres
def test_a_database_name_in_use_ends_the_run_with_advice(busy_database: tuple[str, str]) -> None:
    url, name = busy_database
    result = _pytest(_env(DATABASE_URL=url, AUTHFW_TEST_DB_NAME=name))
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert f"Could not create the test database {name!r}" in output, output
    assert "leave AUTHFW_TEST_DB_NAME unset" in output
