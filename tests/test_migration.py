"""StorageMigration and ``authfw_migrate`` between every pair of selected backends."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_authfw.exceptions import InvalidInput, StorageUnavailable
from django_authfw.migration import StorageMigration, parse_kinds
from django_authfw.records import AuthToken, KVEntry, SessionData, replace, utcnow
from django_authfw.storage import AuthStorage, InMemoryStorage

from . import ops_support
from .backends import SERVER_BACKENDS, backend_id, built_storage, selected_backends
from .ops_support import (
    Delegating,
    Snapshot,
    add_expiring,
    assert_same_records,
    is_empty,
    keeps_kv_created_at,
    populate,
    snapshot,
    wait_past,
)

aliases = ops_support.aliases  # the fixture, shared by the operations tests

# A user id no test database holds: its tokens and sessions cannot enter a database storage.
ORPHAN_USER_ID = "987654321"


def migration_pairs() -> list[tuple[str, str]]:
    names = selected_backends()
    if names == ["database"]:
        # A run narrowed to the database (the SQLite run of tests/run.sh) still migrates to and
        # from it, with the in-memory store that needs no service.
        names = ["database", "memory"]
    # Two DatabaseStorage instances share the same tables, so database -> database is not a
    # migration; every other ordered pair is, including two separate stores of one backend.
    pairs = [(a, b) for a in names for b in names if not (a == b == "database")]
    # Redis Cluster and Sentinel (servers the tests start, so slow): moving to and from them
    # and the database or a single Redis, the migrations a site makes.
    servers = [n for n in selected_backends(servers=True) if n in SERVER_BACKENDS]
    for server in servers:
        for other in ("database", "redis"):
            if other in names:
                pairs += [(other, server), (server, other)]
    return pairs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pair" in metafunc.fixturenames:
        metafunc.parametrize(
            "pair",
            [
                pytest.param(
                    (a, b),
                    id=f"{backend_id(a)}->{backend_id(b)}",
                    # Pairs with a backend whose servers the tests start are slow, as in conftest.
                    marks=[pytest.mark.slow] * bool({a, b} & set(SERVER_BACKENDS)),
                )
                for a, b in migration_pairs()
            ],
        )


@pytest.fixture
def source_target(
    pair: tuple[str, str], settings: Any, db: None
) -> Iterator[tuple[AuthStorage, AuthStorage]]:
    with ExitStack() as stack:
        source = stack.enter_context(built_storage(pair[0], settings))
        target = stack.enter_context(built_storage(pair[1], settings))
        yield source, target


def populated(
    source: AuthStorage, pair: tuple[str, str], make_user: Callable[..., str], **kw: Any
) -> tuple[Snapshot, Any]:
    # Only a non-database source can hold records of a user that does not exist.
    orphan = ORPHAN_USER_ID if pair[0] != "database" else None
    data = populate(source, make_user, orphan_user_id=orphan, **kw)
    return snapshot(source), data


def without_orphans(snap: Snapshot, data: Any, target_name: str) -> Snapshot:
    if target_name != "database":
        return snap
    return Snapshot(
        tokens={k: v for k, v in snap.tokens.items() if k not in data.orphan_token_ids},
        sessions={k: v for k, v in snap.sessions.items() if k not in data.orphan_session_ids},
        kv=snap.kv,
        audit=snap.audit,
        audit_count=snap.audit_count,
    )


# Every pair -----------------------------------------------------------------------------------


def test_migrate_all_copies_everything_and_verifies(
    pair: tuple[str, str],
    source_target: tuple[AuthStorage, AuthStorage],
    make_user: Callable[..., str],
) -> None:
    source, target = source_target
    before, data = populated(source, pair, make_user, scale=3)
    summary = StorageMigration(source, target, batch_size=4, verify=True).migrate_all()

    assert summary.ok, summary.mismatches
    orphans = len(data.orphan_token_ids) if pair[1] == "database" else 0
    tokens = summary["tokens"]
    assert tokens.read == len(before.tokens)
    assert tokens.skipped_orphans == orphans
    assert tokens.copied == tokens.verified == len(before.tokens) - orphans
    assert summary["sessions"].skipped_orphans == orphans
    assert summary["kv"].copied == summary["kv"].verified == len(before.kv)
    assert summary["audit"].copied == len(before.audit)
    expected = without_orphans(before, data, pair[1])
    lossy = not keeps_kv_created_at(*pair)
    assert_same_records(snapshot(target), expected, ignore_kv_created_at=lossy)
    assert_same_records(snapshot(source), before, ignore_kv_created_at=lossy)  # only read

    # A second run writes the same records again (upserts) and adds nothing.
    again = StorageMigration(source, target, batch_size=4, verify=True).migrate_all()
    assert again.ok
    assert again["audit"].copied == 0
    assert again["audit"].skipped_by_target == len(before.audit)
    assert_same_records(snapshot(target), expected, ignore_kv_created_at=lossy)


def test_interrupted_migration_finishes_when_run_again(
    pair: tuple[str, str],
    source_target: tuple[AuthStorage, AuthStorage],
    make_user: Callable[..., str],
) -> None:
    source, target = source_target
    before, data = populated(source, pair, make_user, scale=8)

    class Killed(Exception):
        pass

    calls = 0

    def kill_half_way(kind: str, done: int, total: int | None) -> None:
        nonlocal calls
        calls += 1
        if kind == "sessions" and calls > 1:
            raise Killed  # as if the process died after the tokens and one session batch

    with pytest.raises(Killed):
        StorageMigration(source, target, batch_size=3, on_progress=kill_half_way).migrate_all()
    partial = snapshot(target)
    assert partial.tokens
    assert not partial.kv
    assert not partial.audit

    summary = StorageMigration(source, target, batch_size=3, verify=True).migrate_all()
    assert summary.ok
    assert_same_records(
        snapshot(target),
        without_orphans(before, data, pair[1]),
        ignore_kv_created_at=not keeps_kv_created_at(*pair),
    )


def test_target_failing_half_way_then_rerun(
    pair: tuple[str, str],
    source_target: tuple[AuthStorage, AuthStorage],
    make_user: Callable[..., str],
) -> None:
    source, target = source_target
    before, data = populated(source, pair, make_user, scale=8)

    class DiesAfterTwoBatches(Delegating):
        batches = 0

        def import_audit(self, events: Iterable[Any]) -> int:
            type(self).batches += 1
            if type(self).batches > 2:
                raise StorageUnavailable("connection lost")
            return self.inner.import_audit(events)

    failing = DiesAfterTwoBatches(target)
    migration = StorageMigration(source, failing, batch_size=2)
    with pytest.raises(StorageUnavailable):
        migration.migrate_all()
    assert migration.failed_storage is failing
    assert 0 < snapshot(target).audit_count < len(before.audit)

    StorageMigration(source, target, batch_size=2).migrate_all()
    after = snapshot(target)
    assert after.audit_count == len(before.audit)  # nothing duplicated
    assert_same_records(
        after,
        without_orphans(before, data, pair[1]),
        ignore_kv_created_at=not keeps_kv_created_at(*pair),
    )


def test_catch_up_after_switch_never_undoes_the_target(
    pair: tuple[str, str],
    source_target: tuple[AuthStorage, AuthStorage],
    make_user: Callable[..., str],
) -> None:
    """The no-downtime procedure of docs/operations.md: copy, switch, catch up."""
    old, new = source_target
    user = make_user()
    populate(old, make_user)
    first = StorageMigration(old, new).migrate_all()
    switch = max(r.finished_at for r in first.reports.values() if r.finished_at)

    # After the switch the site writes to the new store: a rotation, a logout, a changed value.
    rotated = next(t for b in new.iter_tokens() for t in b if t.revoked_at is None)
    assert new.revoke_token(rotated.token_id, at=utcnow(), replaced_by="next")
    ended = next(s for b in new.iter_sessions() for s in b)
    assert new.delete_session(ended.session_id)
    new.kv_set("plain", b"changed after the switch")
    # Meanwhile a process not yet switched still wrote to the old one.
    revoked_on_old = next(
        t for b in old.iter_tokens() for t in b if t.revoked_at is None and t != rotated
    )
    straggler = AuthToken("straggler", user, "f" * 64, utcnow() + timedelta(hours=1))
    old.store_token(straggler)
    late_session = SessionData("late", user, expires_at=utcnow() + timedelta(hours=1))
    old.store_session(late_session)
    old.revoke_token(revoked_on_old.token_id, at=utcnow())

    catch_up = StorageMigration(old, new, missing_only=True, since=switch, verify=True)
    summary = catch_up.migrate_all()
    assert summary.ok, summary.mismatches
    assert summary["tokens"].copied == 1
    assert summary["tokens"].revocations_carried == 1
    assert summary["sessions"].copied == 1
    assert summary["sessions"].skipped_older == 1
    assert new.get_token(rotated.token_id).revoked_at is not None  # type: ignore[union-attr]
    assert new.get_token(revoked_on_old.token_id).revoked_at is not None  # type: ignore[union-attr]
    assert new.get_token("straggler") == straggler
    assert new.get_session(ended.session_id) is None  # a logout is not undone
    assert new.get_session("late") == late_session
    assert new.kv_get("plain") == b"changed after the switch"
    assert snapshot(new).audit_count == snapshot(old).audit_count


def test_preserve_ttl_false_recomputes_expiries(
    pair: tuple[str, str],
    source_target: tuple[AuthStorage, AuthStorage],
    make_user: Callable[..., str],
    settings: Any,
) -> None:
    settings.AUTHFW = {
        **settings.AUTHFW,
        "ACCESS_TOKEN_TTL": timedelta(minutes=7),
        "REFRESH_TOKEN_TTL": timedelta(days=3),
        "SESSION_TTL": timedelta(hours=5),
    }
    source, target = source_target
    user = make_user()
    now = utcnow()
    live = AuthToken(
        token_id="live",
        user_id=user,
        access_digest="a" * 64,
        refresh_digest="b" * 64,
        expires_at=now + timedelta(minutes=50),
        refresh_expires_at=now + timedelta(days=10),
    )
    access_expired = AuthToken(
        token_id="access-expired",
        user_id=user,
        access_digest="c" * 64,
        refresh_digest="d" * 64,
        expires_at=now - timedelta(minutes=1),
        refresh_expires_at=now + timedelta(days=1),
    )
    for token in (live, access_expired):
        source.store_token(token)
    source.store_session(SessionData("timed", user, expires_at=now + timedelta(days=9)))
    source.store_session(SessionData("forever", user, expires_at=None))
    source.kv_set("k", b"v", ttl=timedelta(minutes=30))

    started = utcnow()
    summary = StorageMigration(source, target, preserve_ttl=False, verify=True).migrate_all()
    finished = utcnow()
    assert summary.ok, summary.mismatches

    def between(value: datetime | None, delta: timedelta) -> bool:
        assert value is not None
        return started + delta <= value <= finished + delta

    moved = target.get_token("live")
    assert moved is not None
    assert between(moved.expires_at, timedelta(minutes=7))
    assert between(moved.refresh_expires_at, timedelta(days=3))
    kept = target.get_token("access-expired")
    assert kept is not None
    assert kept.expires_at == access_expired.expires_at  # never revived
    assert between(kept.refresh_expires_at, timedelta(days=3))
    timed = target.get_session("timed")
    assert timed is not None
    assert between(timed.expires_at, timedelta(hours=5))
    forever = target.get_session("forever")
    assert forever is not None
    assert forever.expires_at is None
    entry = next(e for b in target.iter_kv() for e in b if e.key == "k")
    assert entry.expires_at is not None
    assert abs(entry.expires_at - (now + timedelta(minutes=30))) < timedelta(seconds=2)


# One backend at a time ------------------------------------------------------------------------


def second_backend(backend: str) -> str:
    return "memory" if backend != "memory" else "locmem"


def test_expired_records_are_skipped(
    backend: str, storage: AuthStorage, make_user: Callable[..., str], settings: Any
) -> None:
    user = make_user()
    add_expiring(storage, user, count=3)
    storage.store_token(AuthToken("keep", user, "e" * 64, utcnow() + timedelta(hours=1)))
    storage.kv_set("keep", b"1")
    wait_past()
    # Whether a store still lists records past their life until cleanup runs (in-memory) or
    # hides them at once (database, Redis) is the backend's business; whatever it lists is
    # skipped, never copied.
    now = utcnow()
    listed = {
        "tokens": sum(t.retain_until <= now for b in storage.iter_tokens() for t in b),
        "sessions": sum(s.is_expired(now) for b in storage.iter_sessions() for s in b),
        "kv": sum(e.is_expired(now) for b in storage.iter_kv() for e in b),
    }
    with built_storage(second_backend(backend), settings) as target:
        summary = StorageMigration(storage, target).migrate_all()
        for kind, count in listed.items():
            assert summary[kind].skipped_expired == count
        assert [t.token_id for b in target.iter_tokens() for t in b] == ["keep"]
        assert [e.key for b in target.iter_kv() for e in b] == ["keep"]
        assert not list(target.iter_sessions())


def test_records_a_source_still_lists_past_their_life_are_skipped(
    storage: AuthStorage, make_user: Callable[..., str]
) -> None:
    user = make_user()
    past = utcnow() - timedelta(seconds=1)
    live = AuthToken("live", user, "1" * 64, utcnow() + timedelta(hours=1))
    stale = [
        AuthToken("stale", user, "2" * 64, past, refresh_digest="3" * 64, refresh_expires_at=past)
    ]
    stale_sessions = [SessionData("stale", user, expires_at=past)]
    stale_kv = [KVEntry("stale", b"x", expires_at=past)]

    class ListsExpired(Delegating):
        """A store that keeps expired records listed until its cleanup runs."""

        def iter_tokens(self, *, batch_size: int = 1000) -> Iterator[list[AuthToken]]:
            yield [live, *stale]

        def iter_sessions(self, *, batch_size: int = 1000) -> Iterator[list[SessionData]]:
            yield stale_sessions

        def iter_kv(self, *, batch_size: int = 1000) -> Iterator[list[KVEntry]]:
            yield stale_kv

    source = InMemoryStorage()
    try:
        summary = StorageMigration(ListsExpired(source), storage, verify=True).migrate_all()
    finally:
        source.close()
    assert summary.ok
    assert [summary[k].skipped_expired for k in ("tokens", "sessions", "kv")] == [1, 1, 1]
    assert summary["tokens"].copied == 1
    assert [t for b in storage.iter_tokens() for t in b] == [live]
    assert not list(storage.iter_sessions())
    assert not [e for b in storage.iter_kv() for e in b]


def test_dry_run_writes_nothing(
    backend: str, storage: AuthStorage, make_user: Callable[..., str], settings: Any
) -> None:
    data = populate(storage, make_user)
    with built_storage(second_backend(backend), settings) as target:
        summary = StorageMigration(storage, target, dry_run=True, verify=True).migrate_all()
        assert {kind: r.copied for kind, r in summary.reports.items()} == data.counts()
        assert all(r.dry_run and r.verified == 0 for r in summary.reports.values())
        assert is_empty(target)


def test_only_some_kinds(
    backend: str, storage: AuthStorage, make_user: Callable[..., str], settings: Any
) -> None:
    data = populate(storage, make_user)
    with built_storage(second_backend(backend), settings) as target:
        migration = StorageMigration(storage, target)
        assert migration.migrate_kv_data().copied == len(data.kv)
        assert migration.migrate_sessions().copied == len(data.sessions)
        after = snapshot(target)
        assert not after.tokens
        assert not after.audit
        assert len(after.kv) == len(data.kv)
        assert len(after.sessions) == len(data.sessions)
        summary = migration.migrate_all(only="audit,tokens")
        assert list(summary.reports) == ["tokens", "audit"]


def test_verify_reports_mismatches(
    backend: str, storage: AuthStorage, make_user: Callable[..., str], settings: Any
) -> None:
    data = populate(storage, make_user)
    with built_storage(second_backend(backend), settings) as inner:

        class Lossy(Delegating):
            """Reads back tokens without metadata and one kv value changed."""

            def get_token(self, token_id: str) -> AuthToken | None:
                found = self.inner.get_token(token_id)
                return None if found is None else replace(found, metadata={})

            def kv_get(self, key: str) -> bytes | None:
                value = self.inner.kv_get(key)
                return b"changed" if key == "plain" else value

        summary = StorageMigration(storage, Lossy(inner), verify=True).migrate_all()
    assert not summary.ok
    token_mismatches = summary["tokens"].mismatches
    assert len(token_mismatches) == len(data.tokens)
    assert all(m.fields == ("metadata",) for m in token_mismatches)
    assert [(m.record_id, m.fields) for m in summary["kv"].mismatches] == [("plain", ("value",))]
    assert summary["sessions"].ok
    assert summary["audit"].ok
    assert "metadata" in str(token_mismatches[0])


def test_bad_arguments(storage: AuthStorage) -> None:
    other = InMemoryStorage()
    try:
        with pytest.raises(InvalidInput, match="same storage"):
            StorageMigration(storage, storage)
        with pytest.raises(InvalidInput, match="batch_size"):
            StorageMigration(storage, other, batch_size=0)
        with pytest.raises(InvalidInput, match="AuthStorage or an alias"):
            StorageMigration(storage, 42)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="Unknown record kinds"):
            StorageMigration(storage, other).migrate_all(only="tokens,passwords")
    finally:
        other.close()
    assert parse_kinds(" kv , tokens ") == ["tokens", "kv"]


# The command ----------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_migrate_command(backend: str, aliases: Any, make_user: Callable[..., str]) -> None:
    storages = aliases(old=backend, new=second_backend(backend))
    populate(storages["old"], make_user)
    before = snapshot(storages["old"])
    out = io.StringIO()
    call_command("authfw_migrate", "--from", "old", "--to", "new", "--verify", stdout=out)
    text = out.getvalue()
    assert "Migrating old -> new" in text
    assert f"copied {len(before.tokens)} of {len(before.tokens)} read" in text
    assert "0 mismatches" in text
    assert "\r" not in text  # no progress bar when stdout is not a terminal
    assert_same_records(
        snapshot(storages["new"]), before, ignore_kv_created_at=not keeps_kv_created_at(backend)
    )

    out = io.StringIO()
    call_command("authfw_migrate", "--from", "old", "--to", "new", stdout=out)
    assert f"{len(before.audit)} already present" in out.getvalue()
    assert snapshot(storages["new"]).audit_count == len(before.audit)


def test_migrate_command_options(backend: str, aliases: Any, make_user: Callable[..., str]) -> None:
    storages = aliases(old=backend, new=second_backend(backend))
    data = populate(storages["old"], make_user, scale=5)
    out = Terminal()
    call_command(
        "authfw_migrate",
        "--from",
        "old",
        "--to",
        "new",
        "--only",
        "kv",
        "--dry-run",
        "--batch-size",
        "2",
        stdout=out,
    )
    assert "\r" in out.getvalue()  # the progress bar, on a terminal
    assert f"would copy {len(data.kv)}" in out.getvalue()
    assert is_empty(storages["new"])

    plain = io.StringIO()
    call_command(
        "authfw_migrate",
        "--from",
        "old",
        "--to",
        "new",
        "--only",
        "kv,sessions",
        "--no-preserve-ttl",
        stdout=plain,
    )
    after = snapshot(storages["new"])
    assert len(after.kv) == len(data.kv)
    assert len(after.sessions) == len(data.sessions)
    assert not after.tokens
    assert not after.audit
    assert "expiries from AUTHFW TTLs" in plain.getvalue()


def test_migrate_command_errors(aliases: Any, make_user: Callable[..., str]) -> None:
    storages = aliases(
        a="memory",
        b={"BACKEND": "tests.test_migration.TokenMetadataLosingStorage"},
    )
    populate(storages["a"], make_user)
    with pytest.raises(CommandError, match="give two different"):
        call_command("authfw_migrate", "--from", "a", "--to", "a")
    with pytest.raises(CommandError, match="Unknown storage alias 'zzz'"):
        call_command("authfw_migrate", "--from", "a", "--to", "zzz")
    with pytest.raises(CommandError, match="--only"):
        call_command("authfw_migrate", "--from", "a", "--to", "b", "--only", "users")
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"Verification found \d+ mismatches"):
        call_command(
            "authfw_migrate",
            "--from",
            "a",
            "--to",
            "b",
            "--verify",
            stdout=io.StringIO(),
            stderr=err,
        )
    assert "mismatch: tokens" in err.getvalue()
    assert "(metadata)" in err.getvalue()


def test_migrate_command_names_the_failing_storage(
    aliases: Any, make_user: Callable[..., str]
) -> None:
    storages = aliases(a="memory", down={"BACKEND": "tests.test_migration.DownStorage"})
    populate(storages["a"], make_user)
    with pytest.raises(CommandError) as caught:
        call_command("authfw_migrate", "--from", "a", "--to", "down", stdout=io.StringIO())
    message = str(caught.value)
    assert "Storage 'down' is unavailable" in message
    assert "Run the same command again" in message


class TokenMetadataLosingStorage(InMemoryStorage):
    """An in-memory store that forgets token metadata on import, for the verify test."""

    def import_tokens(self, tokens: Iterable[AuthToken]) -> int:
        return super().import_tokens([_without_metadata(t) for t in tokens])


def _without_metadata(token: AuthToken) -> AuthToken:
    from django_authfw.records import replace

    return replace(token, metadata={})  # type: ignore[no-any-return]


class DownStorage(InMemoryStorage):
    """Accepts nothing: every import fails as an unreachable server would."""

    def import_tokens(self, tokens: Iterable[AuthToken]) -> int:
        raise StorageUnavailable("connection refused")


def test_progress_bar_shows_rate_and_time_left() -> None:
    """On a terminal the bar shows records per second and, with a total, the time left; each
    kind gets a rate of its own. A clock moved by hand: nothing here depends on timing."""
    from django.core.management.base import OutputWrapper

    from django_authfw.management.progress import ProgressBar, duration

    now = [100.0]
    out = Terminal()
    bar = ProgressBar(OutputWrapper(out), enabled=True, clock=lambda: now[0])
    now[0] = 100.5
    bar.update("tokens", 500, 10_000)  # too early for a rate
    assert out.getvalue().endswith("500/10,000\x1b[K")
    now[0] = 102.0
    bar.update("tokens", 2_000, 10_000)
    assert "2,000/10,000 1,000/s 0:08 left" in out.getvalue()
    now[0] = 110.0
    bar.update("tokens", 10_000, 10_000)
    assert "10,000/10,000 1,000/s\x1b[K" in out.getvalue()  # done: no time left shown
    now[0] = 114.0
    bar.update("sessions", 200, None)  # counted from the last update of tokens
    assert "200 records 50/s\x1b[K" in out.getvalue()
    bar.finish()
    assert out.getvalue().endswith("\r\x1b[K")
    assert [duration(s) for s in (0, 0.2, 59, 61, 3600 * 2 + 5)] == [
        "0:00",
        "0:01",
        "0:59",
        "1:01",
        "2:00:05",
    ]

    quiet = io.StringIO()
    off = ProgressBar(OutputWrapper(quiet), enabled=False, clock=lambda: now[0])
    off.update("tokens", 1, 2)
    off.finish()
    assert quiet.getvalue() == ""


class KVChangingStorage(InMemoryStorage):
    """Reads back one key-value entry with another value and one with another expiry, through
    the batch read verification uses."""

    def _kv_entries(self, keys: Iterable[str]) -> dict[str, KVEntry] | None:
        found = super()._kv_entries(keys)
        assert found is not None
        if "a" in found:
            found["a"] = replace(found["a"], value=b"changed")
        if "b" in found:
            found["b"] = replace(found["b"], expires_at=utcnow() + timedelta(days=9))
        return found


def test_verify_compares_kv_values_and_expiries_batch_by_batch() -> None:
    source, target = InMemoryStorage(), KVChangingStorage()
    try:
        for key in ("a", "b", "c", "d"):
            source.kv_set(key, b"v", ttl=timedelta(hours=1))
        report = StorageMigration(source, target, verify=True, batch_size=3).migrate_kv_data()
    finally:
        source.close()
        target.close()
    assert sorted((m.record_id, m.fields) for m in report.mismatches) == [
        ("a", ("value",)),
        ("b", ("expires_at",)),
    ]
    assert report.verified == 2
