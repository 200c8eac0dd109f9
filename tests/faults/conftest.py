"""Fixtures of the fault tests: their own PostgreSQL cluster and Redis servers, and the worker
processes.

Every server starts on a free loopback port and is stopped by its pid. A machine that cannot
run them (no PostgreSQL server binaries, not root) fails the group, as a service that is down
fails the rest of the suite; ``AUTHFW_FAULTS=skip`` narrows the run on purpose and skips it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..redis_servers import HOST, ServerProcess, free_block, redis_server_binary, start_server
from .postgres_cluster import PostgresCluster, create_cluster, missing_prerequisites, remove_cluster

ROOT = Path(__file__).resolve().parents[2]
REDIS_PORTS = range(26600, 26700)
# appendfsync always: a write is on disk before its reply, so SIGKILL loses no acknowledged one.
AOF_ARGS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
SEEDED_TOKENS = 1500
SKIPPED_ON_PURPOSE = os.environ.get("AUTHFW_FAULTS") == "skip"


def unavailable(reason: str) -> None:
    if SKIPPED_ON_PURPOSE:
        pytest.skip(f"AUTHFW_FAULTS=skip: {reason}")
    pytest.fail(
        f"The fault tests cannot run: {reason}. Run them as root on a machine with the "
        "PostgreSQL server binaries, or set AUTHFW_FAULTS=skip to leave them out on purpose."
    )


def worker_env(cluster: PostgresCluster, redis_url: str = "") -> dict[str, str]:
    """The environment of a process on the fault tests' own servers (never the machine's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHFW_TEST_", "PYTEST"))}
    env.update(
        DJANGO_SETTINGS_MODULE="testproject.settings",
        DATABASE_URL=cluster.url(),
        REDIS_URL=redis_url,
        DJANGO_DEBUG="0",  # as in production: no query log
        PYTHONUNBUFFERED="1",
    )
    return env


def run_json(command: list[str], env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    """Run a command to completion; return its last JSON line."""
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"{command} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    reply: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return reply


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.faults.worker", *args]


def manage_command(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of our own, migrated, with the database ``authfw``."""
    reason = missing_prerequisites()
    if reason is not None:
        unavailable(reason)
    cluster = create_cluster()
    try:
        subprocess.run(
            manage_command("migrate", "--verbosity", "0"),
            cwd=ROOT,
            env=worker_env(cluster),
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield cluster
    finally:
        remove_cluster(cluster, cluster.root)


@pytest.fixture(scope="session")
def seeded(postgres_cluster: PostgresCluster) -> dict[str, Any]:
    """``SEEDED_TOKENS`` tokens and audit events (and some sessions and entries) in the
    cluster; the ``seed`` derives their raw access tokens (tests/faults/worker.py)."""
    seed = uuid.uuid4().hex
    stats = run_json(
        worker_command("seed", "--seed", seed, "--tokens", str(SEEDED_TOKENS)),
        worker_env(postgres_cluster),
    )
    return {"seed": seed, "tokens": SEEDED_TOKENS, "statistics": stats["seeded"]}


class AofRedis:
    """A redis-server with an append-only file fsynced on every write; kill and restart it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_block(REDIS_PORTS, 1)[0]
        self.server: ServerProcess = start_server(self.port, directory, *AOF_ARGS)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL, by pid: a crash, nothing flushed beyond what each write already fsynced."""
        self.server.kill()

    def restart(self) -> None:
        """Start again on the same port and data directory: the server replays its AOF."""
        self.server = start_server(self.port, self.directory, *AOF_ARGS)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedis]:
    redis_server_binary()  # a clear error if redis-server is missing
    server = AofRedis(tmp_path / "aof-redis")
    try:
        yield server
    finally:
        server.stop()
