"""PostgreSQL restarted under a long-lived process (a worker, not a request cycle) that calls
``verify_token`` in a loop: the process recovers on its own (issue 10, item 9).

Django drops a broken connection only around requests; before the fix the worker kept its dead
connection and failed every call until it was restarted itself.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, worker_command, worker_env
from .postgres_cluster import PostgresCluster

pytestmark = pytest.mark.faults

BEFORE = 100  # verifications before the restart
AFTER = 100  # verifications after it that prove the recovery
RECOVERY_DEADLINE = 30  # seconds after the restart before the test gives up (it recovers in <1 s)


class Snapshots:
    """The worker's latest line of running counts, read on a thread of its own."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.latest: dict[str, Any] = {"ok": 0, "errors": {}}
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.latest = json.loads(line)
                self._changed.notify_all()

    def wait_for(self, what: str, condition: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self.latest):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; worker: {self.latest}")
                self._changed.wait(min(left, 0.5))
            return dict(self.latest)

    def join(self) -> dict[str, Any]:
        self._thread.join(30)
        return self.latest


def test_long_lived_process_recovers_after_postgres_restart(
    postgres_cluster: PostgresCluster, seeded: dict[str, Any], tmp_path: Path
) -> None:
    log = (tmp_path / "worker.log").open("w")  # a file, not a pipe nobody drains
    process = subprocess.Popen(
        worker_command("verify-loop", "--seed", seeded["seed"], "--tokens", str(seeded["tokens"])),
        cwd=ROOT,
        env=worker_env(postgres_cluster),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        snapshots = Snapshots(process)
        before = snapshots.wait_for(
            f"{BEFORE} verifications", lambda s: s["ok"] >= BEFORE and not s["errors"], 60
        )
        worker_pid = process.pid

        postgres_cluster.crash()  # immediate shutdown: every connection drops
        stopped = time.monotonic()
        at_crash = snapshots.wait_for(
            "the worker to see the outage", lambda s: s["errors"], RECOVERY_DEADLINE
        )
        postgres_cluster.start()
        restarted = time.monotonic()
        at_restart = dict(snapshots.latest)
        # The same process (no restart of its own) verifies again.
        first_ok = snapshots.wait_for(
            "the first verification after the restart",
            lambda s: s["ok"] > at_restart["ok"],
            RECOVERY_DEADLINE,
        )
        recovered = time.monotonic()
        snapshots.wait_for(
            f"{AFTER} verifications after the restart",
            lambda s: s["ok"] >= first_ok["ok"] + AFTER,
            RECOVERY_DEADLINE,
        )
        assert process.pid == worker_pid
        assert process.poll() is None
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the worker stops at EOF and prints its final counts
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    final = snapshots.join()
    assert final.get("final"), (tmp_path / "worker.log").read_text()[-4000:]

    print(
        f"\npostgres restart: worker pid {worker_pid} verified {before['ok']} tokens before the "
        f"restart and {final['ok'] - at_restart['ok']} after it ({final['ok']} in all); "
        f"errors seen {final['errors']} (at the crash {at_crash['errors']}); down "
        f"{restarted - stopped:.2f}s; first verification {recovered - restarted:.2f}s after "
        f"the server was back"
    )
    assert set(final["errors"]) == {"StorageUnavailable"}, final["errors"]
    assert final["ok"] >= first_ok["ok"] + AFTER
