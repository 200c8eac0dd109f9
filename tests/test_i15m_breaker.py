"""The breaker's findings on issue #15's batched clean-up, fast backups and multi-row imports."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections, transaction

from django_authfw.backup import read_backup, write_backup
from django_authfw.records import utcnow

from . import ops_support
from .ops_support import Delegating, populate, snapshot

aliases = ops_support.aliases  # the fixture, shared by the operations tests

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a PostgreSQL behaviour"
)


def _wait_until_blocked(pid: int) -> None:
    """Wait until backend ``pid`` waits on a lock (a wait, not a timed assertion)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
            row = cursor.fetchone()
        if row is not None and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError("the clean-up never waited on the rows the other one deletes")


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_cleanup_racing_another_does_not_stop_with_expired_rows_left(
    make_user: Callable[..., str],
) -> None:
    # Two clean-ups (two hosts' cron jobs) pick the same first batch. The one that waits finds
    # those rows gone and deletes none of them: a round that deletes fewer than batch_size
    # rows is not the last when another transaction took them, and must not end the clean-up
    # with the next batch of expired rows still in the table.
    from django_authfw.storage.database.models import Session
    from django_authfw.storage.database.queries import delete_in_batches

    user = make_user()
    past = utcnow() - timedelta(hours=1)
    _store_sessions(user, past)  # physical order: a seq scan's LIMIT 5 picks the first five
    first = list(Session.objects.order_by("session_id").values_list("pk", flat=True)[:5])
    result: dict[str, Any] = {}

    def cleanup() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                result["pid"] = cursor.fetchone()[0]
            ready.set()
            go.wait()
            expired = Session.objects.filter(expires_at__lte=utcnow())
            result["deleted"] = delete_in_batches(expired, 5)
        except BaseException as exc:  # reported by the main thread
            result["error"] = exc
            ready.set()
        finally:
            connections["default"].close()

    ready, go = threading.Event(), threading.Event()
    worker = threading.Thread(target=cleanup)
    worker.start()
    try:
        ready.wait(30)
        with transaction.atomic():
            # The other clean-up's round: it deletes the first batch and has not committed.
            Session.objects.filter(pk__in=first).delete()
            go.set()
            if "pid" in result:
                _wait_until_blocked(result["pid"])
    finally:
        go.set()
        worker.join(60)
    assert "error" not in result, result.get("error")
    assert list(Session.objects.filter(expires_at__lte=utcnow())) == []
    assert result["deleted"] == 5, result


def _store_sessions(user: str, past: Any) -> None:
    from django_authfw.storage.database.models import Session

    Session.objects.all().delete()
    for i in range(10):
        Session.objects.create(session_id=f"s{i:02d}", user_id=user, expires_at=past)


@postgresql_only
def test_a_backup_stopped_by_its_progress_callback_leaves_no_transaction_open(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    # The tokens' JSON is read through a server-side cursor inside transaction.atomic, in a
    # generator. A backup that stops mid-way (the callback raises, the disk fills, Ctrl-C) must
    # close it at once, not when the garbage collector gets to it: until then the connection
    # stays inside the backup's atomic block (a savepoint here), and what the caller runs next
    # runs inside it, in the wrong order of atomic blocks.
    storage = aliases(main="database")["main"]
    populate(storage, make_user, scale=3)
    before = (connection.in_atomic_block, list(connection.savepoint_ids))

    def stop(kind: str, count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        write_backup(storage, tmp_path / "stopped.backup", batch_size=2, on_progress=stop)
    # The traceback (kept by pytest, a logger, a debugger) keeps the frames alive.
    assert (connection.in_atomic_block, list(connection.savepoint_ids)) == before, caught
    assert not (tmp_path / "stopped.backup").exists()


@postgresql_only
def test_a_backup_writes_utc_times_when_the_session_time_zone_was_changed(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    # Django sets the connection's TimeZone when it connects; code that runs SET TIME ZONE on
    # the connection afterwards changes how row_to_json prints timestamps. The backup must
    # still hold the UTC times the record path writes.
    storage = aliases(main="database")["main"]
    populate(storage, make_user, scale=2)
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'America/St_Johns'")
        cursor.execute("SET IntervalStyle = 'sql_standard'")
        cursor.execute("SET extra_float_digits = -15")
        cursor.execute("SET bytea_output = 'escape'")
    try:
        fast, slow = tmp_path / "fast.backup", tmp_path / "slow.backup"
        write_backup(storage, fast)
        write_backup(Delegating(storage), slow)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ALL")
            cursor.execute("SET TIME ZONE 'UTC'")
    from .test_backup import lines_of

    def tokens(path: Path) -> dict[str, Any]:
        return {
            line["record"]["token_id"]: line["record"]
            for line in lines_of(path)
            if line.get("kind") == "token"
        }

    fast_tokens = tokens(fast)
    assert fast_tokens
    for record in fast_tokens.values():
        assert record["created_at"].endswith("+00:00"), record["created_at"]
    assert read_backup(fast).counts == read_backup(slow).counts
    assert snapshot(storage).tokens  # still readable after the RESET


@postgresql_only
def test_a_backup_leaves_the_session_time_zone_as_it_found_it(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    # The backup reads in UTC for its own transaction only: a caller's transaction (here the
    # test's) keeps the TimeZone it had set, after a complete backup and after a stopped one.
    storage = aliases(main="database")["main"]
    populate(storage, make_user, scale=2)

    def zone() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW TimeZone")
            return str(cursor.fetchone()[0])

    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Asia/Kathmandu'")
    try:
        write_backup(storage, tmp_path / "whole.backup")
        assert zone() == "Asia/Kathmandu"

        def stop(kind: str, count: int) -> None:
            raise RuntimeError("stopped")

        with pytest.raises(RuntimeError):
            write_backup(storage, tmp_path / "stopped.backup", batch_size=1, on_progress=stop)
        assert zone() == "Asia/Kathmandu"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
