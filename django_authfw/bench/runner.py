"""Timing loops and percentiles.

Every operation is timed with :func:`time.perf_counter_ns`. An operation that takes 10 µs or
more is timed one call at a time, so p50 and p99 are true per-call latencies. A faster one
(in-process backends) is timed in batches of ``k`` calls, with ``k`` chosen so a batch lasts
about 10 µs: reading the clock costs about 50 ns, which would otherwise be a large share of a
sub-microsecond call. Its percentiles are then those of the per-call mean of each batch (shown
as ``batch k`` in the report): they hide jitter inside a batch, never the overall cost.

Operations per second is the number of calls divided by the wall time of the timed loop, so it
includes the loop's own overhead (one Python call per operation, see :func:`harness_overhead`).

The CPU time of the timing thread over the loop is recorded too (``cpu_us_per_call``): on a
machine shared with other work, wall time counts the moments another process had the core,
CPU time does not, so it is the steadier measure of what a call costs this process.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# A batch should last about this long, so one clock read is at most ~1% of it.
TARGET_BATCH_NS = 10_000


@dataclass
class Measurement:
    """What one timed loop gives: calls, wall time, rate and per-call latency samples.

    ``samples`` holds nanoseconds per call (the mean over a batch when ``batch`` > 1).
    Measurements of several processes are combined with :func:`merge`: their rates add up.
    """

    count: int
    elapsed_ns: int
    ops_per_sec: float
    batch: int
    samples: array[int] = field(repr=False)
    processes: int = 1
    #: CPU time of the timing thread(s) over the loop, in nanoseconds.
    cpu_ns: int = 0

    def percentile_us(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the per-call latency, in microseconds."""
        return percentile(sorted(self.samples), q) / 1000.0

    def as_dict(self) -> dict[str, Any]:
        """The figures the report shows and ``--json`` prints."""
        ordered = sorted(self.samples)
        return {
            "ops_per_sec": round(self.ops_per_sec, 1),
            "p50_us": round(percentile(ordered, 0.50) / 1000.0, 3),
            "p99_us": round(percentile(ordered, 0.99) / 1000.0, 3),
            "count": self.count,
            "seconds": round(self.elapsed_ns / 1e9, 3),
            "batch": self.batch,
            "processes": self.processes,
            "cpu_us_per_call": round(self.cpu_ns / self.count / 1000.0, 3) if self.count else None,
        }


def percentile(ordered: list[int] | array[int], q: float) -> float:
    """The ``q`` quantile of sorted samples (nearest rank); 0 when there are none."""
    if not ordered:
        return 0.0
    # The smallest sample with at least a fraction q of all samples at or below it.
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return float(ordered[rank])


def _calibrate(op: Callable[[], object], seconds: float) -> float:
    """Run ``op`` for ``seconds`` (warm-up: caches, connections, prepared statements).

    Returns the mean nanoseconds per call.
    """
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(seconds * 1e9)
    calls = 0
    now = start
    while now < deadline or calls == 0:
        op()
        calls += 1
        now = clock()
    return (now - start) / calls


def warmup_seconds(seconds: float) -> float:
    """How long to warm up before a timed loop of ``seconds``: a tenth, 0.01 to 0.5 s."""
    return min(0.5, max(0.01, seconds / 10))


def measure(op: Callable[[], object], seconds: float, *, batch: int | None = None) -> Measurement:
    """Warm up, then call ``op`` repeatedly for ``seconds`` and time it.

    ``batch`` forces the number of calls per clock read; by default it is derived from the
    warm-up so that a batch lasts about :data:`TARGET_BATCH_NS`.
    """
    mean_ns = _calibrate(op, warmup_seconds(seconds))
    if batch is None:
        batch = max(1, int(TARGET_BATCH_NS // max(mean_ns, 1.0)))
    clock = time.perf_counter_ns
    samples: array[int] = array("q")
    append = samples.append
    cpu_start = time.thread_time_ns()
    start = clock()
    deadline = start + int(seconds * 1e9)
    now = start
    if batch == 1:
        while now < deadline:
            op()
            then = clock()
            append(then - now)
            now = then
        count = len(samples)
    else:
        rounds = range(batch)
        while now < deadline:
            for _ in rounds:
                op()
            then = clock()
            append((then - now) // batch)
            now = then
        count = len(samples) * batch
    cpu = time.thread_time_ns() - cpu_start
    elapsed = now - start
    return Measurement(
        count=count,
        elapsed_ns=elapsed,
        ops_per_sec=count * 1e9 / elapsed if elapsed > 0 else 0.0,
        batch=batch,
        samples=samples,
        cpu_ns=cpu,
    )


def merge(parts: list[Measurement]) -> Measurement:
    """Combine the same operation measured at the same time in several processes.

    Rates add up (each process's calls over its own wall time); latency samples are pooled, so
    the percentiles are over every call of every process.
    """
    if not parts:
        raise ValueError("merge() needs at least one measurement")
    samples: array[int] = array("q")
    for part in parts:
        samples.extend(part.samples)
    return Measurement(
        count=sum(part.count for part in parts),
        elapsed_ns=max(part.elapsed_ns for part in parts),
        ops_per_sec=sum(part.ops_per_sec for part in parts),
        batch=max(part.batch for part in parts),
        samples=samples,
        processes=sum(part.processes for part in parts),
        cpu_ns=sum(part.cpu_ns for part in parts),
    )


def harness_overhead(seconds: float = 0.2) -> float:
    """Nanoseconds per call the timed loop itself costs (calling a function that does nothing)."""

    def noop() -> None:
        return None

    result = measure(noop, seconds)
    return 1e9 / result.ops_per_sec if result.ops_per_sec else 0.0


#: How many alternating slices a paired comparison takes (see :func:`measure_paired`).
PAIRED_ROUNDS = 10


def measure_paired(
    op: Callable[[], object],
    base: Callable[[], object],
    seconds: float,
    *,
    rounds: int = PAIRED_ROUNDS,
) -> dict[str, Any]:
    """Compare ``op`` with ``base`` in alternating slices: a ratio that load cannot skew.

    Timed one after the other, seconds apart, two loops see different machines when other
    work comes and goes (rates here moved by 2x between consecutive rows). So both are timed
    in ``rounds`` slices of ``seconds / rounds`` each, alternating (and swapping which goes
    first every round), and each round gives its own figures from two slices timed side by
    side. The median over rounds is reported, with the lowest and highest:

    * ``rate_ratio``: ``op``'s rate over ``base``'s (1 is as fast as the baseline);
    * ``cpu_ratio``: ``base``'s CPU time per call over ``op``'s (the same, by CPU time);
    * ``added_us`` / ``added_cpu_us``: what a call of ``op`` costs more than one of
      ``base``, by wall time and by CPU time (for a request beside the same request without
      authentication).
    """
    if rounds < 1:
        raise ValueError("measure_paired() needs at least one round")
    slice_seconds = seconds / rounds
    per_round: dict[str, list[float]] = {
        "rate_ratio": [],
        "cpu_ratio": [],
        "added_us": [],
        "added_cpu_us": [],
    }
    for number in range(rounds):
        if number % 2:
            b, a = measure(base, slice_seconds), measure(op, slice_seconds)
        else:
            a, b = measure(op, slice_seconds), measure(base, slice_seconds)
        if not (a.count and b.count and a.ops_per_sec and b.ops_per_sec):
            continue
        a_cpu, b_cpu = a.cpu_ns / a.count, b.cpu_ns / b.count
        per_round["rate_ratio"].append(a.ops_per_sec / b.ops_per_sec)
        if a_cpu > 0:
            per_round["cpu_ratio"].append(b_cpu / a_cpu)
        per_round["added_us"].append((1e9 / a.ops_per_sec - 1e9 / b.ops_per_sec) / 1000)
        per_round["added_cpu_us"].append((a_cpu - b_cpu) / 1000)
    result: dict[str, Any] = {"rounds": len(per_round["rate_ratio"])}
    for name, values in per_round.items():
        ordered = sorted(values)
        digits = 1 if name.endswith("_us") else 3
        result[name] = _spread(ordered, digits)
    return result


def _spread(ordered: list[float], digits: int) -> dict[str, float] | None:
    """Median, lowest and highest of sorted values (None for none)."""
    if not ordered:
        return None
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {
        "median": round(median, digits),
        "low": round(ordered[0], digits),
        "high": round(ordered[-1], digits),
    }
