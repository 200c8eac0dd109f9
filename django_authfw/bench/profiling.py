"""``--profile``: where the time of one token verification goes, per storage.

The verification is run under :mod:`cProfile` for ``--seconds`` and its own time (``tottime``)
is summed per layer: the token checks and SHA-256, the framework, the storage, the record
decoding, the client library (redis-py, psycopg, Django's database layer) and the wait for
the server (socket and poll calls). A deterministic profiler adds a fixed cost to every Python
call, so layers made of many small Python calls look bigger than they are; the shares are a
map of the path, the timings without ``--profile`` are the figures.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any

# (layer, substrings of the file name or function name that put a function in it), first
# match wins. Built-in functions have the file name "~".
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Sending wakes the server, and on a machine with few cores the kernel often runs it at once
    # on the sender's core: the profiler then charges the server's work to the send call.
    (
        "send to and wait for the server (socket I/O, poll)",
        (
            "sendall",
            "recv_into",
            "'recv",
            "select",
            "poll",
            "connection.py:'wait'",
            "wait_c",
            "'_execute_send'",
            "'_send_query_prepared'",
        ),
    ),
    ("token format check + SHA-256", ("django_authfw/tokens.py", "_hashlib", "issuperset")),
    ("framework checks", ("django_authfw/framework.py", "compare_digest")),
    (
        "record construction (the immutable AuthToken, its deadlines)",
        ("dataclasses.py", "<string>:'__init__'", "django_authfw/records.py"),
    ),
    (
        "record decoding",
        ("storage/codec.py", "storage/database/rows.py", "json/", "'loads'", "fromisoformat"),
    ),
    ("storage (front, engine, queries)", ("django_authfw/storage/",)),
    ("database client (Django db layer, psycopg, sqlite3)", ("django/db/", "psycopg", "sqlite3")),
    ("redis client (redis-py, hiredis)", ("redis/", "hiredis")),
)
OTHER = "other (harness, locks, datetime, ...)"


def _layer(filename: str, function: str) -> str:
    where = f"{filename}:{function!r}"
    for layer, markers in LAYERS:
        if any(marker in where for marker in markers):
            return layer
    return OTHER


def profile_operation(op: Callable[[], object], seconds: float) -> dict[str, Any]:
    """Run ``op`` under cProfile for ``seconds``; the time per layer and the top functions."""
    for _ in range(100):  # warm-up: connections, prepared statements, caches
        op()
    profiler = cProfile.Profile()
    calls = 0
    deadline = time.perf_counter() + seconds
    profiler.enable()
    while time.perf_counter() < deadline:
        op()
        calls += 1
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1e-12
    layers: dict[str, float] = {}
    functions: list[tuple[float, str]] = []
    for (filename, line, function), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        layer = _layer(filename, function)
        layers[layer] = layers.get(layer, 0.0) + tottime
        short = filename.split("site-packages/")[-1].split("django_authfw/")[-1]
        functions.append((tottime, f"{short}:{line}({function})" if line else function))
    functions.sort(reverse=True)
    return {
        "calls": calls,
        "us_per_call_profiled": round(total / calls * 1e6, 2) if calls else None,
        "layers": {
            name: {"share": round(value / total, 3), "us_per_call": round(value / calls * 1e6, 2)}
            for name, value in sorted(layers.items(), key=lambda item: -item[1])
        },
        "top_functions": [
            {"function": name, "share": round(value / total, 3)} for value, name in functions[:12]
        ],
    }


def format_profile(profile: dict[str, Any]) -> list[str]:
    """The profile as lines of the table report."""
    lines = [
        f"  where verify time goes (cProfile, {profile['calls']:,} calls, "
        f"{profile['us_per_call_profiled']} µs per call under the profiler):"
    ]
    for name, figures in profile["layers"].items():
        lines.append(f"    {figures['share']:6.1%}  {figures['us_per_call']:8.2f} µs  {name}")
    lines.append("    top functions by own time:")
    for entry in profile["top_functions"][:8]:
        lines.append(f"    {entry['share']:6.1%}  {entry['function']}")
    return lines
