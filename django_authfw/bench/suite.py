"""One bench run over one storage alias: fill, check, time, clean up.

:func:`bench_storage` is what ``manage.py authfw_bench`` calls for each ``--storage``; it
returns a plain dict (the command prints it as a table or as JSON).
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connections, router, transaction

from ..conf import conf
from ..exceptions import StorageError
from ..framework import AuthFramework
from ..storage import AuthStorage, DatabaseStorage, get_storage
from ..tokens import digest
from ..wording import counted
from .baselines import (
    BASELINE_NAMES,
    INSERT_BASELINE_NAME,
    baseline_for,
    insert_baseline_for,
    token_record_size,
)
from .burst import run_burst
from .memory import TRACED_SAMPLE, MemoryFigure, MemoryMeter, redis_key_usage
from .probe import Backend, probe, server_version
from .profiling import profile_operation
from .requests import authtoken_installed, create_authtoken
from .runner import Measurement, measure, measure_paired
from .workers import Plan, run_workers
from .workload import OPERATIONS, Workload, mint

# Digests the PostgreSQL baseline cycles through (a sample of the stored tokens).
BASELINE_DIGESTS = 10_000


@dataclass(frozen=True)
class Options:
    """The command's options."""

    seconds: float
    tokens: int
    processes: int
    #: After the main timings, store more tokens up to this many and time verification again.
    grow_to: int | None = None
    #: Also run the valid-token verification under cProfile (see :mod:`.profiling`).
    profile: bool = False
    #: Also time valid-token verification by this many threads released at once (a burst).
    burst: int | None = None


def new_run_id() -> str:
    """A short random id naming everything one run writes."""
    return secrets.token_hex(6)


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so a second Ctrl-C cannot cut a cleanup short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class BenchUser:
    """The user every record of a run belongs to.

    A real user row without a usable password (nobody can log in as it), deleted at the end:
    in the storage's database for a database storage (which keeps a foreign key to it), else
    in the user model's database, so that the request rows load a real user as a request
    does. Where no user can be written, a made-up id that no real user has is used and the
    request rows are left out.
    """

    def __init__(self, backend: Backend, storage: AuthStorage, run_id: str) -> None:
        self.username = f"authfw-bench-{run_id}"
        self.db: str | None = None
        self.pk: Any = None
        model = get_user_model()
        if isinstance(storage, DatabaseStorage):
            from ..models import Token

            db = storage.using or router.db_for_write(Token)
        else:
            db = router.db_for_write(model)
        user = model(**{model.USERNAME_FIELD: self.username})
        user.set_unusable_password()
        try:
            with transaction.atomic(using=db):
                user.save(using=db)
        except DatabaseError:
            if isinstance(storage, DatabaseStorage):
                raise
            self.user_id = self.username
            return
        self.db = db
        self.pk = user.pk
        self.user_id = str(user.pk)

    def delete(self) -> None:
        """Delete the user row (its tokens and sessions must already be gone).

        A plain DELETE on purpose: deleting through the ORM would fire the receiver that ends
        the user's access in every configured storage and audits it, writing a record the
        bench would leave behind.
        """
        if self.pk is None or self.db is None:
            return
        model = get_user_model()
        connection = connections[self.db]
        quote = connection.ops.quote_name
        pk_column = model._meta.pk.column
        assert pk_column is not None
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {quote(model._meta.db_table)} "  # noqa: S608 (quoted names)
                f"WHERE {quote(pk_column)} = %s",
                [self.pk],
            )
        self.pk = None


def _fill(
    workload: Workload, backend: Backend, count: int, progress: Callable[[int], None] | None
) -> tuple[MemoryFigure, float]:
    """Store ``count`` tokens, measuring memory around the fill (or its traced sample)."""
    meter = MemoryMeter(backend)
    kept = [workload.population.access]
    traced = min(count, TRACED_SAMPLE) if meter.traced else count
    started = time.perf_counter()
    meter.start(kept)
    figure: MemoryFigure | None = None
    for stored in workload.fill_tokens(count, progress=progress):
        if figure is None and stored >= traced:
            figure = meter.stop(stored, kept)
    if figure is None:  # count == 0
        figure = meter.stop(0, kept)
    return figure, time.perf_counter() - started


def _process_local(backend: Backend) -> bool:
    """Whether the store lives in this process's memory, out of reach of worker processes."""
    if backend.kind == "in_process":
        return True
    if backend.kind == "database" and backend.db_alias is not None:
        connection = connections[backend.db_alias]
        return bool(getattr(connection, "is_in_memory_db", lambda: False)())
    return False


def bench_storage(
    alias: str,
    storage: AuthStorage,
    options: Options,
    *,
    log: Callable[[str], None],
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Fill ``storage`` with ``options.tokens`` tokens, time every operation, clean up."""
    backend = probe(storage)
    run_id = new_run_id()
    result: dict[str, Any] = {
        "alias": alias,
        "storage_class": backend.storage_class,
        "kind": backend.kind,
        "server": server_version(backend),
        "stored_tokens": options.tokens,
        "seconds_per_operation": options.seconds,
        "processes": options.processes,
        "notes": [],
    }
    if backend.kind == "database" and settings.DEBUG:
        result["notes"].append(
            "DEBUG=True: Django records every SQL query, which slows every database operation; "
            "run with DEBUG=False for production figures"
        )
    processes = options.processes
    if processes > 1 and _process_local(backend):
        result["notes"].append(
            "in-process storage (or in-memory database): another process cannot see this "
            "process's store, so it was timed in one process"
        )
        processes = 1
    result["processes"] = processes

    with sigint_deferred():
        user = BenchUser(backend, storage, run_id)
    framework = AuthFramework(storage=storage)
    workload = Workload(
        storage,
        run_id=run_id,
        user_id=user.user_id,
        verify=framework.verify_token,
        alias=alias if _requests_apply(alias, storage, user) else None,
    )
    if workload.alias is None:
        result["notes"].append(
            "no request rows: the bench could not write a user of its own, or the alias's "
            "storage is not the one the middleware uses (get_storage)"
        )
    elif conf.USER_SNAPSHOT:
        result["notes"].append(
            "AUTHFW['USER_SNAPSHOT'] is on: request rows answer request.user from the token "
            "where the storage does not read the user with it"
        )
    try:
        if (
            workload.alias is not None
            and user.db is not None
            and isinstance(storage, DatabaseStorage)
            and authtoken_installed()
        ):
            # The peer row (DRF's own token authentication); its token goes with the cleanup.
            workload.authtoken_db = user.db
            workload.authtoken_key = create_authtoken(user.pk, user.db)
        log(f"{alias}: storing {counted(options.tokens, 'token')}")

        def fill_progress(done: int) -> None:
            if progress is not None:
                progress(f"{alias}: storing", done, options.tokens)

        memory, fill_seconds = _fill(workload, backend, options.tokens, fill_progress)
        result["fill_seconds"] = round(fill_seconds, 2)
        workload.fill_extras(processes)
        workload.check_semantics()
        usage = redis_key_usage(backend, storage, workload.population.access)
        if usage:
            memory.detail = usage
        result["memory"] = memory.as_dict()

        baseline = _baseline_plan(backend, workload, run_id, user.pk)
        names = [*OPERATIONS, *workload.request_names()]
        paired: dict[str, Any] = {}
        measured = _time(
            alias,
            workload,
            backend,
            options,
            processes,
            names,
            baseline,
            log,
            paired=paired if processes == 1 else None,
        )
        result["operations"] = {
            name: measured[name].as_dict() for name in names if name in measured
        }
        result["baseline"] = None
        if "baseline" in measured:
            result["baseline"] = {
                "name": BASELINE_NAMES[backend.kind],
                **measured["baseline"].as_dict(),
            }
        result["baseline_insert"] = None
        if "baseline_insert" in measured:
            result["baseline_insert"] = {
                "name": INSERT_BASELINE_NAME,
                **measured["baseline_insert"].as_dict(),
            }
        result["ratios"] = _ratios(measured)
        # Each ratio again from alternating slices (one process only): see measure_paired.
        result["paired"] = paired or None
        if options.profile:
            log(f"{alias}: profiling verify_valid")
            result["profile"] = profile_operation(
                workload.operations()["verify_valid"], options.seconds
            )
        if options.burst:
            log(f"{alias}: timing verify_valid in a burst of {options.burst} threads")
            result["burst"] = run_burst(
                workload.operations()["verify_valid"], options.burst, options.seconds
            )
        if options.grow_to is not None and options.grow_to > options.tokens:
            result["growth"] = _grow(
                alias, workload, backend, options, processes, measured, log, progress
            )
    finally:
        with sigint_deferred():
            log(f"{alias}: cleaning up")
            result["cleanup"] = workload.cleanup()
            user.delete()
    return result


def _baseline_plan(
    backend: Backend, workload: Workload, run_id: str, user_pk: Any
) -> dict[str, Any] | None:
    """What the baselines need (the same in every worker process), or None for none."""
    raws = workload.population.access[:BASELINE_DIGESTS]
    plan: dict[str, Any] = {
        "digests": [digest(raw) for raw in raws],
        "value_size": token_record_size(mint(workload.user_id)[2]),
        "raws": raws if backend.kind == "in_process" else None,
        "user_pk": user_pk,
    }
    plan["names"] = list(baseline_contexts(backend, plan, run_id))
    return plan if plan["names"] else None


def baseline_contexts(backend: Backend, plan: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The baseline loops of ``plan`` for ``backend``, by row name (context managers)."""
    found: dict[str, Any] = {}
    verify = baseline_for(
        backend,
        run_id=run_id,
        digests=plan["digests"],
        value_size=plan["value_size"],
        raws=plan.get("raws"),
    )
    if verify is not None:
        found["baseline"] = verify
    insert = insert_baseline_for(backend, user_pk=plan.get("user_pk"))
    if insert is not None:
        found["baseline_insert"] = insert
    return found


def _requests_apply(alias: str, storage: AuthStorage, user: BenchUser) -> bool:
    # The middleware finds its storage by alias: the rows time this storage only if the alias
    # names it (a storage built apart, as some tests do, is another store in memory).
    return user.pk is not None and _registered(alias) is storage


def _registered(alias: str) -> AuthStorage | None:
    try:
        return get_storage(alias)
    except StorageError:
        return None


def _time(
    alias: str,
    workload: Workload,
    backend: Backend,
    options: Options,
    processes: int,
    names: list[str],
    baseline: dict[str, Any] | None,
    log: Callable[[str], None],
    *,
    paired: dict[str, Any] | None = None,
) -> dict[str, Measurement]:
    """Time the operations ``names`` (and the baseline) here or in worker processes.

    With ``paired`` (one process), each operation that has a comparison in :data:`PAIRS` is
    also timed against it in alternating slices, into ``paired`` by ratio name.
    """
    if processes > 1:
        log(f"{alias}: timing {', '.join(names)} in {counted(processes, 'process', 'processes')}")
        plan = Plan(
            alias=alias,
            run_id=workload.run_id,
            user_id=workload.user_id,
            seconds=options.seconds,
            operations=names,
            population=workload.population,
            baseline=baseline,
            requests=workload.alias is not None,
            authtoken_key=workload.authtoken_key,
        )
        return run_workers(plan, processes)
    measured: dict[str, Measurement] = {}
    operations = workload.operations()
    for name in names:
        log(f"{alias}: timing {name}")
        measured[name] = measure(operations[name], options.seconds)

    def pair(key: str, name: str, base: Callable[[], object]) -> None:
        if paired is not None and name in names:
            log(f"{alias}: timing {name} against {PAIRS[key][1]} in alternating slices")
            paired[key] = measure_paired(operations[name], base, options.seconds)

    for key, (name, base_name) in PAIRS.items():
        if base_name in names:
            pair(key, name, operations[base_name])
    if baseline is not None:
        for name, context in baseline_contexts(backend, baseline, workload.run_id).items():
            log(f"{alias}: timing the raw {name}")
            with context as op:
                measured[name] = measure(op, options.seconds)
                for key, (compared, base_name) in PAIRS.items():
                    if base_name == name:
                        pair(key, compared, op)
    return measured


#: The comparisons timed in alternating slices: ratio name -> (operation, what it is
#: compared with: a baseline loop or the same request without authentication).
PAIRS: dict[str, tuple[str, str]] = {
    "verify_to_baseline": ("verify_valid", "baseline"),
    "issue_to_baseline_insert": ("issue", "baseline_insert"),
    "request_auth": ("request", "request_noauth"),
    "request_drf_auth": ("request_drf", "request_drf_noauth"),
    # The peer: this app's DRF request over the same view through DRF's TokenAuthentication.
    "request_drf_to_authtoken": ("request_drf", "request_drf_authtoken"),
}


GROWTH_OPERATIONS = ["verify_valid", "verify_unknown"]


def _grow(
    alias: str,
    workload: Workload,
    backend: Backend,
    options: Options,
    processes: int,
    before: dict[str, Measurement],
    log: Callable[[str], None],
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, Any]:
    """Store tokens up to ``options.grow_to`` and time verification again.

    Verification cycles through every stored token, so the larger store is also the larger
    working set: this shows whether the cost stays flat as the store grows.
    """
    assert options.grow_to is not None
    more = options.grow_to - options.tokens
    log(f"{alias}: storing {counted(more, 'more token')}")

    def fill_progress(done: int) -> None:
        if progress is not None:
            progress(f"{alias}: growing", options.tokens + done, options.grow_to or 0)

    started = time.perf_counter()
    for _ in workload.fill_tokens(more, progress=fill_progress):
        pass
    fill_seconds = time.perf_counter() - started
    after = _time(alias, workload, backend, options, processes, GROWTH_OPERATIONS, None, log)
    growth: dict[str, Any] = {
        "tokens": options.grow_to,
        "fill_seconds": round(fill_seconds, 2),
        "operations": {name: after[name].as_dict() for name in GROWTH_OPERATIONS},
    }
    for name in GROWTH_OPERATIONS:
        small, large = before[name], after[name]
        # Cost is 1/rate: the cost at grow_to tokens over the cost at --tokens; also in CPU
        # time per call and in median latency, which other work on the machine skews less.
        growth[f"{name}_cost_ratio"] = _quotient(small.ops_per_sec, large.ops_per_sec)
        growth[f"{name}_cpu_ratio"] = _quotient(
            large.cpu_ns / large.count if large.count else 0.0,
            small.cpu_ns / small.count if small.count else 0.0,
        )
        growth[f"{name}_p50_ratio"] = _quotient(large.percentile_us(0.5), small.percentile_us(0.5))
    return growth


def _quotient(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def _ratios(measured: dict[str, Measurement]) -> dict[str, float | None]:
    """Rates over their baselines, the unknown-token over the valid-token verify cost, and
    what authentication adds to a request (µs, by wall time and by CPU time)."""

    def rate(name: str) -> float | None:
        found = measured.get(name)
        return found.ops_per_sec if found and found.ops_per_sec else None

    def over(numerator: str, denominator: str) -> float | None:
        top, bottom = rate(numerator), rate(denominator)
        return round(top / bottom, 3) if top and bottom else None

    def added_us(name: str, base: str, cpu: bool = False) -> float | None:
        with_auth, without = measured.get(name), measured.get(base)
        if not with_auth or not without or not with_auth.count or not without.count:
            return None
        if cpu:
            return round(
                (with_auth.cpu_ns / with_auth.count - without.cpu_ns / without.count) / 1000, 1
            )
        if not with_auth.ops_per_sec or not without.ops_per_sec:
            return None
        return round(1e6 / with_auth.ops_per_sec - 1e6 / without.ops_per_sec, 1)

    return {
        "verify_to_baseline": over("verify_valid", "baseline"),
        # Cost is 1/rate: above 1 means an unknown token costs more than a valid one.
        "unknown_to_valid_cost": over("verify_valid", "verify_unknown"),
        "issue_to_baseline_insert": over("issue", "baseline_insert"),
        "request_auth_us": added_us("request", "request_noauth"),
        "request_auth_cpu_us": added_us("request", "request_noauth", cpu=True),
        "request_drf_auth_us": added_us("request_drf", "request_drf_noauth"),
        "request_drf_auth_cpu_us": added_us("request_drf", "request_drf_noauth", cpu=True),
        # Above 1: this app's DRF request is faster than DRF's own authtoken on the same view.
        "request_drf_to_authtoken": over("request_drf", "request_drf_authtoken"),
    }
