"""``--processes N``: the same operations timed in N worker processes at once.

The parent fills the store, then starts N workers. Each builds its own storage from the alias
(its own connections), and they time every operation in lockstep: all N wait at a barrier, run
the same operation for the same number of seconds, and send their measurements back. Rates add
up; latency samples are pooled.

Workers are forked after the parent closed its database connections (a forked child must not
share a socket with its parent), so they see exactly the parent's settings, including
``override_settings`` in tests. Where ``fork`` is unavailable they are spawned and set Django
up again from ``DJANGO_SETTINGS_MODULE``.

Ctrl-C: workers ignore SIGINT; the parent breaks the barrier, so each worker stops after the
operation it is timing (at most ``--seconds``). Everything the workers wrote belongs to the
run's user and is deleted by the parent's cleanup.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from django.db import connections

from .runner import Measurement, measure, merge
from .workload import Population

# Seconds a worker may take to start (import Django, connect) before the run gives up.
START_TIMEOUT = 120.0


@dataclass
class Plan:
    """What every worker needs: which storage, which records, which operations."""

    alias: str
    run_id: str
    user_id: str
    seconds: float
    operations: list[str]
    population: Population
    baseline: dict[str, Any] | None
    #: Whether the request rows go through the alias (see Workload.alias).
    requests: bool = False
    #: The key of the run's DRF token for the peer row (see requests.py), or None.
    authtoken_key: str | None = None


def start_method() -> str:
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _worker(plan: Plan, index: int, barrier: Any, conn: Connection, spawned: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if spawned:
            import django

            django.setup()
        from ..framework import AuthFramework
        from ..storage import forget_storages, get_storage
        from .probe import probe
        from .suite import baseline_contexts
        from .workload import Workload

        # The storages inherited from the parent hold its connections: build this process's
        # own, registered under the alias, where the middleware of the request rows finds it.
        forget_storages()
        storage = get_storage(plan.alias)
        framework = AuthFramework(storage=storage)
        workload = Workload(
            storage,
            run_id=plan.run_id,
            user_id=plan.user_id,
            verify=framework.verify_token,
            alias=plan.alias if plan.requests else None,
            authtoken_key=plan.authtoken_key,
        )
        workload.population = plan.population
        operations = workload.operations(index)
        for name in plan.operations:
            barrier.wait()
            conn.send((name, measure(operations[name], plan.seconds)))
        if plan.baseline is not None:
            contexts = baseline_contexts(probe(storage), plan.baseline, f"{plan.run_id}-{index}")
            for name in baseline_names(plan):
                with contexts[name] as op:
                    barrier.wait()
                    conn.send((name, measure(op, plan.seconds)))
        storage.close()
        conn.send(("done", None))
    except threading.BrokenBarrierError:
        conn.send(("stopped", None))
    except BaseException:
        barrier.abort()
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class WorkerError(Exception):
    """A worker process failed; the message carries its traceback."""


def run_workers(plan: Plan, processes: int) -> dict[str, Measurement]:
    """Time ``plan.operations`` (and the baseline) in ``processes`` workers; merged results."""
    method = start_method()
    context = multiprocessing.get_context(method)
    # Sockets must not be shared across fork; the parent reconnects on its next query.
    connections.close_all()
    barrier = context.Barrier(processes + 1)
    pipes = [context.Pipe(duplex=False) for _ in range(processes)]
    workers = [
        context.Process(  # type: ignore[attr-defined]
            target=_worker,
            args=(plan, index, barrier, send, method == "spawn"),
            name=f"authfw_bench-{index}",
            daemon=True,
        )
        for index, (_recv, send) in enumerate(pipes)
    ]
    for worker in workers:
        worker.start()
    for _recv, send in pipes:
        send.close()
    phases = [*plan.operations, *baseline_names(plan)]
    results: dict[str, Measurement] = {}
    try:
        for phase in phases:
            barrier.wait(timeout=START_TIMEOUT if phase == phases[0] else None)
            parts: list[Measurement] = []
            for recv, _send in pipes:
                name, value = _receive(recv, plan.seconds)
                if name != phase:
                    raise WorkerError(f"worker sent {name!r} while timing {phase!r}")
                parts.append(value)
            results[phase] = merge(parts)
    except threading.BrokenBarrierError:
        raise WorkerError(_first_error(pipes) or "a worker process failed to start") from None
    except BaseException:
        barrier.abort()
        raise
    finally:
        for worker in workers:
            worker.join(timeout=plan.seconds + 30)
            if worker.is_alive():  # stuck on a dead server: it owns nothing to clean up
                worker.terminate()
                worker.join()
        for recv, _send in pipes:
            recv.close()
    return results


def baseline_names(plan: Plan) -> list[str]:
    """The baseline rows every worker times after the operations, in order."""
    return [] if plan.baseline is None else list(plan.baseline["names"])


def _receive(recv: Connection, seconds: float) -> tuple[str, Any]:
    # A worker answers within its timing window plus the warm-up; a dead one never does.
    try:
        if not recv.poll(seconds * 2 + START_TIMEOUT):
            raise WorkerError("a worker process stopped answering")
        name, value = recv.recv()
    except (EOFError, OSError) as exc:  # the worker died without a word (killed, crashed)
        raise WorkerError(f"a worker process ended unexpectedly ({exc!r})") from None
    if name == "error":
        raise WorkerError(f"a worker process failed:\n{value}")
    return name, value


def _first_error(pipes: list[tuple[Connection, Connection]]) -> str | None:
    for recv, _send in pipes:
        try:
            while recv.poll(1):
                name, value = recv.recv()
                if name == "error":
                    return f"a worker process failed:\n{value}"
        except (EOFError, OSError):
            continue
    return None
