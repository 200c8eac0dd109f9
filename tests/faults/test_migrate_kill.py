"""``authfw_migrate`` SIGKILLed halfway through and run again: nothing lost, nothing twice.

The source is the fault tests' own PostgreSQL cluster (``default``: DatabaseStorage, seeded
with tokens, audit events, sessions and entries), the target their own AOF Redis (``cache``:
CacheStorage on django-redis). The first run is killed in the middle of the tokens, the second
in the middle of the audit log; the third finishes with ``--verify``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import ROOT, AofRedis, manage_command, run_json, worker_command, worker_env
from .postgres_cluster import PostgresCluster

pytestmark = pytest.mark.faults

BATCH = 50
AUDIT_EVENTS = "auth:audit:{log}:events"  # hash: event id -> event (storage/keyspace.py)


def kill_when(
    command: list[str], env: dict[str, str], due: Callable[[], bool], progress: Callable[[], int]
) -> int:
    """Start ``command``, SIGKILL it once ``due()``; return ``progress()`` at the kill."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        while process.poll() is None and not due():
            time.sleep(0.005)
        assert process.poll() is None, "the migration ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    return progress()


def test_migrate_killed_halfway_and_rerun(
    postgres_cluster: PostgresCluster, seeded: dict[str, Any], aof_redis: AofRedis
) -> None:
    env = worker_env(postgres_cluster, aof_redis.url)
    migrate = manage_command(
        "authfw_migrate", "--from", "default", "--to", "cache", "--batch-size", str(BATCH)
    )
    check = worker_command(
        "check", "--alias", "cache", "--seed", seeded["seed"], "--tokens", str(seeded["tokens"])
    )
    redis = aof_redis.server.client()
    tokens = seeded["tokens"]

    def token_count() -> int:
        return sum(1 for _ in redis.scan_iter("auth:token:*", count=1000))

    def audit_count() -> int:
        return int(redis.hlen(AUDIT_EVENTS))

    # Kinds go in order: tokens, sessions, kv, audit. The first run dies in the token phase
    # (each token is a record key, an access key and a refresh key: ``tokens`` keys is about
    # a third of them), the second in the audit phase, the third finishes.
    started = time.monotonic()
    at_kills = [
        kill_when(migrate, env, lambda: redis.dbsize() >= tokens, token_count),
        kill_when(migrate, env, lambda: audit_count() >= tokens // 2, audit_count),
    ]
    killed = time.monotonic()
    subprocess.run(
        [*migrate, "--verify"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300
    )
    rerun = time.monotonic()
    done = run_json(check, env)
    source, target = done["source"], done["target"]

    counted = ("total_tokens", "revoked_tokens", "total_sessions", "kv_entries")
    print(
        f"\nauthfw_migrate SIGKILL: {tokens} tokens and audit events seeded; first run killed "
        f"with {at_kills[0]} tokens copied, the second with {at_kills[1]} audit events copied "
        f"({killed - started:.1f}s); the third, with --verify, took {rerun - killed:.1f}s; "
        f"after it: "
        f"{done['outcomes']}; source "
        f"{ {k: source[k] for k in counted} } audit {done['source_audit']}, target "
        f"{ {k: target[k] for k in counted} } audit {done['target_audit']}"
    )
    assert 0 < at_kills[0] < tokens  # killed halfway
    assert 0 < at_kills[1] < tokens
    assert done["outcomes"] == {"verified": tokens}
    for key in counted:  # nothing lost, nothing written twice
        assert target[key] == source[key], key
    assert done["target_audit"] == done["source_audit"] == tokens
    # The user's token index holds each token once.
    assert redis.scard(next(redis.scan_iter("auth:user:*:tokens"))) == tokens
