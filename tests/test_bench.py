"""``manage.py authfw_bench`` runs on every backend and leaves nothing behind.

Tiny numbers (a few tokens, hundredths of a second per operation): these tests prove the
instrument works, its output has the promised shape and its cleanup is complete. They never
assert a figure; docs/performance.md has the measured ones.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from django_authfw.bench.burst import run_burst
from django_authfw.bench.requests import PEER_OPERATIONS, REQUEST_OPERATIONS
from django_authfw.bench.runner import Measurement, measure, measure_paired, merge, percentile
from django_authfw.bench.suite import PAIRS, Options, bench_storage
from django_authfw.bench.workload import OPERATIONS
from django_authfw.storage import get_storage

from .backends import REDIS_TEST_URL, RUN_ID

ALIAS = "bench"
TINY = ["--seconds", "0.02", "--tokens", "30"]


def _storage_config(backend: str, settings: Any) -> dict[str, Any]:
    """An ``AUTHFW["STORAGES"]`` entry for ``backend``, with the caches it needs."""
    if backend == "database":
        return {"BACKEND": "django_authfw.storage.DatabaseStorage"}
    if backend == "memory":
        return {"BACKEND": "django_authfw.storage.InMemoryStorage"}
    suffix = uuid.uuid4().hex[:8]
    # A prefix of its own: the run never sees other data on the server.
    prefix = f"authfw-test:{RUN_ID}:bench-{suffix}:"
    if backend in ("redis-cluster", "redis-sentinel"):
        from .redis_servers import ensure_cluster, ensure_sentinel

        options: dict[str, Any] = {"key_prefix": prefix, "timeout": 2}
        if backend == "redis-cluster":
            options.update(cluster_mode=True, cluster_urls=ensure_cluster().urls)
        else:
            group = ensure_sentinel()
            options.update(
                url="redis://127.0.0.1/0",
                master_name=group.master_name,
                sentinels=group.sentinel_urls,
                sentinel_password=group.password,
            )
        return {"BACKEND": "django_authfw.storage.RedisStorage", "OPTIONS": options}
    cache = f"authfw-test-bench-{suffix}"
    if backend == "locmem":
        location = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": cache}
    else:
        location = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_TEST_URL}
    settings.CACHES = {**settings.CACHES, cache: location}
    return {
        "BACKEND": "django_authfw.storage.CacheStorage",
        "OPTIONS": {"cache": cache, "key_prefix": prefix},
    }


@pytest.fixture
def bench_alias(backend: str, settings: Any, transactional_db: None) -> Iterator[str]:
    """A storage alias ``bench`` of the backend under test, flushed afterwards.

    Transactional: the bench's worker processes and its psycopg baseline use connections of
    their own, which must see the rows the test's connection wrote.
    """
    settings.AUTHFW = {"STORAGES": {ALIAS: _storage_config(backend, settings)}}
    yield ALIAS
    storage = get_storage(ALIAS)
    storage.flush()


def _counts(alias: str) -> tuple[int, int, int]:
    stats = get_storage(alias).statistics()
    return stats["total_tokens"], stats["total_sessions"], stats["kv_entries"]


def _run(*args: str) -> dict[str, Any]:
    out = io.StringIO()
    call_command("authfw_bench", *args, "--json", stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def _has_baseline(backend: str) -> bool:
    # The Redis baseline is a single server's GET: Cluster and Sentinel clients have none;
    # in-process stores have a dict + SHA-256; SQLite has none.
    return backend in ("redis", "memory", "locmem") or _on_postgresql(backend)


def _on_postgresql(backend: str) -> bool:
    return backend == "database" and connection.vendor == "postgresql"


def test_json_report_covers_every_operation_and_cleans_up(backend: str, bench_alias: str) -> None:
    users_before = get_user_model().objects.count()
    before = _counts(bench_alias)

    report = _run("--storage", bench_alias, *TINY)

    assert set(report) == {"machine", "options", "plumbing", "storages"}
    plumbing = report["plumbing"]
    assert plumbing["parse_bearer_ns"] > 0
    assert plumbing["drf_header_split_ns"] > 0
    assert plumbing["parse_to_drf"] is not None
    assert report["options"] == {
        "seconds": 0.02,
        "tokens": 30,
        "processes": 1,
        "grow_to": None,
        "burst": None,
    }
    assert {"cpu", "cores", "python", "django", "redis_py", "psycopg"} <= set(report["machine"])
    result = report["storages"][bench_alias]
    assert result["stored_tokens"] == 30
    assert result["processes"] == 1
    # The request rows come after the storage operations, each beside its request without a
    # token (the DRF pair with DRF installed, which the test extras include).
    assert list(result["operations"]) == [*OPERATIONS, *REQUEST_OPERATIONS]
    for figures in result["operations"].values():
        assert set(figures) == {
            "ops_per_sec",
            "p50_us",
            "p99_us",
            "count",
            "seconds",
            "batch",
            "processes",
            "cpu_us_per_call",
        }
        assert figures["count"] > 0
        assert figures["p50_us"] <= figures["p99_us"]

    memory = result["memory"]
    assert memory["tokens"] == 30
    assert isinstance(memory["bytes_per_token"], float)
    assert memory["method"]
    if backend.startswith("redis"):
        assert "memory_usage_bytes_per_token" in memory

    if _has_baseline(backend):
        assert result["baseline"]["count"] > 0
        assert result["baseline"]["name"]
        assert result["ratios"]["verify_to_baseline"] is not None
    else:
        assert result["baseline"] is None
        assert result["ratios"]["verify_to_baseline"] is None
    assert result["ratios"]["unknown_to_valid_cost"] is not None
    for key in ("request_auth_us", "request_auth_cpu_us", "request_drf_auth_us"):
        assert result["ratios"][key] is not None, key
    if _on_postgresql(backend):
        assert result["baseline_insert"]["count"] > 0
        assert result["ratios"]["issue_to_baseline_insert"] is not None
    else:
        assert result["baseline_insert"] is None
    # Each ratio again from alternating slices, for every comparison this backend has.
    expected_pairs = {"request_auth", "request_drf_auth"}
    if _has_baseline(backend):
        expected_pairs.add("verify_to_baseline")
    if _on_postgresql(backend):
        expected_pairs.add("issue_to_baseline_insert")
    assert set(result["paired"]) == expected_pairs
    for figures in result["paired"].values():
        assert figures["rounds"] > 0
        for spread in (figures["rate_ratio"], figures["added_cpu_us"]):
            assert spread["low"] <= spread["median"] <= spread["high"]

    # Everything written is gone: the population, every issued and rotated token (and the
    # one the revocation check used), the sessions, the key-value entries, the bench's user.
    assert result["cleanup"]["tokens"] >= 30 + 1
    assert result["cleanup"]["sessions"] > 0
    assert result["cleanup"]["kv"] > 0
    assert _counts(bench_alias) == before
    assert get_user_model().objects.count() == users_before


def test_processes_add_up_workers(backend: str, bench_alias: str) -> None:
    before = _counts(bench_alias)

    report = _run("--storage", bench_alias, *TINY, "--processes", "2")

    result = report["storages"][bench_alias]
    if backend in ("memory", "locmem") or (backend == "database" and connection.vendor == "sqlite"):
        # Another process cannot see this process's store: timed here, and said so.
        assert result["processes"] == 1
        assert any("in-process" in note for note in result["notes"])
    else:
        assert result["processes"] == 2
        for figures in result["operations"].values():
            assert figures["processes"] == 2
            assert figures["count"] > 0
        if _has_baseline(backend):
            assert result["baseline"]["processes"] == 2
        # Slices alternate within one process only.
        assert result["paired"] is None
    assert _counts(bench_alias) == before


def test_grow_to_times_verification_again_on_the_larger_store(
    backend: str, bench_alias: str
) -> None:
    before = _counts(bench_alias)

    report = _run("--storage", bench_alias, *TINY, "--grow-to", "60")

    growth = report["storages"][bench_alias]["growth"]
    assert growth["tokens"] == 60
    assert set(growth["operations"]) == {"verify_valid", "verify_unknown"}
    assert growth["operations"]["verify_valid"]["count"] > 0
    assert growth["verify_valid_cost_ratio"] is not None
    assert growth["verify_valid_p50_ratio"] is not None
    assert report["storages"][bench_alias]["cleanup"]["tokens"] >= 60
    assert _counts(bench_alias) == before


def test_profile_maps_the_verify_path(backend: str, bench_alias: str) -> None:
    report = _run("--storage", bench_alias, *TINY, "--profile")

    profile = report["storages"][bench_alias]["profile"]
    assert profile["calls"] > 0
    assert "token format check + SHA-256" in profile["layers"]
    assert sum(layer["share"] for layer in profile["layers"].values()) == pytest.approx(1, abs=0.02)
    assert profile["top_functions"]


def test_burst_releases_threads_together_and_counts_failures(
    backend: str, bench_alias: str
) -> None:
    report = _run("--storage", bench_alias, *TINY, "--burst", "8")

    burst = report["storages"][bench_alias]["burst"]
    assert burst["threads"] == 8
    assert burst["errors"] == 0, burst["first_error"]
    assert burst["calls"] > 0
    assert burst["ops_per_sec"] > 0
    assert burst["p99_us"] >= burst["p50_us"] > 0


def test_burst_counts_the_calls_that_fail() -> None:
    calls = itertools.count()
    lock = threading.Lock()

    def every_third_fails() -> None:
        with lock:
            number = next(calls)
        if number % 3 == 0:
            raise ConnectionError("Too many connections")

    burst = run_burst(every_third_fails, threads=4, seconds=0.05)

    assert burst["calls"] == next(calls)  # every call counted once
    assert burst["errors"] == pytest.approx(burst["calls"] / 3, abs=1)
    assert burst["first_error"] == "ConnectionError: Too many connections"


@pytest.mark.django_db
def test_grow_to_must_exceed_tokens() -> None:
    with pytest.raises(CommandError, match="--grow-to"):
        call_command("authfw_bench", *TINY, "--grow-to", "30", stdout=io.StringIO())


def test_table_is_shaped_like_the_guide(backend: str, bench_alias: str) -> None:
    out = io.StringIO()
    call_command("authfw_bench", "--storage", bench_alias, *TINY, stdout=out)
    text = out.getvalue()
    for heading in ("Token verification:", "Storage operations:", "Latency:", "Memory usage:"):
        assert heading in text
    assert "verify unknown token" in text
    assert "cleaned up:" in text
    assert ("raw client baseline" in text) is _has_baseline(backend)
    assert ("raw INSERT+COMMIT" in text) is _on_postgresql(backend)
    for row in ("request, no auth", "request, DRF, no auth", "authentication adds"):
        assert row in text
    assert "alternating slices" in text
    assert "authentication through the middleware adds" in text
    assert ("verify valid token / raw client baseline" in text) is _has_baseline(backend)
    assert "per-request plumbing: parse_bearer" in text


def test_interrupted_run_still_cleans_up(backend: str, bench_alias: str) -> None:
    """Ctrl-C in the middle of the timing (after tokens were issued) leaves nothing behind."""
    before = _counts(bench_alias)
    storage = get_storage(bench_alias)

    def log(message: str) -> None:
        if message.endswith("timing session_read"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bench_storage(bench_alias, storage, Options(seconds=0.02, tokens=20, processes=1), log=log)

    assert _counts(bench_alias) == before


@pytest.mark.django_db
def test_unknown_alias_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="Unknown storage alias 'nope'"):
        call_command("authfw_bench", "--storage", "nope", *TINY, stdout=io.StringIO())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--seconds", "0"),
        ("--seconds", "nan"),
        ("--tokens", "0"),
        ("--processes", "-1"),
        ("--burst", "0"),
    ],
)
def test_bad_numbers_are_refused(option: str, value: str) -> None:
    with pytest.raises(CommandError, match=option.lstrip("-")):
        call_command("authfw_bench", option, value, stdout=io.StringIO())


# The timing harness -----------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    ordered = list(range(1, 101))
    assert percentile(ordered, 0.50) == 50
    assert percentile(ordered, 0.99) == 99
    assert percentile(ordered, 1.0) == 100
    assert percentile([7], 0.99) == 7
    assert percentile([], 0.5) == 0


def test_fast_operations_are_timed_in_batches_slow_ones_singly() -> None:
    fast = measure(lambda: None, 0.02)
    assert fast.batch > 1
    assert fast.count == len(fast.samples) * fast.batch

    def slow() -> None:
        total = 0
        for number in range(20_000):
            total += number

    timed = measure(slow, 0.02)
    assert timed.batch == 1
    assert timed.count == len(timed.samples)


def test_merged_rates_add_up_and_samples_pool() -> None:
    from array import array

    one = Measurement(10, 1_000_000, 10_000.0, 1, array("q", [100] * 10))
    two = Measurement(20, 1_000_000, 20_000.0, 1, array("q", [300] * 20))
    merged = merge([one, two])
    assert merged.ops_per_sec == 30_000.0
    assert merged.count == 30
    assert merged.processes == 2
    assert len(merged.samples) == 30
    assert merged.as_dict()["p99_us"] == 0.3


def test_paired_comparison_alternates_slices_and_reports_the_spread() -> None:
    order: list[str] = []

    def op() -> None:
        if not order or order[-1] != "op":
            order.append("op")

    def base() -> None:
        if not order or order[-1] != "base":
            order.append("base")

    paired = measure_paired(op, base, 0.04, rounds=4)
    assert paired["rounds"] == 4
    # Each slice runs one side only, and each round swaps which side goes first, so the
    # second slice of a round and the first of the next run the same side back to back:
    # op | base, base | op, op | base, base | op.
    assert order == ["op", "base", "op", "base", "op"]
    for name in ("rate_ratio", "cpu_ratio", "added_us", "added_cpu_us"):
        spread = paired[name]
        assert spread["low"] <= spread["median"] <= spread["high"], name
    with pytest.raises(ValueError, match="at least one round"):
        measure_paired(op, base, 0.01, rounds=0)


def test_every_pair_names_rows_the_bench_times() -> None:
    timed = {*OPERATIONS, *REQUEST_OPERATIONS, *PEER_OPERATIONS, "baseline", "baseline_insert"}
    for name, base in PAIRS.values():
        assert {name, base} <= timed


def test_the_drf_authtoken_peer_row_where_authtoken_is_installed(tmp_path: Any) -> None:
    """With ``rest_framework.authtoken`` installed, a database storage gets the peer row (the
    same view through DRF's own TokenAuthentication) and its comparison; the run's DRF token
    goes with the cleanup. Other storages get no peer row.

    In a project of its own (a subprocess on a SQLite file): DRF decides whether its token
    model is concrete when the module is first imported, so the app cannot be added to this
    test process's settings afterwards.
    """
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    database = tmp_path / "bench.sqlite3"
    (tmp_path / "authtoken_settings.py").write_text(
        "from testproject.settings import *  # noqa: F403\n"
        "from testproject.settings import INSTALLED_APPS, sqlite_database\n"
        "DEBUG = False\n"
        f"DATABASES = {{'default': sqlite_database({str(database)!r})}}\n"
        "INSTALLED_APPS = [*INSTALLED_APPS, 'rest_framework', 'rest_framework.authtoken']\n"
        "AUTHFW = {'STORAGES': {\n"
        "    'bench': {'BACKEND': 'django_authfw.storage.DatabaseStorage'},\n"
        "    'bench-memory': {'BACKEND': 'django_authfw.storage.InMemoryStorage'},\n"
        "}}\n"
    )
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, str(root / "manage.py")]
    options = ["--pythonpath", str(tmp_path), "--settings", "authtoken_settings"]
    environment = {
        key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [*command, *args, *options],
            capture_output=True,
            text=True,
            cwd=root,
            env=environment,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run("migrate", "-v", "0")
    report = json.loads(
        run("authfw_bench", "--storage", "bench", "--storage", "bench-memory", *TINY, "--json")
    )

    result = report["storages"]["bench"]
    assert list(result["operations"]) == [
        *OPERATIONS,
        *REQUEST_OPERATIONS,
        "request_drf_authtoken",
    ]
    assert result["operations"]["request_drf_authtoken"]["count"] > 0
    assert result["ratios"]["request_drf_to_authtoken"] is not None
    assert result["paired"]["request_drf_to_authtoken"]["rounds"] > 0
    assert result["cleanup"]["drf_tokens"] == 1
    other = report["storages"]["bench-memory"]
    assert "request_drf_authtoken" not in other["operations"]
    assert "drf_tokens" not in other["cleanup"]
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM authtoken_token").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM auth_user").fetchone() == (0,)
