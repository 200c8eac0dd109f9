"""Operations at scale: records/s of migration, backup, restore and clean-up against raw
clients in the same run, peak RSS, a single user's many tokens, and live traffic (not a test).

One command prints the table of docs/operations.md ("Measured here")::

    python -m tests.measure_operations --records 10000,100000,1000000
    python -m tests.measure_operations --records 100000 --backends postgresql,redis
    python -m tests.measure_operations --records 100000 --traffic   # verification p99

It makes its own scratch PostgreSQL database (``authfw_measure_<hex>`` on
``AUTHFW_MEASURE_PG``, default ``postgres://postgres@127.0.0.1:5432/postgres``; dropped at the
end), SQLite file (in a temporary directory) and Redis key prefix (on ``AUTHFW_MEASURE_REDIS``,
default ``redis://127.0.0.1:6379/15``; deleted at the end). Every measured operation runs in a
fresh subprocess, whose ``ru_maxrss`` is its peak RSS. Raw baselines run in the same run, on
the same rows, with their encoding done before the clock starts:

* into Redis: a redis-py pipeline (1,000 tokens per round trip) writing the keys the Redis
  engine writes for a token (record with PX, refresh pointer, SADD to the user's index,
  PEXPIRE of the index);
* into a database: multi-row INSERT of the same rows, 1,000 per statement, one commit each;
* backup: ``COPY <tokens table> TO STDOUT`` on PostgreSQL; on SQLite ``SELECT *`` read to the
  end; of Redis, SCAN + pipelined GET of the token records;
* clean-up: ``DELETE ... WHERE pk IN (SELECT pk ... WHERE retain_until <= now LIMIT 1000)``
  until none is left, in autocommit.

Tokens belong to 1,000 users (``--single-user`` adds the case of one user holding them all).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000
PG_ADMIN_URL = os.environ.get("AUTHFW_MEASURE_PG", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("AUTHFW_MEASURE_REDIS", "redis://127.0.0.1:6379/15")
ENGINES = ("postgresql", "sqlite", "redis", "memory")

# Django, in a suite or a child process ------------------------------------------------------


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    # As in production: with DEBUG on, Django keeps the text of the last 9,000 queries, which
    # for multi-row statements is hundreds of megabytes of peak RSS that is not the operation's.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def redis_storage(prefix: str) -> Any:
    from django_authfw.storage import RedisStorage

    return RedisStorage(url=REDIS_URL, key_prefix=prefix, timeout=30)


def database_storage() -> Any:
    from django_authfw.storage import DatabaseStorage

    return DatabaseStorage()


def make_users(count: int) -> list[str]:
    from django.contrib.auth import get_user_model

    model = get_user_model()
    tag = uuid.uuid4().hex[:8]
    model.objects.bulk_create(
        [model(username=f"measure-{tag}-{i}", password="!") for i in range(count)],
        batch_size=1000,
    )
    pks = model.objects.filter(username__startswith=f"measure-{tag}-").values_list("pk", flat=True)
    return [str(pk) for pk in pks]


def token_batches(
    count: int, users: list[str], expires_in: timedelta, seed: str
) -> Iterator[list[Any]]:
    """``count`` tokens in lists of :data:`BATCH`, as the framework mints them (the token id is
    the record id of the access digest), for ``users`` in turn."""
    from django_authfw.records import AuthToken, utcnow
    from django_authfw.tokens import token_id_for

    for start in range(0, count, BATCH):
        now = utcnow()
        batch = []
        for i in range(start, min(count, start + BATCH)):
            access = hashlib.sha256(f"{seed}:a:{i}".encode()).hexdigest()
            refresh = hashlib.sha256(f"{seed}:r:{i}".encode()).hexdigest()
            token_id = token_id_for(access)
            batch.append(
                AuthToken(
                    token_id=token_id,
                    user_id=users[i % len(users)],
                    access_digest=access,
                    refresh_digest=refresh,
                    expires_at=now + expires_in,
                    refresh_expires_at=now + expires_in,
                    family_id=token_id,
                    permissions=["auth.view_user"],
                    roles=["staff"],
                    metadata={"client": "measure"},
                    created_at=now,
                    updated_at=now,
                )
            )
        yield batch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Raw baselines ------------------------------------------------------------------------------


def _token_table() -> tuple[str, list[str], Callable[[Any], tuple[Any, ...]]]:
    """The tokens table, its columns, and a token -> row function for a raw client."""
    from django.db import connection

    from django_authfw.storage.database import rows as convert
    from django_authfw.storage.database.models import Token
    from django_authfw.storage.database.queries import concrete_field

    sample = convert.token_fields(Token, next(token_batches(1, ["1"], timedelta(0), "x"))[0])
    columns = [str(concrete_field(Token, name).column) for name in sample]
    json_columns = {
        i for i, name in enumerate(sample) if name in ("permissions", "roles", "metadata")
    }
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        wrap: Callable[[Any], Any] = Jsonb
    else:
        wrap = json.dumps

    def row(token: Any) -> tuple[Any, ...]:
        values = convert.token_fields(Token, token).values()
        return tuple(wrap(v) if i in json_columns else v for i, v in enumerate(values))

    return Token._meta.db_table, columns, row


def raw_insert(batches: Iterator[list[Any]]) -> float:
    """Seconds a raw multi-row INSERT of these tokens took (rows built before the clock)."""
    from django.db import connection

    table, columns, row = _token_table()
    connection.ensure_connection()
    raw = connection.connection
    mark = "%s" if connection.vendor == "postgresql" else "?"
    one = "(" + ",".join([mark] * len(columns)) + ")"
    head = f'INSERT INTO "{table}" (' + ",".join(f'"{c}"' for c in columns) + ") VALUES "
    seconds = 0.0
    for batch in batches:
        rows = [row(t) for t in batch]
        sql = head + ",".join([one] * len(rows))
        params = [v for r in rows for v in r]
        started = time.perf_counter()
        cursor = raw.cursor()
        cursor.execute(sql, params)
        raw.commit()
        seconds += time.perf_counter() - started
    return seconds


def raw_read_tokens() -> tuple[int, float]:
    """``COPY ... TO STDOUT`` (PostgreSQL) or ``SELECT *`` (SQLite) of the tokens table."""
    from django.db import connection

    table, _columns, _row = _token_table()
    connection.ensure_connection()
    raw = connection.connection
    started = time.perf_counter()
    size = 0
    if connection.vendor == "postgresql":
        with raw.cursor() as cursor, cursor.copy(f'COPY "{table}" TO STDOUT') as copy:
            for data in copy:
                size += len(data)
    else:
        cursor = raw.cursor()
        cursor.execute(f'SELECT * FROM "{table}"')
        while rows := cursor.fetchmany(BATCH):
            size += len(rows)
    raw.commit()
    return size, time.perf_counter() - started


def raw_delete() -> tuple[int, float]:
    """A raw batched DELETE of the expired tokens, autocommit; (rows, seconds)."""
    from django.db import connection

    from django_authfw.records import utcnow

    table, _columns, _row = _token_table()
    connection.ensure_connection()
    raw = connection.connection
    mark = "%s" if connection.vendor == "postgresql" else "?"
    sql = (
        f'DELETE FROM "{table}" WHERE "token_id" IN (SELECT "token_id" FROM "{table}" '
        f'WHERE "retain_until" <= {mark} LIMIT {BATCH})'
    )
    now: Any = utcnow()
    if connection.vendor == "sqlite":
        now = now.replace(tzinfo=None).isoformat(" ")
    total = 0
    started = time.perf_counter()
    while True:
        cursor = raw.cursor()
        cursor.execute(sql, [now])
        raw.commit()
        total += cursor.rowcount
        if cursor.rowcount < BATCH:
            return total, time.perf_counter() - started


def raw_pipeline(batches: Iterator[list[Any]], prefix: str) -> float:
    """Seconds a redis-py pipeline took writing the keys the Redis engine writes for each token
    (values encoded before the clock starts); the keys are deleted afterwards."""
    import redis

    from django_authfw.records import utcnow
    from django_authfw.storage import codec
    from django_authfw.storage.redis.keys import Keyspace
    from django_authfw.tokens import token_id_for

    client = redis.Redis.from_url(REDIS_URL)
    keys = Keyspace(prefix)
    seconds = 0.0
    for batch in batches:
        now = utcnow()
        work = []
        for token in batch:
            rid = token.token_id
            px = max(1, codec.remaining_ms(token.retain_until, now))
            work.append(
                (
                    keys.token(rid),
                    codec.encode_token(token, rid),
                    keys.refresh(token_id_for(token.refresh_digest)),
                    rid,
                    keys.user_tokens(token.user_id),
                    px,
                )
            )
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for record, raw, pointer, rid, index, px in work:
            pipe.set(record, raw, px=px)
            pipe.set(pointer, rid, px=px)
            pipe.sadd(index, rid)
            pipe.pexpire(index, px)
        pipe.execute()
        seconds += time.perf_counter() - started
    delete_prefix(prefix)
    return seconds


def raw_redis_read(prefix: str) -> tuple[int, float]:
    """SCAN the token records under ``prefix`` and GET them in pipelines of 1,000."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    pattern = prefix.replace("*", r"\*") + "token:*"
    count = 0
    started = time.perf_counter()
    pending: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=BATCH):
        pending.append(key)
        if len(pending) == BATCH:
            count += sum(1 for v in client.mget(pending) if v)
            pending = []
    if pending:
        count += sum(1 for v in client.mget(pending) if v)
    return count, time.perf_counter() - started


def delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    pattern = prefix.replace("*", r"\*") + "*"
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


# Children: one measured operation each ----------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one operation described by ``spec``; return records, seconds and peak RSS."""
    setup_django(spec["database_url"])
    from django_authfw.backup import restore_backup, write_backup
    from django_authfw.migration import StorageMigration
    from django_authfw.storage import InMemoryStorage

    op = spec["op"]
    stores: dict[str, Callable[[], Any]] = {
        "database": database_storage,
        "redis": lambda: redis_storage(spec["prefix"]),
        "memory": InMemoryStorage,
    }
    extra: dict[str, Any] = {}
    if op == "migrate":
        source, target = stores[spec["source"]](), stores[spec["target"]]()
        started = time.perf_counter()
        report = StorageMigration(source, target, batch_size=BATCH).migrate_tokens()
        seconds = time.perf_counter() - started
        records = report.copied
    elif op == "backup":
        source = stores[spec["source"]]()
        started = time.perf_counter()
        records = write_backup(source, spec["file"], batch_size=BATCH)["tokens"]
        seconds = time.perf_counter() - started
        extra["file_mb"] = round(Path(spec["file"]).stat().st_size / 1e6, 1)
    elif op == "restore":
        target = stores[spec["target"]]()
        started = time.perf_counter()
        restored = restore_backup(target, spec["file"], batch_size=BATCH)
        seconds = time.perf_counter() - started
        records = restored.written["tokens"]
    elif op == "cleanup":
        storage = stores[spec["source"]]()
        started = time.perf_counter()
        records = storage.cleanup_expired_tokens(batch_size=BATCH)
        seconds = time.perf_counter() - started
    elif op == "memory":
        return memory_suite(spec)
    elif op == "single":
        return single_user(spec)
    else:
        raise SystemExit(f"unknown op {op!r}")
    return {"records": records, "seconds": seconds, "rss_mb": peak_rss_mb(), **extra}


def memory_suite(spec: dict[str, Any]) -> dict[str, Any]:
    """The in-memory engine lives in one process: import, backup, restore and clean-up there."""
    from django_authfw.backup import restore_backup, write_backup
    from django_authfw.storage import InMemoryStorage

    count, users = spec["records"], spec["users"]
    storage = InMemoryStorage()
    out: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], int]) -> None:
        started = time.perf_counter()
        records = fn()
        out[name] = {"records": records, "seconds": time.perf_counter() - started}

    def fill(expires: timedelta) -> int:
        return sum(
            storage.import_tokens(batch)
            for batch in token_batches(count, users, expires, uuid.uuid4().hex)
        )

    timed("import", lambda: fill(timedelta(hours=1)))
    timed("backup", lambda: write_backup(storage, spec["file"], batch_size=BATCH)["tokens"])
    storage.flush()
    timed(
        "restore",
        lambda: restore_backup(storage, spec["file"], batch_size=BATCH).written["tokens"],
    )
    storage.flush()
    fill(timedelta(seconds=2))
    time.sleep(2.1)  # every one of them has expired
    timed("cleanup", lambda: storage.cleanup_expired_tokens(batch_size=BATCH))
    out["rss_mb"] = peak_rss_mb()
    return out


def single_user(spec: dict[str, Any]) -> dict[str, Any]:
    """One user holding ``records`` tokens: store, verify, revoke_user_tokens, clean-up."""
    import random

    from django_authfw.storage import InMemoryStorage

    engine, count = spec["engine"], spec["records"]
    storage = (
        redis_storage(spec["prefix"])
        if engine == "redis"
        else InMemoryStorage()
        if engine == "memory"
        else database_storage()
    )
    user = spec["users"][0]
    out: dict[str, Any] = {}
    digests: list[str] = []
    started = time.perf_counter()
    for batch in token_batches(count, [user], timedelta(hours=1), uuid.uuid4().hex):
        storage.import_tokens(batch)
        digests.append(batch[0].access_digest)
        digests.append(batch[-1].access_digest)
    out["store"] = {"records": count, "seconds": time.perf_counter() - started}
    probes = [random.choice(digests) for _ in range(2000)]
    started = time.perf_counter()
    for digest in probes:
        assert storage.lookup_access(digest) is not None
    out["verify"] = {"records": len(probes), "seconds": time.perf_counter() - started}
    started = time.perf_counter()
    from django_authfw.records import utcnow

    revoked = storage.revoke_user_tokens(user, at=utcnow())
    out["revoke_user_tokens"] = {"records": revoked, "seconds": time.perf_counter() - started}
    if engine in ("postgresql", "sqlite"):
        from django_authfw.storage.database.models import Token

        Token.objects.filter(user_id=user).update(retain_until=utcnow() - timedelta(seconds=1))
        started = time.perf_counter()
        removed = storage.cleanup_expired_tokens(batch_size=BATCH)
        out["cleanup"] = {"records": removed, "seconds": time.perf_counter() - started}
    storage.flush()
    out["rss_mb"] = peak_rss_mb()
    return out


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.measure_operations", "--child", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child {spec['op']} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# A suite: one database engine, its rows of the table ---------------------------------------


class Table:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        count: int,
        operation: str,
        records: int,
        seconds: float,
        baseline: str = "",
        baseline_rate: float | None = None,
        rss_mb: float | None = None,
        target: float | None = None,
    ) -> None:
        rate = records / seconds if seconds else 0.0
        row = {
            "n": count,
            "operation": operation,
            "records": records,
            "seconds": round(seconds, 2),
            "rate": round(rate),
            "baseline": baseline,
            "baseline_rate": None if baseline_rate is None else round(baseline_rate),
            "ratio": None if not baseline_rate else round(rate / baseline_rate, 2),
            "target": target,
            "rss_mb": None if rss_mb is None else round(rss_mb),
        }
        self.rows.append(row)
        print("ROW " + json.dumps(row), flush=True)


def database_suite(
    vendor: str, database_url: str, count: int, engines: set[str], cleanup_only: bool = False
) -> None:
    """Every operation with ``vendor``'s database at ``count`` tokens (Redis too if asked)."""
    setup_django(database_url)
    from django.core.management import call_command
    from django.db import connection

    from django_authfw.storage.database.models import Token

    call_command("migrate", verbosity=0)
    table = Table()
    users = make_users(1000)
    name = "PostgreSQL" if vendor == "postgresql" else "SQLite"
    prefix = f"authfw-measure:{uuid.uuid4().hex}:"
    base = {"database_url": database_url, "prefix": prefix, "users": users}
    redis_too = "redis" in engines
    tmp = tempfile.mkdtemp(prefix="authfw-measure-")
    file = str(Path(tmp) / "tokens.backup")

    def spec(**kwargs: Any) -> dict[str, Any]:
        return {**base, **kwargs}

    def truncate() -> None:
        Token.objects.all().delete()

    def vacuum() -> None:
        if vendor == "postgresql":  # autocommit: VACUUM runs outside a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'VACUUM ANALYZE "{Token._meta.db_table}"')

    def fresh(label: str) -> Iterator[list[Any]]:
        return token_batches(count, users, timedelta(hours=1), label + uuid.uuid4().hex)

    try:
        if not cleanup_only:
            # Raw INSERT fills the database: the baseline of every write into it.
            insert_s = raw_insert(fresh("insert"))
            insert_rate = count / insert_s
            table.add(count, f"raw INSERT into {name}", count, insert_s)
            pipeline_rate = None
            if redis_too:
                pipeline_rate = count / raw_pipeline(fresh("pipe"), prefix + "raw:")
            copy_label = "COPY ... TO STDOUT" if vendor == "postgresql" else "SELECT * read"
            _size, copy_s = raw_read_tokens()
            result = run_child(spec(op="backup", source="database", file=file))
            table.add(
                count,
                f"backup of {name}",
                result["records"],
                result["seconds"],
                copy_label,
                count / copy_s,
                result["rss_mb"],
                0.2,
            )
            if redis_too:
                result = run_child(spec(op="migrate", source="database", target="redis"))
                table.add(
                    count,
                    f"migrate {name} -> Redis",
                    result["records"],
                    result["seconds"],
                    "redis-py pipeline",
                    pipeline_rate,
                    result["rss_mb"],
                    0.5,
                )
                truncate()
                result = run_child(spec(op="migrate", source="redis", target="database"))
                table.add(
                    count,
                    f"migrate Redis -> {name}",
                    result["records"],
                    result["seconds"],
                    "multi-row INSERT",
                    insert_rate,
                    result["rss_mb"],
                    0.5,
                )
                if vendor == "postgresql":
                    read, read_s = raw_redis_read(prefix)
                    redis_file = str(Path(tmp) / "redis.backup")
                    result = run_child(spec(op="backup", source="redis", file=redis_file))
                    table.add(
                        count,
                        "backup of Redis",
                        result["records"],
                        result["seconds"],
                        "SCAN + MGET",
                        read / read_s if read_s else None,
                        result["rss_mb"],
                        0.2,
                    )
                    delete_prefix(prefix)
                    result = run_child(spec(op="restore", target="redis", file=file))
                    table.add(
                        count,
                        "restore into Redis",
                        result["records"],
                        result["seconds"],
                        "redis-py pipeline",
                        pipeline_rate,
                        result["rss_mb"],
                        0.5,
                    )
                delete_prefix(prefix)
            truncate()
            result = run_child(spec(op="restore", target="database", file=file))
            table.add(
                count,
                f"restore into {name}",
                result["records"],
                result["seconds"],
                "multi-row INSERT",
                insert_rate,
                result["rss_mb"],
                0.5,
            )
        # Clean-up: the same number of expired rows, for the raw DELETE and then for cleanup.
        # Each timed delete starts from a vacuumed table: the rows an earlier delete left dead
        # in the indexes would slow the next one down, and would be measured instead.
        truncate()
        expired = timedelta(seconds=-1)
        raw_insert(token_batches(count, users, expired, uuid.uuid4().hex))
        vacuum()
        deleted, delete_s = raw_delete()
        assert deleted == count, (deleted, count)
        raw_insert(token_batches(count, users, expired, uuid.uuid4().hex))
        vacuum()
        result = run_child(spec(op="cleanup", source="database"))
        table.add(
            count,
            f"cleanup on {name}",
            result["records"],
            result["seconds"],
            "raw batched DELETE",
            count / delete_s,
            result["rss_mb"],
            0.6,
        )
    finally:
        delete_prefix(prefix)
        Token.objects.all().delete()
        connection.close()
        shutil.rmtree(tmp, ignore_errors=True)


def single_suite(database_url: str, count: int, engines: set[str]) -> None:
    setup_django(database_url)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    table = Table()
    users = make_users(1)
    prefix = f"authfw-measure:{uuid.uuid4().hex}:"
    names = {"postgresql": "PostgreSQL", "sqlite": "SQLite", "redis": "Redis", "memory": "memory"}
    vendor = connection.vendor
    wanted = [e for e in (vendor, "redis", "memory") if e in engines]
    try:
        for engine in wanted:
            result = run_child(
                {
                    "op": "single",
                    "engine": engine,
                    "records": count,
                    "database_url": database_url,
                    "prefix": prefix,
                    "users": users,
                }
            )
            for step in ("store", "verify", "revoke_user_tokens", "cleanup"):
                if step in result:
                    part = result[step]
                    table.add(
                        count,
                        f"one user, {count:,} tokens: {step} ({names[engine]})",
                        part["records"],
                        part["seconds"],
                        rss_mb=result["rss_mb"],
                    )
    finally:
        delete_prefix(prefix)


def memory_run(database_url: str, count: int) -> None:
    setup_django(database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    table = Table()
    users = make_users(1000)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_child(
            {
                "op": "memory",
                "database_url": database_url,
                "records": count,
                "users": users,
                "file": str(Path(tmp) / "memory.backup"),
            }
        )
    for step, label in (
        ("import", "import_tokens into memory"),
        ("backup", "backup of memory"),
        ("restore", "restore into memory"),
        ("cleanup", "cleanup on memory"),
    ):
        part = result[step]
        table.add(count, label, part["records"], part["seconds"], rss_mb=result["rss_mb"])


# Live traffic -----------------------------------------------------------------------------


def traffic(spec: dict[str, Any]) -> dict[str, Any]:
    """A verifier: look up known access digests in a loop for ``seconds``; latencies in ms."""
    setup_django(spec["database_url"])
    storage = redis_storage(spec["prefix"]) if spec["engine"] == "redis" else database_storage()
    digests = spec["digests"]
    latencies = []
    stop_at = time.perf_counter() + spec["seconds"]
    stop_file = Path(spec["stop_file"]) if spec.get("stop_file") else None
    i = 0
    while time.perf_counter() < stop_at and not (
        stop_file is not None and i % 50 == 0 and stop_file.exists()
    ):
        started = time.perf_counter()
        storage.lookup_access(digests[i % len(digests)])
        latencies.append((time.perf_counter() - started) * 1000)
        i += 1
        time.sleep(0.002)  # a steady trickle, not a flood competing for the 2 cores
    return {"latencies": latencies}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def traffic_suite(database_url: str, count: int, engines: set[str]) -> None:
    """Verification p99 idle, then while clean-up / migration of ``count`` tokens runs."""
    setup_django(database_url)
    from django.core.management import call_command
    from django.db import connection

    from django_authfw.storage.database.models import Token

    call_command("migrate", verbosity=0)
    users = make_users(100)
    prefix = f"authfw-measure:{uuid.uuid4().hex}:"
    base = {"database_url": database_url, "prefix": prefix, "users": users}
    db_store = database_storage()
    live = next(token_batches(200, users, timedelta(hours=2), "live"))
    db_store.import_tokens(live)
    digests = [t.access_digest for t in live]
    name = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"

    def verifier(engine: str, seconds: float, stop_file: str = "") -> subprocess.Popen[str]:
        spec = {
            **base,
            "op": "traffic",
            "engine": engine,
            "digests": digests,
            "seconds": seconds,
            "stop_file": stop_file,
        }
        return subprocess.Popen(
            [sys.executable, "-m", "tests.measure_operations", "--child", json.dumps(spec)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def latencies(process: subprocess.Popen[str]) -> list[float]:
        out, err = process.communicate()
        if process.returncode:
            raise SystemExit(err[-3000:])
        values: list[float] = json.loads(out.strip().splitlines()[-1])["latencies"]
        return values[50:]  # the first lookups open the connection

    def during(
        engine: str, prepare: Callable[[], Any], work: Callable[[], Any]
    ) -> tuple[list[float], list[float]]:
        """Latencies of a verifier alone for 8 s, then while ``work`` runs (to its end);
        ``prepare`` (filling the tables) runs before either."""
        prepare()
        idle = latencies(verifier(engine, 8))
        with tempfile.TemporaryDirectory() as tmp:
            stop = Path(tmp) / "stop"
            process = verifier(engine, 24 * 3600, str(stop))
            time.sleep(2)  # up and looping before the work starts
            work()
            stop.touch()
            busy = latencies(process)
        return idle, busy

    def report(what: str, idle: list[float], busy: list[float]) -> None:
        p_idle, p_busy = percentile(idle, 0.99), percentile(busy, 0.99)
        row = {
            "traffic": what,
            "idle_p50_ms": round(percentile(idle, 0.5), 2),
            "idle_p99_ms": round(p_idle, 2),
            "busy_p50_ms": round(percentile(busy, 0.5), 2),
            "busy_p99_ms": round(p_busy, 2),
            "ratio": round(p_busy / p_idle, 2) if p_idle else None,
            "lookups": [len(idle), len(busy)],
        }
        print("TRAFFIC " + json.dumps(row), flush=True)

    try:

        def expired() -> None:
            raw_insert(token_batches(count, users, timedelta(seconds=-1), uuid.uuid4().hex))

        # The work runs here, in a process already started: a child's start (Python and Django
        # imports) would compete for the CPU too, and it is not what is measured.
        def cleanup() -> None:
            database_storage().cleanup_expired_tokens(batch_size=BATCH)

        idle, busy = during("database", expired, cleanup)
        report(f"verify on {name} while cleanup of {count:,} tokens", idle, busy)
        if "redis" in engines:
            redis_store = redis_storage(prefix)
            redis_store.import_tokens(live)

            def fill() -> None:
                Token.objects.exclude(token_id__in=[t.token_id for t in live]).delete()
                raw_insert(token_batches(count, users, timedelta(hours=1), uuid.uuid4().hex))

            def migrate() -> None:
                from django_authfw.migration import StorageMigration

                target = redis_storage(prefix)
                StorageMigration(database_storage(), target, batch_size=BATCH).migrate_tokens()

            idle, busy = during("redis", fill, migrate)
            report(f"verify on Redis while migrating {count:,} tokens {name} -> Redis", idle, busy)
            idle, busy = during("database", fill, migrate)
            report(f"verify on {name} while migrating {count:,} tokens -> Redis", idle, busy)
    finally:
        delete_prefix(prefix)
        Token.objects.all().delete()


# The launcher -----------------------------------------------------------------------------


def scratch_postgres() -> tuple[str, Callable[[], None]]:
    import psycopg

    name = f"authfw_measure_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


def run_suite(args: list[str]) -> list[str]:
    """Run a suite in its own process (one Django database each); its printed lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.measure_operations", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(("ROW ", "TRAFFIC ")):
            print("  " + line.split(" ", 1)[1].strip(), file=sys.stderr, flush=True)
    if process.wait():
        raise SystemExit(f"suite {args} failed")
    return lines


def fmt_rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}/s"


def print_table(rows: list[dict[str, Any]], traffic_rows: list[dict[str, Any]]) -> None:
    print(
        "| N | operation | records/s | raw baseline, same run | ratio (target) | peak RSS |\n"
        "|---:|---|---:|---|---:|---:|"
    )
    for row in rows:
        baseline = f"{row['baseline']}: {fmt_rate(row['baseline_rate'])}" if row["baseline"] else ""
        ratio = ""
        if row["ratio"] is not None:
            mark = "" if row["target"] is None or row["ratio"] >= row["target"] else " ✗"
            ratio = f"{row['ratio']:.2f}x (≥{row['target']}){mark}"
        rss = "" if row["rss_mb"] is None else f"{row['rss_mb']} MB"
        print(
            f"| {row['n']:,} | {row['operation']} | {fmt_rate(row['rate'])} | {baseline} "
            f"| {ratio} | {rss} |"
        )
    if traffic_rows:
        print(
            "\n| live traffic | idle p50 / p99 | busy p50 / p99 | p99 ratio (target ≤2) |\n"
            "|---|---:|---:|---:|"
        )
        for row in traffic_rows:
            print(
                f"| {row['traffic']} | {row['idle_p50_ms']} / {row['idle_p99_ms']} ms "
                f"| {row['busy_p50_ms']} / {row['busy_p99_ms']} ms | {row['ratio']}x |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="100000", help="comma-separated token counts")
    parser.add_argument("--backends", default=",".join(ENGINES))
    parser.add_argument("--single-user", action="store_true", help="one user, all tokens")
    parser.add_argument("--traffic", action="store_true", help="verification p99 under load")
    parser.add_argument("--no-table", action="store_true", help="skip the operations table")
    parser.add_argument(
        "--cleanup-only", action="store_true", help="of the table, the clean-up rows alone"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--suite", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        result = traffic(spec) if spec["op"] == "traffic" else child(spec)
        print(json.dumps(result), flush=True)
        return
    engines = {e.strip() for e in args.backends.split(",") if e.strip()}
    unknown = engines - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown backends {sorted(unknown)}; choose among {ENGINES}")
    counts = [int(n.replace("_", "")) for n in args.records.split(",")]
    if args.suite:
        count = counts[0]
        kind, _, vendor = args.suite.partition(":")
        if kind == "table":
            database_suite(vendor, args.database_url, count, engines, args.cleanup_only)
        elif kind == "single":
            single_suite(args.database_url, count, engines)
        elif kind == "memory":
            memory_run(args.database_url, count)
        elif kind == "traffic":
            traffic_suite(args.database_url, count, engines)
        return

    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}",
        file=sys.stderr,
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    traffic_rows: list[dict[str, Any]] = []
    cleanups: list[Callable[[], None]] = []
    databases: dict[str, str] = {}
    try:
        if "postgresql" in engines:
            url, drop = scratch_postgres()
            cleanups.append(drop)
            databases["postgresql"] = url
        tmp = tempfile.mkdtemp(prefix="authfw-measure-sqlite-")
        cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        databases["sqlite"] = f"sqlite:///{tmp}/measure.sqlite3"
        main_db = databases.get("postgresql", databases["sqlite"])
        flags = ["--backends", ",".join(sorted(engines))]

        def collect(lines: list[str]) -> None:
            for line in lines:
                if line.startswith("ROW "):
                    rows.append(json.loads(line[4:]))
                elif line.startswith("TRAFFIC "):
                    traffic_rows.append(json.loads(line[8:]))

        for count in counts:
            n = ["--records", str(count)]
            if not args.no_table:
                for vendor in ("postgresql", "sqlite"):
                    if vendor in engines:
                        only = ["--cleanup-only"] if args.cleanup_only else []
                        collect(
                            run_suite(
                                [
                                    *only,
                                    "--suite",
                                    f"table:{vendor}",
                                    "--database-url",
                                    databases[vendor],
                                    *n,
                                    *flags,
                                ]
                            )
                        )
                if "memory" in engines:
                    collect(run_suite(["--suite", "memory", "--database-url", main_db, *n]))
            if args.single_user:
                vendor = "postgresql" if "postgresql" in engines else "sqlite"
                collect(
                    run_suite(
                        ["--suite", "single", "--database-url", databases[vendor], *n, *flags]
                    )
                )
            if args.traffic:
                collect(run_suite(["--suite", "traffic", "--database-url", main_db, *n, *flags]))
    finally:
        for cleanup in cleanups:
            cleanup()
    print_table(rows, traffic_rows)


if __name__ == "__main__":
    main()
