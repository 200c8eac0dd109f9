"""Measure how long cleanup, migration and backup/restore take per N records (not a test).

Run it against a database of its own (it creates tables, users and records there and deletes
the records afterwards)::

    DATABASE_URL=sqlite:////tmp/authfw-measure.sqlite3 python -m tests.measure_operations
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/authfw_measure \\
        python -m tests.measure_operations --backends database,memory,redis

Redis: database 15 of ``AUTHFW_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) under a
unique key prefix, flushed (by prefix) afterwards. Timings are wall-clock seconds; the figures
in docs/operations.md come from this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")


def setup() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build(name: str) -> Any:
    from django.conf import settings

    from django_authfw.storage import CacheStorage, DatabaseStorage, InMemoryStorage

    if name == "database":
        return DatabaseStorage()
    if name == "memory":
        return InMemoryStorage()
    if name == "redis":
        url = os.environ.get("AUTHFW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
        settings.CACHES["authfw-measure"] = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
        }
        return CacheStorage(
            cache="authfw-measure", key_prefix=f"authfw-measure:{uuid.uuid4().hex}:"
        )
    raise SystemExit(f"unknown backend {name!r}")


@contextmanager
def timed(label: str, results: list[tuple[str, float]]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    results.append((label, seconds))
    print(f"  {label:<58} {seconds:8.2f} s", flush=True)


def make_users(count: int) -> list[str]:
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    tag = uuid.uuid4().hex[:8]
    user_model.objects.bulk_create(
        [user_model(username=f"measure-{tag}-{i}", password="!") for i in range(count)],
        batch_size=1000,
    )
    return [
        str(pk)
        for pk in user_model.objects.filter(username__startswith=f"measure-{tag}-").values_list(
            "pk", flat=True
        )
    ]


def tokens(count: int, users: list[str], expires_in: timedelta) -> Iterator[list[Any]]:
    from django_authfw import tokens as raw
    from django_authfw.records import AuthToken, utcnow

    batch: list[Any] = []
    for i in range(count):
        if not batch:
            now = utcnow()  # per batch: a short lifetime still outlasts its own import
        batch.append(
            AuthToken(
                token_id=raw.new_id(),
                user_id=users[i % len(users)],
                access_digest=uuid.uuid4().hex * 2,
                refresh_digest=uuid.uuid4().hex * 2,
                expires_at=now + expires_in,
                refresh_expires_at=now + expires_in,
                family_id=raw.new_id(),
                permissions=["auth.view_user"],
                roles=["staff"],
                metadata={"client": "measure"},
            )
        )
        if len(batch) == 1000:
            yield batch
            batch = []
    if batch:
        yield batch


def fill(storage: Any, count: int, users: list[str], expires_in: timedelta) -> None:
    for batch in tokens(count, users, expires_in):
        storage.import_tokens(batch)


def measure(names: list[str], count: int) -> list[tuple[str, float]]:
    from django.db import connection

    from django_authfw.migration import StorageMigration

    results: list[tuple[str, float]] = []
    users = make_users(1000)
    vendor = connection.vendor
    label = {n: f"database ({vendor})" if n == "database" else n for n in names}
    storages = {name: build(name) for name in names}
    try:
        for name, storage in storages.items():
            print(f"{label[name]}:", flush=True)
            storage.flush()
            # Cleanup: records that expire a few seconds after their batch is written.
            margin = timedelta(seconds=5)
            with timed(f"write {count:,} tokens (import_tokens, batches of 1000)", results):
                fill(storage, count, users, margin)
            time.sleep(margin.total_seconds() + 1)
            with timed(f"cleanup {count:,} expired tokens (batch size 1000)", results):
                removed = storage.cleanup_expired(batch_size=1000)
            print(f"    removed {removed}", flush=True)
            storage.flush()

        # Migration between each ordered pair, of live records.
        for source_name, source in storages.items():
            fill(source, count, users, timedelta(hours=1))
            for target_name, target in storages.items():
                if target is source:
                    continue
                target.flush()
                pair = f"{label[source_name]} -> {label[target_name]}"
                with timed(f"migrate {count:,} tokens {pair}", results):
                    StorageMigration(source, target, batch_size=1000).migrate_tokens()
                with timed(f"  again (idempotent re-run) {pair}", results):
                    StorageMigration(source, target, batch_size=1000).migrate_tokens()
                target.flush()
                with timed(f"  with --verify {pair}", results):
                    report = StorageMigration(
                        source, target, batch_size=1000, verify=True
                    ).migrate_tokens()
                assert report.ok, report
                assert report.verified == count, report
                target.flush()
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "backup.gz"
                with timed(f"backup {count:,} tokens of {label[source_name]}", results):
                    source.create_backup(path)
                print(f"    file size {path.stat().st_size / 1e6:.1f} MB", flush=True)
                from django_authfw.backup import restore_backup

                source.flush()
                with timed(f"restore {count:,} tokens into {label[source_name]}", results):
                    restore_backup(source, path)
            source.flush()
    finally:
        from django.contrib.auth import get_user_model

        for storage in storages.values():
            storage.flush()
            storage.close()
        get_user_model().objects.filter(pk__in=users).delete()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="database,memory,redis")
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args(argv)
    setup()
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}",
        flush=True,
    )
    measure([n.strip() for n in args.backends.split(",") if n.strip()], args.records)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
