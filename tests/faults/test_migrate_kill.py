"""``authfw_migrate`` SIGKILLed halfway through and run again: nothing lost, nothing twice.

The source is the fault tests' own PostgreSQL cluster (``default``: DatabaseStorage, seeded
with tokens, audit events, sessions and entries), the target their own AOF Redis (``cache``:
CacheStorage on django-redis). The first run is killed once the target holds about a third of
the tokens; the second finishes it with ``--verify``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest

from .conftest import ROOT, AofRedis, manage_command, run_json, worker_command, worker_env
from .postgres_cluster import PostgresCluster

pytestmark = pytest.mark.faults

BATCH = 50


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
    # Each token is a record key and an access-digest key (and a refresh one): a third of the
    # tokens' keys, well inside the token phase, which comes first.
    kill_at = seeded["tokens"]

    started = time.monotonic()
    process = subprocess.Popen(
        migrate, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        while process.poll() is None and redis.dbsize() < kill_at:
            time.sleep(0.005)
        assert process.poll() is None, "the migration ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    keys_at_kill = redis.dbsize()
    tokens_at_kill = sum(1 for _ in redis.scan_iter("auth:token:*", count=1000))
    checked = killed = time.monotonic()
    subprocess.run(
        [*migrate, "--verify"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300
    )
    rerun = time.monotonic()
    done = run_json(check, env)
    print(
        f"\ntimes: killed after {killed - started:.1f}s, "
        f"re-run {rerun - checked:.1f}s, check {time.monotonic() - rerun:.1f}s"
    )
    source, target = done["source"], done["target"]

    counted = ("total_tokens", "revoked_tokens", "total_sessions", "kv_entries")
    print(
        f"\nauthfw_migrate SIGKILL: {seeded['tokens']} tokens seeded; killed with "
        f"{keys_at_kill} keys in Redis, {tokens_at_kill} of them tokens; after the re-run: "
        f"{done['outcomes']}; source "
        f"{ {k: source[k] for k in counted} } audit {done['source_audit']}, target "
        f"{ {k: target[k] for k in counted} } audit {done['target_audit']}"
    )
    assert 0 < tokens_at_kill < seeded["tokens"]  # it was killed halfway
    assert done["outcomes"] == {"verified": seeded["tokens"]}
    for key in counted:  # nothing lost, nothing written twice
        assert target[key] == source[key], key
    assert done["target_audit"] == done["source_audit"] == seeded["tokens"]
    # The user's token index holds each token once.
    assert redis.scard(next(redis.scan_iter("auth:user:*:tokens"))) == seeded["tokens"]
