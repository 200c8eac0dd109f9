"""The operations measurement script runs end to end with a tiny N (no figures checked: those
go to docs/operations.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from .backends import REDIS_TEST_URL

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str) -> str:
    env = dict(os.environ, AUTHFW_MEASURE_REDIS=REDIS_TEST_URL)
    if connection.vendor == "postgresql":
        s = connection.settings_dict
        password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
        env["AUTHFW_MEASURE_PG"] = (
            f"postgres://{s['USER']}{password}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"
            "/postgres"
        )
    done = subprocess.run(
        [sys.executable, "-m", "tests.measure_operations", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].replace(",", "").isdigit():
            rows[cells[1]] = cells
    return rows


@pytest.mark.django_db
def test_script_prints_the_table_on_sqlite_and_memory() -> None:
    rows = table_rows(run_script("--records", "40", "--backends", "sqlite,memory", "--single-user"))
    for operation in (
        "backup of SQLite",
        "restore into SQLite",
        "cleanup on SQLite",
        "backup of memory",
        "restore into memory",
        "cleanup on memory",
        "one user, 40 tokens: revoke_user_tokens (SQLite)",
        "one user, 40 tokens: cleanup (SQLite)",
    ):
        assert operation in rows, sorted(rows)
        assert rows[operation][2].endswith("/s")
    # Beside each database figure: its raw baseline and the ratio against its target.
    assert rows["cleanup on SQLite"][3].startswith("raw batched DELETE: ")
    assert "(≥0.6)" in rows["cleanup on SQLite"][4]
    assert rows["backup of SQLite"][5].endswith(" MB")


@pytest.mark.django_db
def test_script_with_postgresql_and_redis() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs the PostgreSQL server of the test database")
    rows = table_rows(run_script("--records", "40", "--backends", "postgresql,redis"))
    for operation in (
        "backup of PostgreSQL",
        "migrate PostgreSQL -> Redis",
        "migrate Redis -> PostgreSQL",
        "backup of Redis",
        "restore into Redis",
        "restore into PostgreSQL",
        "cleanup on PostgreSQL",
    ):
        assert operation in rows, sorted(rows)
    assert rows["backup of PostgreSQL"][3].startswith("COPY ... TO STDOUT: ")
    assert rows["restore into Redis"][3].startswith("redis-py pipeline: ")
