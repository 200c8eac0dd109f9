"""The bench's output: a block per storage shaped like docs/performance.md's summaries, then
the detailed rows, or the same figures as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

from ..wording import counted
from .profiling import format_profile
from .requests import PEER_OPERATIONS, REQUEST_OPERATIONS
from .workload import OPERATIONS

LABELS = {
    "verify_valid": "verify valid token",
    "verify_unknown": "verify unknown token",
    "issue": "issue token",
    "refresh": "refresh (rotate)",
    "session_read": "session read",
    "session_write": "session write",
    "session_touch": "session touch",
    "kv_get": "kv get",
    "kv_set": "kv set",
    "request_noauth": "request, no auth",
    "request": "request",
    "request_drf_noauth": "request, DRF, no auth",
    "request_drf": "request, DRF",
    "request_drf_authtoken": "request, DRF authtoken",
    "baseline": "raw client baseline",
    "baseline_insert": "raw INSERT+COMMIT",
}
ROW_ORDER = [*OPERATIONS, *REQUEST_OPERATIONS, *PEER_OPERATIONS, "baseline", "baseline_insert"]


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU, cores, Python and the client library versions."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "django": _version("django"),
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "psycopg": _version("psycopg"),
        "django_authfw": _version("django-authfw"),
        # Other work on the machine skews every figure: the 1-minute load when the run began.
        "load_average": _load(),
    }


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def as_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def _ms(value_us: float) -> str:
    return f"{value_us / 1000:.3f} ms"


def _headline(result: dict[str, Any]) -> list[str]:
    ops = result.get("operations") or {}
    verify = ops.get("verify_valid")
    issue = ops.get("issue")
    lines = []
    if verify:
        line = f"  Token verification:  ~{_rate(verify['ops_per_sec'])} ops/sec"
        baseline = result.get("baseline")
        ratio = (result.get("ratios") or {}).get("verify_to_baseline")
        if baseline and ratio is not None:
            line += f"  ({ratio:.0%} of the raw client's {_rate(baseline['ops_per_sec'])} ops/sec)"
        lines.append(line)
    if issue:
        kv_get, kv_set = ops.get("kv_get"), ops.get("kv_set")
        line = f"  Storage operations:  ~{_rate(issue['ops_per_sec'])} ops/sec (token issue)"
        if kv_get and kv_set:
            line += (
                f"; kv get ~{_rate(kv_get['ops_per_sec'])}, kv set ~{_rate(kv_set['ops_per_sec'])}"
            )
        lines.append(line)
    if verify:
        lines.append(
            f"  Latency:             {_ms(verify['p50_us'])} p50, {_ms(verify['p99_us'])} p99 "
            "(verification)"
        )
    memory = result.get("memory") or {}
    if memory.get("bytes_per_token") is not None:
        line = f"  Memory usage:        ~{memory['bytes_per_token']:,.0f} bytes per token"
        if memory.get("memory_usage_bytes_per_token") is not None:
            line += f" (MEMORY USAGE of its keys: {memory['memory_usage_bytes_per_token']:,.0f})"
        if memory.get("table_bytes_per_row") is not None:
            line += f" (whole table over its rows: {memory['table_bytes_per_row']:,.0f})"
        lines.append(line)
        lines.append(f"                       {memory['method']}")
    return lines


def _rows(result: dict[str, Any]) -> list[str]:
    ops = dict(result.get("operations") or {})
    for name in ("baseline", "baseline_insert"):
        if result.get(name):
            ops[name] = result[name]
    header = ["operation", "ops/sec", "p50 µs", "p99 µs", "cpu µs", "batch"]
    rows = [header]
    for name in ROW_ORDER:
        figures = ops.get(name)
        if not figures:
            continue
        rows.append(
            [
                LABELS[name],
                _rate(figures["ops_per_sec"]),
                _us(figures["p50_us"]),
                _us(figures["p99_us"]),
                _us(figures.get("cpu_us_per_call")),
                str(figures["batch"]),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
        if number == 0:
            lines.append("  " + "  ".join("-" * width for width in widths))
    for name in ("baseline", "baseline_insert"):
        baseline = result.get(name)
        if baseline:
            lines.append(f"  {LABELS[name]}: {baseline['name']}")
    lines.extend(_request_lines(result))
    burst = result.get("burst")
    if burst:
        line = (
            f"  burst of {burst['threads']} threads released at once (verify valid token): "
            f"{_rate(burst['ops_per_sec'])} ops/sec, "
            f"p50 {_us(burst['p50_us'])} µs, p99 {_us(burst['p99_us'])} µs, "
            f"{burst['errors']:,} of {counted(burst['calls'], 'call')} failed"
        )
        lines.append(line)
        if burst["first_error"]:
            lines.append(f"    first error: {burst['first_error'][:200]}")
    growth = result.get("growth")
    if growth:
        for name in ("verify_valid", "verify_unknown"):
            figures = growth["operations"][name]
            shown = [
                f"{label} {growth[key]:.2f}x"
                for label, key in (
                    ("rate", f"{name}_cost_ratio"),
                    ("p50", f"{name}_p50_ratio"),
                    ("cpu", f"{name}_cpu_ratio"),
                )
                if growth.get(key)
            ]
            lines.append(
                f"  {LABELS[name]} at {counted(growth['tokens'], 'token')}: "
                f"{_rate(figures['ops_per_sec'])} ops/sec, p50 {_us(figures['p50_us'])} µs, "
                f"p99 {_us(figures['p99_us'])} µs"
                + (f"; cost vs fewer tokens: {', '.join(shown)}" if shown else "")
            )
    ratios = result.get("ratios") or {}
    if ratios.get("unknown_to_valid_cost") is not None:
        lines.append(
            f"  unknown-token verify costs {ratios['unknown_to_valid_cost']:.2f}x a valid one"
        )
    return lines


def _request_lines(result: dict[str, Any]) -> list[str]:
    ratios = result.get("ratios") or {}
    lines = []
    for label, key in (("middleware", "request_auth"), ("DRF class", "request_drf_auth")):
        wall, cpu = ratios.get(f"{key}_us"), ratios.get(f"{key}_cpu_us")
        if wall is not None:
            lines.append(
                f"  authentication adds {_us(wall)} µs per request ({_us(cpu)} µs of CPU) "
                f"through the {label}"
            )
    insert = ratios.get("issue_to_baseline_insert")
    if insert is not None:
        lines.append(f"  token issue runs at {insert:.0%} of the raw INSERT+COMMIT rate")
    peer = ratios.get("request_drf_to_authtoken")
    if peer is not None:
        lines.append(f"  a DRF request runs at {peer:.2f}x the rate of DRF's own authtoken")
    return lines + _paired_lines(result.get("paired"))


def _paired_lines(paired: dict[str, Any] | None) -> list[str]:
    """The comparisons timed in alternating slices: median [lowest-highest] over rounds."""
    if not paired:
        return []

    def spread(figures: dict[str, float] | None, unit: str) -> str:
        if not figures:
            return "-"
        if unit == "x":
            return f"{figures['median']:.2f}x [{figures['low']:.2f}-{figures['high']:.2f}]"
        return f"{_us(figures['median'])} µs [{_us(figures['low'])} to {_us(figures['high'])}]"

    rounds = max(figures["rounds"] for figures in paired.values())
    lines = [f"  paired, {rounds} alternating slices each (median [lowest-highest] of the rounds):"]
    for key, label in (
        ("verify_to_baseline", "verify valid token / raw client baseline"),
        ("issue_to_baseline_insert", "issue token / raw INSERT+COMMIT"),
        ("request_drf_to_authtoken", "request, DRF / request, DRF authtoken"),
    ):
        if key in paired:
            figures = paired[key]
            lines.append(
                f"    {label}: rate {spread(figures['rate_ratio'], 'x')}, "
                f"CPU {spread(figures['cpu_ratio'], 'x')}"
            )
    for key, label in (("request_auth", "middleware"), ("request_drf_auth", "DRF class")):
        if key in paired:
            figures = paired[key]
            lines.append(
                f"    authentication through the {label} adds "
                f"{spread(figures['added_us'], 'us')} per request, "
                f"{spread(figures['added_cpu_us'], 'us')} of CPU"
            )
    return lines


def _plumbing_line(plumbing: dict[str, Any] | None) -> list[str]:
    if not plumbing:
        return []
    return [
        f"per-request plumbing: parse_bearer {_us((plumbing['parse_bearer_ns'] or 0) / 1000)} µs "
        f"({plumbing['parse_to_drf']}x DRF's header split, "
        f"{_us((plumbing['drf_header_split_ns'] or 0) / 1000)} µs); the alias's framework "
        f"{_us((plumbing['get_framework_ns'] or 0) / 1000)} µs (building one: "
        f"{_us((plumbing['new_framework_ns'] or 0) / 1000)} µs)"
    ]


def as_table(report: dict[str, Any]) -> str:
    """The human-readable report."""
    info = report["machine"]
    options = report["options"]
    out = [
        f"authfw_bench: {counted(info['cores'], 'core')} ({info['cpu']}), {info['implementation']} "
        f"{info['python']}, Django {info['django']}, redis-py {info['redis_py']}, "
        f"psycopg {info['psycopg']}; load average {info.get('load_average')}",
        f"{counted(options['tokens'], 'stored token')}, {options['seconds']:g} s per operation, "
        f"{counted(options['processes'], 'process', 'processes')}; latency per call, or per "
        "call averaged over "
        "'batch' calls for sub-10 µs operations",
        *_plumbing_line(report.get("plumbing")),
    ]
    for alias, result in report["storages"].items():
        server = f" on {result['server']}" if result.get("server") else ""
        processes = result.get("processes", 1)
        out.append("")
        out.append(
            f"{alias}: {result['storage_class']}{server} "
            f"({counted(processes, 'process', 'processes')})"
        )
        out.extend(_headline(result))
        out.append("")
        out.extend(_rows(result))
        if result.get("profile"):
            out.extend(format_profile(result["profile"]))
        for note in result.get("notes") or []:
            out.append(f"  note: {note}")
        cleanup = result.get("cleanup") or {}
        out.append(
            f"  cleaned up: {counted(cleanup.get('tokens', 0), 'token')}, "
            f"{counted(cleanup.get('sessions', 0), 'session')}, "
            f"{counted(cleanup.get('kv', 0), 'key-value entry', 'key-value entries')}"
            + (
                f", {counted(cleanup['drf_tokens'], 'DRF token')}"
                if "drf_tokens" in cleanup
                else ""
            )
        )
    return "\n".join(out)
