"""The breaker's findings on issue #15's batched clean-up, fast backups and multi-row imports."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections, transaction

from django_authfw.backup import read_backup, write_backup
from django_authfw.records import SessionData, utcnow

from . import ops_support
from .ops_support import Delegating, assert_same_records, populate, snapshot

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
@pytest.mark.parametrize("other", ["another clean-up", "a session touched"])
def test_a_cleanup_racing_another_does_not_stop_with_expired_rows_left(
    make_user: Callable[..., str], other: str
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
            if other == "another clean-up":
                # Its round deletes the first batch and has not committed.
                Session.objects.filter(pk__in=first).delete()
            else:
                # A request touches the first batch's sessions: they are no longer expired.
                Session.objects.filter(pk__in=first).update(expires_at=None)
            go.set()
            if "pid" in result:
                _wait_until_blocked(result["pid"])
    finally:
        go.set()
        worker.join(60)
    assert "error" not in result, result.get("error")
    assert list(Session.objects.filter(expires_at__lte=utcnow())) == []
    assert result["deleted"] == 5, result
    kept = [] if other == "another clean-up" else first
    assert sorted(Session.objects.values_list("pk", flat=True)) == sorted(kept)


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


ODD = [
    "🎉👩🏽‍🚀",
    "שלום עולם‏",
    "e\u0301\u0301",
    "\u202eevil",
    "tab\there",
    'quote"back\\',
    "\u2028\u2029",
]
NESTED = {
    "odd": ODD,
    "big": [2**53 - 1, 2**53, 2**53 + 1, -(2**63), 2**64],
    "floats": [0.1, 1.5, -0.0, 1e-7, 123456.789, 2.5e-300],
    "deep": {"a": [{"b": {"c": [None, True, False, "", {}]}}]},
    "שדה": {"nul-free": "ok"},
}


def _hostile_records(storage: Any, user_id: str) -> None:
    from datetime import UTC, datetime

    from django_authfw.records import AuditEvent, KVEntry

    from .factories import AuthTokenFactory

    low = datetime(1, 1, 2, tzinfo=UTC)
    high = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
    mid = datetime(2026, 3, 29, 1, 30, 0, 100000, tzinfo=UTC)  # a DST switch in Europe
    storage.import_tokens(
        [
            AuthTokenFactory.build(
                user_id=user_id,
                created_at=low,
                updated_at=mid,
                expires_at=high,
                refresh_digest=None,
                refresh_expires_at=None,
                permissions=ODD,
                roles=[],
                metadata=NESTED,
            ),
            AuthTokenFactory.build(
                user_id=user_id,
                created_at=mid.replace(microsecond=1),
                updated_at=mid.replace(microsecond=999999),
                expires_at=high,
                revoked_at=mid.replace(microsecond=10),
                replaced_by="x" * 255,
                metadata={},
            ),
        ]
    )
    storage.import_sessions(
        [
            SessionData(
                session_id="🎉-" + "s" * 200,
                user_id=user_id,
                data=NESTED,
                created_at=low,
                last_accessed=mid,
                expires_at=None,
                ip_address=None,
                user_agent="",
            ),
            SessionData(
                session_id="v6",
                user_id=user_id,
                data={},
                created_at=mid,
                last_accessed=mid,
                expires_at=high,
                ip_address="2001:db8::1",
                user_agent=ODD[1],
            ),
        ]
    )
    storage.import_kv(
        [
            KVEntry(key="k:" + ODD[0], value=b"\x00\xff" * 10, created_at=low, expires_at=None),
            KVEntry(key="e", value=b"", created_at=mid, expires_at=high),
        ]
    )
    storage.import_audit(
        [
            AuditEvent(
                action="a",
                outcome=False,
                user_id=None,
                resource=None,
                ip_address=None,
                user_agent="",
                created_at=low,
                metadata={},
            ),
            AuditEvent(
                action=ODD[0],
                outcome=True,
                user_id=user_id,
                resource=ODD[2],
                ip_address="10.0.0.1",
                user_agent=ODD[3],
                created_at=high,
                metadata=NESTED,
            ),
        ]
    )


def test_hostile_values_back_up_as_the_record_path_writes_them(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    from django_authfw.backup import decode_record

    from .test_backup import lines_of

    storage = aliases(main="database")["main"]
    _hostile_records(storage, make_user())
    fast, slow = tmp_path / "fast.backup", tmp_path / "slow.backup"
    assert write_backup(storage, fast, batch_size=1) == write_backup(
        Delegating(storage), slow, batch_size=1
    )

    def decoded(path: Path) -> dict[tuple[str, str], Any]:
        out = {}
        for line in lines_of(path)[1:-1]:
            record = decode_record(line["kind"], line["record"])
            key = next(iter(line["record"].values()))
            out[(line["kind"], str(key))] = (line.get("username"), record, line["record"])
        return out

    fast_records, slow_records = decoded(fast), decoded(slow)
    assert fast_records.keys() == slow_records.keys()
    for key, (name, record, raw) in slow_records.items():
        got_name, got_record, got_raw = fast_records[key]
        assert (got_name, got_record) == (name, record), key
        # Same JSON types too (an int stays an int, a float a float), and UTC times.
        assert json.dumps(got_raw, sort_keys=True) == json.dumps(raw, sort_keys=True) or (
            key[0] == "token" and _same_but_fractions(got_raw, raw)
        ), key
    target = aliases(other="memory")["other"]
    from django_authfw.backup import restore_backup

    restore_backup(target, fast)
    assert_same_records(snapshot(target), snapshot(storage))


def _same_but_fractions(fast: dict[str, Any], slow: dict[str, Any]) -> bool:
    # row_to_json leaves out trailing zeros of the microseconds: the same instants, in UTC.
    from datetime import datetime

    if fast.keys() != slow.keys():
        return False
    for name, value in slow.items():
        other = fast[name]
        if isinstance(value, str) and name.endswith(("_at", "_until")) and value:
            if not (
                other.endswith("+00:00")
                and datetime.fromisoformat(other) == datetime.fromisoformat(value)
            ):
                return False
        elif json.dumps(other, sort_keys=True) != json.dumps(value, sort_keys=True):
            return False
    return True


@pytest.mark.parametrize("zone", ["Europe/Amsterdam", "America/St_Johns", "UTC"])
def test_use_tz_false_backups_hold_utc_times_equal_to_the_records(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path, settings: Any, zone: str
) -> None:
    # USE_TZ = False with a local TIME_ZONE: the database holds local wall-clock times; the
    # backup's times must still be the records' instants, written in UTC, on both paths.
    from datetime import UTC, datetime

    from .test_backup import lines_of

    settings.USE_TZ = False
    settings.TIME_ZONE = zone
    storage = aliases(main="database")["main"]
    _hostile_records(storage, make_user())
    records = snapshot(storage)
    fast, slow = tmp_path / "fast.backup", tmp_path / "slow.backup"
    write_backup(storage, fast)
    write_backup(Delegating(storage), slow)
    for path in (fast, slow):
        for line in lines_of(path)[1:-1]:
            for name, value in line["record"].items():
                if name.endswith("_at") and value is not None:
                    assert datetime.fromisoformat(value).utcoffset() == timedelta(0), (path, value)
    target = aliases(other="memory")["other"]
    from django_authfw.backup import restore_backup

    restore_backup(target, fast)
    restored = snapshot(target)
    assert restored.tokens == records.tokens
    assert restored.sessions == records.sessions
    assert restored.audit == records.audit
    assert {t.created_at for t in restored.tokens.values()} >= {datetime(1, 1, 2, tzinfo=UTC)}


def _rows_per_insert(model: Any) -> int:
    from django.db import connection as conn

    from django_authfw.storage.database.rows import token_fields

    from .factories import AuthTokenFactory

    columns = len(token_fields(model, AuthTokenFactory.build(user_id="1")))
    return max(1, min(1000, (conn.features.max_query_params or 30_000) // columns))


@pytest.mark.parametrize("offset", [-1, 0, 1, "2x+1"])
def test_token_imports_near_the_parameter_limit_write_each_row_once(
    aliases: Any, make_user: Callable[..., str], offset: int | str
) -> None:
    # A chunk of exactly the rows one statement may carry, one fewer, one more, two and one:
    # every row written (the last of duplicate ids winning), existing rows updated in place.
    from django.test.utils import CaptureQueriesContext

    from django_authfw.storage.database.models import Token

    from .factories import AuthTokenFactory

    if connection.vendor not in ("postgresql", "sqlite"):
        pytest.skip("the multi-row INSERT is PostgreSQL's and SQLite's")
    per = _rows_per_insert(Token)
    count = 2 * per + 1 if offset == "2x+1" else per + int(offset)
    storage = aliases(main="database")["main"]
    users = [make_user() for _ in range(3)]
    tokens = [AuthTokenFactory.build(user_id=users[i % 3]) for i in range(count)]
    storage.import_tokens(tokens[:2])  # two already stored: updated by the import
    import dataclasses

    changed = [dataclasses.replace(tokens[0], metadata={"again": [2**60, 0.5]}, roles=["r"])]
    with CaptureQueriesContext(connection) as queries:
        # The first token twice in one import: the later one wins.
        storage.import_tokens([*tokens, *changed])
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == -(-count // per)
    stored = snapshot(storage).tokens
    assert stored == {t.token_id: t for t in [*tokens[1:], *changed]}


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_cleanups_count_each_row_once_and_leave_none(
    make_user: Callable[..., str],
) -> None:
    from django_authfw.storage.database.models import Session
    from django_authfw.storage.database.queries import delete_in_batches

    user = make_user()
    past = utcnow() - timedelta(hours=1)
    Session.objects.bulk_create(
        [Session(session_id=f"c{i:03d}", user_id=user, expires_at=past) for i in range(300)]
    )
    Session.objects.create(session_id="live", user_id=user, expires_at=None)
    start = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def cleanup() -> None:
        try:
            start.wait(30)
            counts.append(delete_in_batches(Session.objects.filter(expires_at__lte=utcnow()), 7))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections["default"].close()

    workers = [threading.Thread(target=cleanup) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert errors == []
    assert sum(counts) == 300
    assert list(Session.objects.values_list("pk", flat=True)) == ["live"]


def _signed_edit(source: Path, target: Path, edit: Callable[[list[bytes]], None]) -> None:
    """A copy of a backup with ``edit`` applied, signed again with SECRET_KEY: what somebody
    who holds the key (or a bug in a writer) could produce."""
    from django.conf import settings as django_settings

    from django_authfw.backup import _end_line, _mac

    from .backup_files import rewrite

    def sign(trailer: dict[str, Any]) -> None:
        body = raw_lines_of(target_body)
        mac = _mac(django_settings.SECRET_KEY)
        for line in body:
            mac.update(line)
        mac.update(_end_line(trailer["counts"]))
        trailer["hmac"] = mac.hexdigest()

    target_body: list[bytes] = []

    def capture(body: list[bytes]) -> None:
        edit(body)
        target_body[:] = body

    def raw_lines_of(body: list[bytes]) -> list[bytes]:
        return body

    rewrite(source, target, capture, trailer_edit=sign)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("expires_at", 5),
        ("expires_at", "2026-01-01T00:00:00"),
        ("expires_at", "0001-01-01T00:00:00+05:00"),
        ("expires_at", "9999-12-31T23:59:59-05:00"),
        ("permissions", [1, 2]),
        ("permissions", "read"),
        ("metadata", []),
        ("metadata", {"nul": "a\u0000b"}),
        ("access_digest", "A" * 64),
        ("access_digest", "a" * 63 + "\n"),
        ("token_id", "x" * 100_000),
        ("token_id", 7),
        ("user_id", None),
    ],
)
def test_a_signed_line_with_wrong_field_values_is_refused_and_nothing_restored(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path, field: str, value: Any
) -> None:
    from django_authfw.backup import restore_backup
    from django_authfw.exceptions import InvalidInput

    from .backup_files import dumps

    storage = aliases(main="database")["main"]
    populate(storage, make_user, scale=1)
    good, bad = tmp_path / "good.backup", tmp_path / "bad.backup"
    write_backup(storage, good)

    def edit(body: list[bytes]) -> None:
        for i, line in enumerate(body):
            obj = json.loads(line)
            if obj.get("kind") == "token":
                obj["record"][field] = value
                body[i] = dumps(obj)
                return
        raise AssertionError("no token line")

    _signed_edit(good, bad, edit)
    target = aliases(other="database")["other"]
    target.flush()
    with pytest.raises(InvalidInput) as caught:
        restore_backup(target, bad)
    assert caught.value.args
    assert snapshot(target).tokens == {}


def test_a_restore_interrupted_then_run_again_gives_the_backup_and_session_id_digests(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    # Stopped part-way (Ctrl-C after the first batch of sessions), then run again with
    # "merge": every record as in the source, with each session row's id_digest set.
    from django_authfw.backup import restore_backup
    from django_authfw.storage.database.models import Session
    from django_authfw.storage.database.rows import session_id_digest

    from .test_backup import lines_of

    storage = aliases(main="database")["main"]
    populate(storage, make_user, scale=3)
    _hostile_records(storage, make_user())
    source = snapshot(storage)
    path = tmp_path / "all.backup"
    write_backup(storage, path, batch_size=2)
    assert all(
        "id_digest" not in line["record"]
        for line in lines_of(path)[1:-1]
        if line["kind"] == "session"
    )
    storage.flush()

    def stop(kind: str, done: int, total: int) -> None:
        if kind == "sessions" and done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_backup(storage, path, batch_size=2, on_progress=stop)
    assert snapshot(storage).sessions != source.sessions  # part-way
    restore_backup(storage, path, batch_size=2, if_not_empty="merge")
    assert_same_records(snapshot(storage), source)
    rows = list(Session.objects.values_list("session_id", "id_digest"))
    assert rows
    assert all(digest == session_id_digest(sid) for sid, digest in rows)


def test_cleanup_still_sends_delete_signals_a_project_listens_to(
    aliases: Any, make_user: Callable[..., str]
) -> None:
    # A project that connects post_delete to the session model (to log sessions that end)
    # got a signal per row the clean-up removed: the ORM's delete() sends them. The one
    # statement per round bypasses the ORM, so it is for models Django would delete the same
    # way (Collector.can_fast_delete: no listeners, no cascades); the others keep the ORM.
    from django.db.models.signals import post_delete

    from django_authfw.storage.database.models import Session

    from .ops_support import add_expiring, wait_past

    storage = aliases(main="database")["main"]
    add_expiring(storage, make_user(), count=3)
    wait_past()
    seen: list[str] = []

    def ended(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(instance.pk)

    post_delete.connect(ended, sender=Session)
    try:
        assert storage.cleanup_expired(batch_size=2)["sessions"] == 3
    finally:
        post_delete.disconnect(ended, sender=Session)
    assert len(seen) == 3
    assert not Session.objects.filter(pk__in=seen).exists()


def test_backup_and_restore_with_fast_sql_off_match_the_record_path(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    from django_authfw.backup import restore_backup

    storage = aliases(
        main={"BACKEND": "django_authfw.storage.DatabaseStorage", "OPTIONS": {"fast_sql": False}}
    )["main"]
    assert storage.fast_sql is False
    populate(storage, make_user, scale=2)
    _hostile_records(storage, make_user())
    source = snapshot(storage)
    path, slow = tmp_path / "off.backup", tmp_path / "slow.backup"
    assert write_backup(storage, path) == write_backup(Delegating(storage), slow)
    storage.flush()
    restore_backup(storage, path)
    assert_same_records(snapshot(storage), source)


@pytest.mark.django_db(databases=["default", "authfw_second"])
def test_imports_cleanup_and_backups_follow_a_router_to_another_database(
    settings: Any, tmp_path: Path
) -> None:
    # django_authfw's tables on the second database (SQLite) while default may be PostgreSQL:
    # the multi-row INSERT, the one-statement clean-up and the backup's reader each use the
    # routed database's own dialect and parameter limit.
    import dataclasses

    from django_authfw.backup import decode_record
    from django_authfw.storage import DatabaseStorage
    from django_authfw.storage.database import models

    from .factories import AuthTokenFactory
    from .test_database_storage import SECOND, second_db_user

    settings.DATABASE_ROUTERS = ["tests.test_database_storage.AuthfwToSecond"]
    storage = DatabaseStorage()
    user_id = second_db_user()
    past = utcnow() - timedelta(hours=1)
    live = [AuthTokenFactory.build(user_id=user_id, metadata={"n": i}) for i in range(130)]
    dead = [
        dataclasses.replace(
            AuthTokenFactory.build(user_id=user_id), expires_at=past, refresh_expires_at=None
        )
        for _ in range(70)
    ]
    assert storage.import_tokens([*live, *dead]) == 200
    assert models.Token.objects.using(SECOND).count() == 200
    assert models.Token.objects.using("default").count() == 0
    assert storage.cleanup_expired(batch_size=30)["tokens"] == 70
    path = tmp_path / "routed.backup"
    assert write_backup(storage, path)["tokens"] == 130
    from .test_backup import lines_of

    # (Users are matched by username on the database the router gives the user model, where
    # this test's user is not: the records are compared in the file, not restored.)
    backed_up = {
        line["record"]["token_id"]: decode_record("token", line["record"])
        for line in lines_of(path)[1:-1]
        if line["kind"] == "token"
    }
    assert backed_up == {t.token_id: t for b in storage.iter_tokens() for t in b}
    assert sorted(backed_up) == sorted(t.token_id for t in live)


def test_cleanup_honours_retain_until_and_audit_retention_counts_exactly(
    aliases: Any, make_user: Callable[..., str]
) -> None:
    import dataclasses

    from django_authfw.records import AuditEvent

    from .factories import AuthTokenFactory

    storage = aliases(main="database")["main"]
    user = make_user()
    now = utcnow()
    past, future = now - timedelta(minutes=5), now + timedelta(days=1)
    refreshable = dataclasses.replace(
        AuthTokenFactory.build(user_id=user), expires_at=past, refresh_expires_at=future
    )
    gone = dataclasses.replace(
        AuthTokenFactory.build(user_id=user), expires_at=past, refresh_expires_at=past
    )
    no_refresh = dataclasses.replace(
        AuthTokenFactory.build(user_id=user),
        expires_at=past,
        refresh_digest=None,
        refresh_expires_at=None,
    )
    storage.import_tokens([refreshable, gone, no_refresh])
    assert storage.cleanup_expired(batch_size=1)["tokens"] == 2
    assert [t.token_id for b in storage.iter_tokens() for t in b] == [refreshable.token_id]

    cutoff = now - timedelta(days=30)
    old = [
        AuditEvent(action="old", outcome=True, created_at=cutoff - timedelta(seconds=i + 1))
        for i in range(1001)  # the retention deletes 1,000 a round: one round and one more
    ]
    kept = [
        AuditEvent(action="kept", outcome=True, created_at=cutoff),
        AuditEvent(action="kept", outcome=True, created_at=now),
    ]
    storage.import_audit([*old, *kept])
    assert storage.delete_audit_before(cutoff) == 1001
    assert sorted(e.event_id for b in storage.iter_audit() for e in b) == sorted(
        e.event_id for e in kept
    )
    assert storage.delete_audit_before(cutoff) == 0


@postgresql_only
def test_imports_and_backups_with_odd_session_settings_keep_backslashes_and_quotes(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    # standard_conforming_strings off makes '\\' an escape in plain literals: the multi-row
    # INSERT and the backup's statements must bind every value, never splice it in.
    from django_authfw.backup import restore_backup

    storage = aliases(main="database")["main"]
    user = make_user()
    with connection.cursor() as cursor:
        cursor.execute("SET standard_conforming_strings = off")
        cursor.execute("SET escape_string_warning = off")
        cursor.execute("SET IntervalStyle = 'iso_8601'")
        cursor.execute("SET extra_float_digits = 3")
        cursor.execute("SET bytea_output = 'escape'")
    try:
        _hostile_records(storage, user)
        source = snapshot(storage)
        path = tmp_path / "odd.backup"
        write_backup(storage, path)
        storage.flush()
        restore_backup(storage, path)
        assert_same_records(snapshot(storage), source)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ALL")
            cursor.execute("SET TIME ZONE 'UTC'")
    assert any("back\\" in p for t in source.tokens.values() for p in t.permissions)
    kv = {k: v.value for k, v in source.kv.items()}
    assert b"\x00\xff" * 10 in kv.values()


def test_a_user_deleted_mid_backup_leaves_a_file_that_restores_cleanly(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    # On PostgreSQL the tokens come from one snapshot: a user deleted after the backup began
    # may still have tokens in it, with no username. The file stays valid; a restore skips
    # those tokens as of a missing user and restores everything else.
    from django.contrib.auth import get_user_model

    from django_authfw.backup import restore_backup

    from .factories import AuthTokenFactory

    storage = aliases(main="database")["main"]
    first, doomed = make_user(), make_user()
    storage.import_tokens([AuthTokenFactory.build(user_id=first) for _ in range(3)])
    storage.import_tokens([AuthTokenFactory.build(user_id=doomed) for _ in range(3)])
    deleted: list[str] = []

    def delete_doomed(kind: str, count: int) -> None:
        if kind == "tokens" and not deleted:
            get_user_model()._default_manager.filter(pk=doomed).delete()
            deleted.append(doomed)

    path = tmp_path / "mid.backup"
    counts = write_backup(storage, path, batch_size=1, on_progress=delete_doomed)
    info = read_backup(path)
    assert info.counts == counts
    left = {t.token_id for b in storage.iter_tokens() for t in b}
    storage.flush()
    report = restore_backup(storage, path)
    restored = {t.token_id for b in storage.iter_tokens() for t in b}
    assert restored == left
    assert counts["tokens"] - len(left) == report.skipped_missing_user["tokens"]


@pytest.mark.parametrize("batch_size", [1.5, "2", True, 0, 2**63])
def test_write_backup_refuses_a_batch_size_that_is_not_a_positive_int(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path, batch_size: Any
) -> None:
    # 2**63 reached PostgreSQL's FETCH FORWARD (a bigint) and failed as a storage error, on
    # SQLite as "refused the write ... clashes with a stored one": every size must be refused
    # up front, with what is wrong, before any file or query.
    from django_authfw.exceptions import InvalidInput

    storage = aliases(main="database")["main"]
    populate(storage, make_user, scale=2)
    with pytest.raises(InvalidInput, match="batch_size must be an integer"):
        write_backup(storage, tmp_path / "odd.backup", batch_size=batch_size)
    assert not (tmp_path / "odd.backup").exists()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_backup_import_and_cleanup_on_a_server_side_binding_connection(
    make_user: Callable[..., str], tmp_path: Path
) -> None:
    # OPTIONS {"server_side_binding": True}: psycopg sends the parameters apart from the
    # statement (DECLARE ... WHERE retain_until > $1, the multi-row INSERT, LIMIT $n).
    import copy
    import dataclasses

    from django_authfw.backup import restore_backup
    from django_authfw.storage import DatabaseStorage

    from .factories import AuthTokenFactory

    default = connections["default"]
    options = default.settings_dict.setdefault("OPTIONS", {})
    before = copy.deepcopy(options)
    default.close()
    options["server_side_binding"] = True
    try:
        assert default.cursor().cursor.__class__.__name__ != "ClientCursor"
        storage = DatabaseStorage()
        user = make_user()
        past = utcnow() - timedelta(hours=1)
        live = [AuthTokenFactory.build(user_id=user, metadata={"i": i}) for i in range(5)]
        dead = [
            dataclasses.replace(
                AuthTokenFactory.build(user_id=user), expires_at=past, refresh_expires_at=None
            )
            for _ in range(4)
        ]
        assert storage.import_tokens([*live, *dead]) == 9
        _hostile_records(storage, user)
        assert storage.cleanup_expired(batch_size=3)["tokens"] == 4
        source = snapshot(storage)
        path = tmp_path / "ssb.backup"
        write_backup(storage, path, batch_size=2)
        storage.flush()
        restore_backup(storage, path)
        assert_same_records(snapshot(storage), source)
    finally:
        default.close()
        options.clear()
        options.update(before)
