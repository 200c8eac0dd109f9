"""A burst: many threads released at once, each verifying tokens, as a traffic spike does.

It shows how a storage's connection pool copes when more callers arrive together than it has
connections: a pool that waits queues them (latency grows, nothing fails), one that refuses
turns the excess into errors (``wait_for_connection`` of :class:`RedisStorage`, the pool
classes of a django-redis alias, ``OPTIONS["pool"]`` of a PostgreSQL alias).
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from .runner import percentile


def run_burst(verify: Callable[[], object], threads: int, seconds: float) -> dict[str, Any]:
    """Release ``threads`` threads together; each calls ``verify`` for ``seconds``.

    Returns the calls per second of all threads together, per-call latency percentiles of
    the calls that succeeded, and the errors (count, and the first one's text).
    """
    barrier = threading.Barrier(threads + 1)
    latencies: list[array[int]] = [array("q") for _ in range(threads)]
    errors = [0] * threads
    first_error: list[str] = []
    deadline: list[float] = []

    def work(index: int) -> None:
        mine = latencies[index]
        barrier.wait()
        end = deadline[0]
        while time.perf_counter() < end:
            started = time.perf_counter_ns()
            try:
                verify()
            except Exception as exc:  # counted: the figure is how many calls failed
                errors[index] += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
                continue
            mine.append(time.perf_counter_ns() - started)

    workers = [
        threading.Thread(target=work, args=(i,), name=f"authfw-bench-burst-{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    deadline.append(time.perf_counter() + seconds)
    started = time.perf_counter()
    barrier.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    samples = sorted(sample for chunk in latencies for sample in chunk)
    failures = sum(errors)
    return {
        "threads": threads,
        "ops_per_sec": round(len(samples) / elapsed, 1) if elapsed else 0.0,
        "p50_us": round(percentile(samples, 0.50) / 1000.0, 3) if samples else None,
        "p99_us": round(percentile(samples, 0.99) / 1000.0, 3) if samples else None,
        "calls": len(samples) + failures,
        "errors": failures,
        "first_error": first_error[0] if first_error else None,
    }
