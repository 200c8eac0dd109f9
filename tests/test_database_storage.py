"""DatabaseStorage behaviour beyond the shared contract: database aliases and routers, the query
shapes that keep it fast on big tables, concurrency on PostgreSQL, and unavailable databases."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext

from django_authfw import models
from django_authfw.exceptions import InvalidInput, StorageError, StorageUnavailable
from django_authfw.records import AuditEvent, KVEntry, SessionData, utcnow
from django_authfw.storage import DatabaseStorage
from django_authfw.storage.database import rows as convert
from django_authfw.storage.database.counters import incr_locked, incr_upsert
from django_authfw.storage.database.errors import MissingUsers
from django_authfw.storage.database.fast_sql import insert_row

from .factories import AuthTokenFactory, UserFactory

SECOND = "authfw_second"  # testproject/settings.py
ON_POSTGRESQL = connection.vendor == "postgresql"
needs_postgresql = pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="PostgreSQL behaviour (row locks across connections); the PostgreSQL run covers it",
)
needs_psycopg = pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="the verification lookup's psycopg cursor; the PostgreSQL run covers it",
)


def second_db_user() -> str:
    user = get_user_model()._default_manager.db_manager(SECOND).create_user("second-db-user")
    return str(user.pk)


def expired_token(user_id: str) -> Any:
    past = utcnow() - timedelta(minutes=1)
    return AuthTokenFactory.build(user_id=user_id, expires_at=past, refresh_expires_at=past)


def session(user_id: str, session_id: str, **kwargs: Any) -> SessionData:
    return SessionData(
        session_id=session_id,
        user_id=user_id,
        expires_at=kwargs.pop("expires_at", utcnow() + timedelta(hours=1)),
        **kwargs,
    )


@contextmanager
def extra_database(alias: str, settings_dict: dict[str, Any]) -> Iterator[str]:
    """Register a database alias for the duration of a test, then close and forget it.

    Added after pytest-django set up the test, so the alias is not blocked, and not created or
    migrated: it points wherever ``settings_dict`` says.
    """
    # configure_settings fills in the defaults Django expects (it insists on a "default" entry).
    filled = connections.configure_settings({"default": {}, alias: dict(settings_dict)})
    connections.settings[alias] = filled[alias]
    try:
        yield alias
    finally:
        try:
            connections[alias].close()  # builds the wrapper if the test never used it
        finally:
            del connections[alias]
            del connections.settings[alias]


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def run_in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together; return results in order.

    Each thread has its own database connection (Django's are per thread) and closes it.
    """
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


# Options ---------------------------------------------------------------------------------------


def test_unknown_options_and_aliases_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown OPTIONS: cache"):
        DatabaseStorage(cache="default")
    with pytest.raises(StorageError, match="no such alias in DATABASES"):
        DatabaseStorage(using="nope")
    with pytest.raises(TypeError):
        DatabaseStorage(using=3)  # type: ignore[arg-type]


def test_storage_module_imports_before_apps_are_ready() -> None:
    code = (
        "import django.apps, django_authfw.storage.database as d;"
        "assert not django.apps.apps.ready; d.DatabaseStorage(); print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.django_db(databases=["default", SECOND])
def test_using_sends_every_query_to_that_database() -> None:
    storage = DatabaseStorage(using=SECOND)
    user_id = second_db_user()
    token = AuthTokenFactory.build(user_id=user_id)
    with CaptureQueriesContext(connections["default"]) as on_default:
        storage.store_token(token)
        storage.store_session(session(user_id, "s1"))
        storage.kv_set("k", b"v")
        assert storage.kv_incr("n") == 1
        storage.append_audit(AuditEvent(action="login", outcome=True, user_id=user_id))
        assert storage.get_token_by_access(token.access_digest) == token
        assert storage.revoke_token(token.token_id, at=utcnow()) is True
        assert storage.count_active_sessions() == 1
        assert storage.statistics()["total_tokens"] == 1
        assert [t.token_id for b in storage.iter_tokens() for t in b] == [token.token_id]
    assert on_default.captured_queries == []
    assert models.Token.objects.using(SECOND).count() == 1
    assert models.Token.objects.using("default").count() == 0
    assert DatabaseStorage().get_token_by_access(token.access_digest) is None

    storage.flush()
    for model in (models.Token, models.Session, models.KVEntry, models.AuditLog):
        assert model.objects.using(SECOND).count() == 0


class AuthfwToSecond:
    """Sends django_authfw's models to the second database, everything else to default."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return SECOND if model._meta.app_label == "django_authfw" else None

    db_for_write = db_for_read

    def allow_relation(self, *args: Any, **hints: Any) -> bool:
        return True


class ReadsFromSecond:
    """Reads of django_authfw's models from the second database (a stale replica), writes to
    default."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return SECOND if model._meta.app_label == "django_authfw" else None


@pytest.mark.django_db(databases=["default", SECOND])
def test_routers_choose_the_database(settings: Any) -> None:
    settings.DATABASE_ROUTERS = [f"{__name__}.AuthfwToSecond"]
    storage = DatabaseStorage()
    user_id = second_db_user()
    token = AuthTokenFactory.build(user_id=user_id)
    storage.store_token(token)
    storage.kv_set("k", b"v")
    assert models.Token.objects.using(SECOND).count() == 1
    assert models.Token.objects.using("default").count() == 0
    assert storage.get_token_by_access(token.access_digest) == token
    assert storage.kv_get("k") == b"v"


@pytest.mark.django_db(databases=["default", SECOND])
def test_reads_and_writes_follow_their_own_router_method(settings: Any) -> None:
    settings.DATABASE_ROUTERS = [f"{__name__}.ReadsFromSecond"]
    storage = DatabaseStorage()
    token = AuthTokenFactory.build(user_id=str(UserFactory.create().pk))
    storage.store_token(token)  # db_for_write: default
    storage.kv_set("k", b"v")
    assert models.Token.objects.using("default").count() == 1
    assert storage.get_token_by_access(token.access_digest) is None  # db_for_read: the replica
    assert storage.kv_get("k") is None
    assert storage.revoke_token(token.token_id, at=utcnow()) is True  # a write again


# Schema ----------------------------------------------------------------------------------------

GUIDE_INDEXES = {
    models.Token: {"idx_tokens_user_id", "idx_tokens_access_token", "idx_tokens_expires_at"},
    models.Session: {"idx_sessions_user_id", "idx_sessions_expires_at"},
    models.KVEntry: {"idx_kv_expires_at"},
    models.AuditLog: {"idx_audit_user_id", "idx_audit_created_at"},
}


@pytest.mark.django_db
def test_tables_carry_the_guide_indexes_and_no_pattern_indexes() -> None:
    with connection.cursor() as cursor:
        for model, names in GUIDE_INDEXES.items():
            constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
            assert names <= set(constraints), (model, sorted(constraints))
            # No varchar_pattern_ops "_like" twin of a primary key, a digest or an event id:
            # no query uses one, and every insert would maintain it (migration 0003).
            assert not [name for name in constraints if name.endswith("_like")], constraints
        tokens = connection.introspection.get_constraints(cursor, models.Token._meta.db_table)
        audit = connection.introspection.get_constraints(cursor, models.AuditLog._meta.db_table)
    assert tokens["idx_tokens_access_token"]["unique"]
    assert "idx_tokens_family_id" not in tokens
    assert audit["idx_audit_user_id"]["columns"] == ["user_id", "created_at"]
    assert "idx_audit_user_created" not in audit


# Query shapes ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_verification_is_one_select_without_the_user_table(
    django_assert_num_queries: Any,
) -> None:
    token = AuthTokenFactory.build(user_id=str(UserFactory.create().pk))
    storage = DatabaseStorage()
    storage.store_token(token)
    with django_assert_num_queries(1) as captured:
        assert storage.get_token_by_access(token.access_digest) == token
    sql = captured.captured_queries[0]["sql"]
    assert sql.lstrip().upper().startswith("SELECT")
    assert get_user_model()._meta.db_table not in sql
    with django_assert_num_queries(1):
        assert storage.get_token_by_access("f" * 64) is None
    with django_assert_num_queries(0):  # cannot be a digest: no query at all
        assert storage.get_token_by_access("afw_at_not-a-digest") is None


@pytest.mark.django_db(transaction=True)
def test_verification_from_many_threads() -> None:
    # Each thread compiles the lookup for its own connection (fast_sql.s lookup cache).
    storage = DatabaseStorage()
    tokens = [AuthTokenFactory.build(user_id=str(UserFactory.create().pk)) for _ in range(4)]
    for token in tokens:
        storage.store_token(token)

    def verify(i: int) -> list[bool]:
        return [storage.get_token_by_access(t.access_digest) == t for t in tokens * 5]

    assert all(all(results) for results in run_in_threads(4, verify))


@pytest.mark.django_db
def test_cleanup_deletes_in_batches_of_primary_keys() -> None:
    user_id = str(UserFactory.create().pk)
    storage = DatabaseStorage()
    live = AuthTokenFactory.build(user_id=user_id)
    storage.store_token(live)
    for _ in range(5):
        storage.store_token(expired_token(user_id))
    with CaptureQueriesContext(connection) as dry:
        assert storage.cleanup_expired_tokens(batch_size=2, dry_run=True) == 5
    assert not [q for q in dry.captured_queries if q["sql"].startswith("DELETE")]
    with CaptureQueriesContext(connection) as real:
        assert storage.cleanup_expired_tokens(batch_size=2) == 5
    deletes = [q["sql"] for q in real.captured_queries if "DELETE FROM" in q["sql"]]
    assert len(deletes) == 3  # 2 + 2 + 1 rows
    selects = [q["sql"] for q in real.captured_queries if q["sql"].startswith("SELECT")]
    assert all("LIMIT 2" in sql for sql in selects)
    assert [t.token_id for b in storage.iter_tokens() for t in b] == [live.token_id]


@pytest.mark.django_db
def test_session_and_kv_cleanup_batches() -> None:
    user_id = str(UserFactory.create().pk)
    storage = DatabaseStorage()
    past = utcnow() - timedelta(seconds=1)
    for i in range(3):
        storage.store_session(session(user_id, f"old{i}", expires_at=past))
        storage.import_kv([KVEntry(key=f"old{i}", value=b"x", expires_at=past)])
    storage.store_session(session(user_id, "forever", expires_at=None))
    with CaptureQueriesContext(connection) as queries:
        assert storage.cleanup_expired(batch_size=1) == {"tokens": 0, "sessions": 3, "kv": 3}
    deletes = [q["sql"] for q in queries.captured_queries if "DELETE FROM" in q["sql"]]
    if connection.vendor in ("postgresql", "sqlite"):
        # One statement per round, DELETE ... IN (SELECT ... LIMIT 1) (on PostgreSQL inside a
        # WITH that also counts the rows it picked); a round that deletes a
        # whole batch is followed by one more, which finds nothing: tokens 1 (empty),
        # sessions 3 + 1, key-value entries 3 + 1.
        assert len(deletes) == 9
        assert all("LIMIT 1)" in sql for sql in deletes)
    else:
        assert len(deletes) == 6
    assert [s.session_id for b in storage.iter_sessions() for s in b] == ["forever"]
    assert list(storage.iter_kv()) == []


@pytest.mark.django_db
def test_iteration_pages_by_key_without_offset() -> None:
    user_id = str(UserFactory.create().pk)
    storage = DatabaseStorage()
    tokens = [AuthTokenFactory.build(user_id=user_id) for _ in range(7)]
    for token in tokens:
        storage.store_token(token)
    with CaptureQueriesContext(connection) as queries:
        batches = list(storage.iter_tokens(batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    ids = [t.token_id for b in batches for t in b]
    assert ids == sorted(t.token_id for t in tokens)
    assert len(queries.captured_queries) == 3
    assert not any("OFFSET" in q["sql"].upper() for q in queries.captured_queries)


@pytest.mark.django_db
def test_audit_iteration_is_oldest_first_across_equal_timestamps() -> None:
    storage = DatabaseStorage()
    moment = utcnow() - timedelta(hours=1)
    same_time = [AuditEvent(action="login", outcome=True, created_at=moment) for _ in range(5)]
    earlier = AuditEvent(action="register", outcome=True, created_at=moment - timedelta(1))
    for event in [*same_time, earlier]:
        storage.append_audit(event)
    batches = list(storage.iter_audit(batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 2]
    assert [e for b in batches for e in b] == [earlier, *same_time]


# Writes ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_import_refuses_tokens_of_missing_users_and_writes_nothing() -> None:
    storage = DatabaseStorage()
    user_id = str(UserFactory.create().pk)
    good = AuthTokenFactory.build(user_id=user_id)
    orphans = [AuthTokenFactory.build(user_id="999001"), AuthTokenFactory.build(user_id="999002")]
    with pytest.raises(MissingUsers, match="2 user id") as raised:
        storage.import_tokens([good, *orphans])
    assert raised.value.missing_user_ids == ["999001", "999002"]
    assert isinstance(raised.value, StorageError)
    assert storage.get_token(good.token_id) is None
    with pytest.raises(MissingUsers):
        storage.import_sessions([session("999003", "orphan")])
    assert storage.import_tokens([good]) == 1


@pytest.mark.django_db
def test_user_ids_that_cannot_be_keys() -> None:
    storage = DatabaseStorage()
    assert storage.list_user_tokens("not-a-number") == []
    assert storage.revoke_user_tokens("not-a-number", at=utcnow()) == 0
    assert storage.delete_user_sessions("not-a-number") == 0
    with pytest.raises(InvalidInput, match="primary key"):
        storage.store_token(AuthTokenFactory.build(user_id="not-a-number"))


@pytest.mark.django_db
def test_bad_records_are_refused_before_any_query(django_assert_num_queries: Any) -> None:
    storage = DatabaseStorage()
    user_id = str(UserFactory.create().pk)
    naive = utcnow().replace(tzinfo=None)
    with django_assert_num_queries(0):
        with pytest.raises(InvalidInput, match="digest"):
            storage.store_token(AuthTokenFactory.build(user_id=user_id, access_digest="afw_at_raw"))
        with pytest.raises(InvalidInput, match="timezone-aware"):
            storage.store_token(AuthTokenFactory.build(user_id=user_id, expires_at=naive))
        with pytest.raises(InvalidInput, match="ip_address"):
            storage.store_session(session(user_id, "s", ip_address="not an ip"))
        with pytest.raises(InvalidInput, match="JSON"):
            storage.store_session(session(user_id, "s", data={"when": utcnow()}))
        with pytest.raises(InvalidInput, match="ttl"):
            storage.kv_set("k", b"v", ttl=timedelta(0))
        with pytest.raises(InvalidInput, match="batch_size"):
            storage.cleanup_expired_tokens(batch_size=0)
        with pytest.raises(InvalidInput, match="outcome"):
            storage.append_audit(AuditEvent(action="login", outcome="yes"))  # type: ignore[arg-type]


@pytest.mark.django_db
def test_kv_incr_refuses_a_value_that_is_not_a_counter() -> None:
    storage = DatabaseStorage()
    now = utcnow()
    for value in (b"abc", b"1.5", b"012", b"\xff"):
        storage.kv_set("k", value)
        with pytest.raises(InvalidInput, match="not an integer counter"):
            storage.kv_incr("k")
        with pytest.raises(InvalidInput, match="not an integer counter"):
            incr_locked("default", models.KVEntry, "k", now, None)
        assert storage.kv_get("k") == value
    storage.kv_set("k", b"-3")
    assert storage.kv_incr("k") == -2


@pytest.mark.django_db
@pytest.mark.parametrize("increment", [incr_upsert, incr_locked], ids=["upsert", "locked"])
def test_both_counter_paths_keep_a_fixed_window(increment: Any) -> None:
    now = utcnow()
    window = now + timedelta(minutes=5)
    assert increment("default", models.KVEntry, "c", now, window) == 1
    assert increment("default", models.KVEntry, "c", now, now + timedelta(hours=9)) == 2
    row = models.KVEntry.objects.get(key="c")
    assert row.expires_at == window
    assert bytes(row.value) == b"2"
    later = window + timedelta(seconds=1)
    assert increment("default", models.KVEntry, "c", later, later + timedelta(hours=1)) == 1
    assert models.KVEntry.objects.get(key="c").expires_at == later + timedelta(hours=1)


@pytest.mark.django_db
@pytest.mark.parametrize("fast", [True, False], ids=["fast_sql", "orm"])
def test_times_round_trip_without_use_tz(settings: Any, fast: bool) -> None:
    storage = DatabaseStorage(fast_sql=fast)
    token = AuthTokenFactory.build(user_id=str(UserFactory.create().pk))
    settings.USE_TZ = False
    settings.TIME_ZONE = "Europe/Paris"
    kept = session(token.user_id, "paris", expires_at=utcnow() + timedelta(minutes=5))
    storage.store_session(kept)
    assert storage.get_session("paris") == kept
    storage.store_session(session(token.user_id, "gone", expires_at=utcnow() - timedelta(1)))
    assert storage.get_session("gone") is None  # expiry compared in the same time zone
    storage.kv_set("paris", b"v", ttl=timedelta(minutes=5))
    assert storage.kv_get("paris") == b"v"
    storage.store_token(token)
    assert storage.get_token_by_access(token.access_digest) == token
    assert storage.list_user_tokens(token.user_id) == [token]
    at = utcnow()
    assert storage.revoke_token(token.token_id, at=at)
    revoked = storage.get_token(token.token_id)
    assert revoked is not None
    assert revoked.revoked_at == at
    assert revoked.updated_at == at


# Concurrency (PostgreSQL) ----------------------------------------------------------------------


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_revocations_have_exactly_one_winner() -> None:
    storage = DatabaseStorage()
    user_id = str(UserFactory.create().pk)
    for _ in range(5):
        token = AuthTokenFactory.build(user_id=user_id)
        storage.store_token(token)

        def revoke(i: int, token_id: str = token.token_id) -> bool:
            return storage.revoke_token(token_id, at=utcnow(), replaced_by=f"winner-{i}")

        results = run_in_threads(8, revoke)
        assert results.count(True) == 1, results
        stored = storage.get_token(token.token_id)
        assert stored is not None
        assert stored.replaced_by == f"winner-{results.index(True)}"


@needs_postgresql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("increment", [incr_upsert, incr_locked], ids=["upsert", "locked"])
def test_concurrent_increments_are_exact(increment: Any) -> None:
    threads, rounds = 8, 25
    expiry = utcnow() + timedelta(hours=1)

    def work(i: int) -> list[int]:
        return [
            increment("default", models.KVEntry, "hits", utcnow(), expiry) for _ in range(rounds)
        ]

    seen = [n for values in run_in_threads(threads, work) for n in values]
    assert sorted(seen) == list(range(1, threads * rounds + 1))  # each value handed out once
    assert DatabaseStorage().kv_get("hits") == str(threads * rounds).encode()


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_kv_incr_through_the_storage() -> None:
    storage = DatabaseStorage()
    results = run_in_threads(
        6, lambda i: [storage.kv_incr("fails", ttl=timedelta(minutes=5)) for _ in range(10)]
    )
    assert sorted(n for r in results for n in r) == list(range(1, 61))


# Unavailable databases -------------------------------------------------------------------------


def test_unreachable_postgresql_raises_storage_unavailable(django_db_blocker: Any) -> None:
    with (
        closed_port() as port,
        extra_database(
            "authfw_unreachable",
            {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "NAME": "authfw",
                "USER": "postgres",
                "OPTIONS": {"connect_timeout": 3},
            },
        ) as alias,
        django_db_blocker.unblock(),
    ):
        storage = DatabaseStorage(using=alias)
        with pytest.raises(StorageUnavailable, match="server is running") as raised:
            storage.get_token_by_access("0" * 64)
        assert str(port) in str(raised.value)
        with pytest.raises(StorageUnavailable):
            storage.kv_set("k", b"v")
        with pytest.raises(StorageUnavailable):
            list(storage.iter_audit())


@needs_postgresql
def test_connection_lost_mid_use_raises_storage_unavailable(
    django_db_setup: None, django_db_blocker: Any
) -> None:
    # The test database, on a connection of its own that the default connection then kills,
    # as a server restart or a failover would. (Outside pytest-django's per-test transaction,
    # which refuses connections to aliases it did not set up.)
    own = dict(connections["default"].settings_dict)
    with extra_database("authfw_victim", own) as alias, django_db_blocker.unblock():
        storage = DatabaseStorage(using=alias)
        assert storage.kv_get("k") is None
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(StorageUnavailable, match="server is running"):
            storage.kv_get("k")


def test_unopenable_sqlite_file_raises_storage_unavailable(
    django_db_blocker: Any, tmp_path: Any
) -> None:
    path = tmp_path / "missing-directory" / "db.sqlite3"
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}
    with (
        extra_database("authfw_unopenable", settings_dict) as alias,
        django_db_blocker.unblock(),
        pytest.raises(StorageUnavailable),
    ):
        DatabaseStorage(using=alias).kv_get("k")


def test_unmigrated_database_says_to_migrate(django_db_blocker: Any, tmp_path: Any) -> None:
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "empty.db")}
    with (
        extra_database("authfw_empty", settings_dict) as alias,
        django_db_blocker.unblock(),
        pytest.raises(StorageError, match="migrate") as raised,
    ):
        DatabaseStorage(using=alias).kv_get("k")
    assert not isinstance(raised.value, StorageUnavailable)


# Statistics ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_statistics_name_the_vendor_and_size_the_tables() -> None:
    storage = DatabaseStorage()
    user_id = str(UserFactory.create().pk)
    storage.store_token(AuthTokenFactory.build(user_id=user_id))
    access_expired = AuthTokenFactory.build(
        user_id=user_id, expires_at=utcnow() - timedelta(seconds=1)
    )
    storage.store_token(access_expired)  # its refresh token still works: counted, expired
    storage.store_token(expired_token(user_id))  # past retain_until: invisible, not counted
    storage.store_session(session(user_id, "gone", expires_at=utcnow() - timedelta(seconds=1)))
    stats = storage.statistics()
    assert stats["backend"] == f"database:{connection.vendor}"
    assert stats["total_tokens"] == 2
    assert stats["active_tokens"] == 1
    assert stats["expired_tokens"] == 1
    assert stats["total_sessions"] == 1
    assert stats["active_sessions"] == 0
    assert stats["memory_used_bytes"] is None
    if ON_POSTGRESQL:
        assert isinstance(stats["database_size_mb"], float)
        assert stats["database_size_mb"] > 0
    else:
        assert stats["database_size_mb"] is None


@pytest.mark.django_db
def test_deleting_an_expired_record_reports_it_gone() -> None:
    storage = DatabaseStorage()
    user_id = str(UserFactory.create().pk)
    past = utcnow() - timedelta(seconds=1)
    token = expired_token(user_id)
    storage.store_token(token)
    storage.store_session(session(user_id, "old", expires_at=past))
    storage.import_kv([KVEntry(key="old", value=b"x", expires_at=past)])
    assert storage.delete_token(token.token_id) is False
    assert storage.delete_session("old") is False
    assert storage.kv_delete("old") is False
    assert storage.cleanup_expired() == {"tokens": 1, "sessions": 1, "kv": 1}


# The fast SQL path (storage/database/fast_sql.py) ------------------------------------------------


def prepared_statements(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@needs_psycopg
def test_hot_statements_are_prepared_unless_turned_off(
    django_db_setup: None, django_db_blocker: Any
) -> None:
    """The storage's hot statements are prepared on the server with Django's default settings
    (``prepare``, default True), not with ``prepare=False``, and not where the alias's
    ``OPTIONS`` say ``prepare_threshold: None`` (never)."""
    own = dict(connections["default"].settings_dict)
    never = {**own, "OPTIONS": {**own.get("OPTIONS", {}), "prepare_threshold": None}}
    with (
        extra_database("authfw_defaults", own) as defaults,
        extra_database("authfw_unprepared", own) as unprepared,
        extra_database("authfw_never", never) as never_alias,
        django_db_blocker.unblock(),
    ):
        user = get_user_model().objects.using(defaults).create(username="authfw-prepare-test")
        try:
            token = AuthTokenFactory.build(user_id=str(user.pk))
            kept_session = session(str(user.pk), "authfw-prepare-test")
            writer = DatabaseStorage(using=defaults)
            writer.store_token(token)
            writer.store_session(kept_session)
            writer.kv_set("authfw-prepare-test", b"v")
            for alias, prepare in ((defaults, True), (unprepared, False), (never_alias, True)):
                storage = DatabaseStorage(using=alias, prepare=prepare)
                for _ in range(3):
                    assert storage.get_token_by_access(token.access_digest) == token
                    assert storage.get_token_by_access("e" * 64) is None
                    spare = AuthTokenFactory.build(user_id=str(user.pk))
                    storage.store_token(spare)
                    assert storage.revoke_token(spare.token_id, at=utcnow())
                    assert not storage.revoke_token(spare.token_id, at=utcnow())
                    assert storage.get_session(kept_session.session_id) == kept_session
                    assert storage.kv_get("authfw-prepare-test") == b"v"

            def kept(alias: str, model: Any) -> list[str]:
                table = model._meta.db_table
                statements = [s for s in prepared_statements(alias) if table in s]
                return sorted(s.split()[0].upper() for s in statements)

            assert kept(defaults, models.Token) == ["INSERT", "SELECT", "UPDATE"]
            assert kept(defaults, models.Session) == ["SELECT"]
            assert kept(defaults, models.KVEntry) == ["SELECT"]
            for alias in (unprepared, never_alias):
                for model in (models.Token, models.Session, models.KVEntry):
                    assert kept(alias, model) == [], alias
            # Django's own queries on the connection stay unprepared.
            get_user_model().objects.using(defaults).filter(pk=user.pk).exists()
            get_user_model().objects.using(defaults).filter(pk=user.pk).exists()
            assert kept(defaults, get_user_model()) == []
        finally:
            writer.kv_delete("authfw-prepare-test")
            writer.delete_user_sessions(str(user.pk))
            writer.delete_user_tokens(str(user.pk))
            user.delete()


@pytest.mark.django_db
def test_query_watchers_see_the_verification_lookup() -> None:
    token = AuthTokenFactory.build(user_id=str(UserFactory.create().pk))
    storage = DatabaseStorage()
    storage.store_token(token)
    seen: list[str] = []

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        assert storage.get_token_by_access(token.access_digest) == token
    assert len(seen) == 1
    assert models.Token._meta.db_table in seen[0]
    seen.clear()
    assert storage.get_token_by_access(token.access_digest) == token  # unwatched again
    assert seen == []


@pytest.mark.django_db
def test_query_watchers_see_the_token_insert_and_revocation() -> None:
    storage = DatabaseStorage()
    user_id = str(UserFactory.create().pk)
    token = AuthTokenFactory.build(user_id=user_id)
    with CaptureQueriesContext(connection) as captured:
        storage.store_token(token)
        assert storage.revoke_token(token.token_id, at=utcnow(), replaced_by="next")
    assert [q["sql"].split()[0] for q in captured.captured_queries] == ["INSERT", "UPDATE"]
    [stored] = storage.list_user_tokens(user_id)
    assert stored.revoked_at is not None
    assert stored.replaced_by == "next"


@pytest.mark.django_db
@pytest.mark.parametrize("watched", [False, True], ids=["unwatched", "watched"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast_sql", "orm"])
def test_token_insert_signals_depend_on_the_option_only(fast: bool, watched: bool) -> None:
    """The fast path sends no save signals, whatever the vendor and whether queries are
    watched; the ORM path sends them. Both store the same row."""
    storage = DatabaseStorage(fast_sql=fast)
    token = AuthTokenFactory.build(user_id=str(UserFactory.create().pk))
    saved: list[str] = []

    def on_save(sender: Any, instance: Any, **kwargs: Any) -> None:
        saved.append(instance.token_id)

    post_save.connect(on_save, sender=models.Token)
    try:
        if watched:
            with CaptureQueriesContext(connection) as captured:
                storage.store_token(token)
            assert [q["sql"].split()[0] for q in captured.captured_queries] == ["INSERT"]
        else:
            storage.store_token(token)
    finally:
        post_save.disconnect(on_save, sender=models.Token)
    assert saved == ([] if fast else [token.token_id])
    assert storage.get_token(token.token_id) == token
    assert DatabaseStorage(fast_sql=not fast).get_token_by_access(token.access_digest) == token


@pytest.mark.django_db
@pytest.mark.parametrize("fast", [True, False], ids=["fast_sql", "orm"])
def test_both_paths_revoke_once_and_read_the_same(fast: bool) -> None:
    storage = DatabaseStorage(fast_sql=fast)
    user_id = str(UserFactory.create().pk)
    token = AuthTokenFactory.build(user_id=user_id)
    storage.store_token(token)
    assert storage.revoke_token(token.token_id, at=utcnow(), replaced_by="next")
    assert not storage.revoke_token(token.token_id, at=utcnow())
    other = DatabaseStorage(fast_sql=not fast)
    assert token.refresh_digest is not None
    stored = other.get_token_by_refresh(token.refresh_digest)
    assert stored is not None
    assert stored.revoked_at is not None
    assert stored.replaced_by == "next"
    assert stored == storage.get_token(token.token_id)


def test_prepare_option_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="prepare"):
        DatabaseStorage(prepare="yes")  # type: ignore[arg-type]


def test_fast_sql_option_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="fast_sql"):
        DatabaseStorage(fast_sql="yes")  # type: ignore[arg-type]


@pytest.mark.django_db
def test_a_failed_insert_marks_the_atomic_block_for_rollback() -> None:
    storage = DatabaseStorage()
    token = AuthTokenFactory.build(user_id=str(UserFactory.create().pk))
    storage.store_token(token)
    with transaction.atomic():
        with pytest.raises(StorageError):
            storage.store_token(token)  # the same token_id again
        assert connection.needs_rollback  # as Model.save() leaves it: the block rolls back
    assert storage.get_token(token.token_id) == token  # the connection is usable again


@pytest.mark.django_db
def test_insert_row_falls_back_to_create_for_partial_values() -> None:
    """Values that leave a field to its default go through Model.objects.create()."""
    token = AuthTokenFactory.build(user_id=str(UserFactory.create().pk))
    values = convert.token_fields(models.Token, token)
    del values["created_at"]
    insert_row("default", models.Token, values)
    row = models.Token.objects.get(token_id=token.token_id)
    assert row.access_token == token.access_digest
    assert abs(row.created_at - utcnow()) < timedelta(minutes=1)  # the field's default


@needs_psycopg
def test_connection_lost_during_verification_raises_storage_unavailable(
    django_db_setup: None, django_db_blocker: Any
) -> None:
    own = dict(connections["default"].settings_dict)
    with extra_database("authfw_victim", own) as alias, django_db_blocker.unblock():
        storage = DatabaseStorage(using=alias)
        assert storage.get_token_by_access("d" * 64) is None
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(StorageUnavailable):
            storage.get_token_by_access("d" * 64)
        # Django closes the broken connection at the end of the request; then it works again.
        connections[alias].close_if_unusable_or_obsolete()
        assert storage.get_token_by_access("d" * 64) is None
