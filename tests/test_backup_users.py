"""Restores match users by username (USERNAME_FIELD), never by primary key alone.

A primary key names a different person in another database, or in the same one after users were
deleted and created again. The scenario, on every backend, through the Python API and the
commands: after the backup,

* ``alice`` was deleted and created again: same username, another id (records move to it);
* ``bob`` is unchanged (records restored as they were);
* ``carol`` was deleted and ``mallory`` now holds carol's old id (carol's records must not go
  to mallory: skipped and reported);
* ``dave`` was deleted (skipped and reported).

``test_sqlite_and_postgresql_databases`` does the same across two real databases (the run's
default database and the in-memory SQLite ``authfw_second``).
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from django_authfw.backup import BackupError, RestoreReport, restore_backup
from django_authfw.records import AuditEvent, AuthToken, SessionData
from django_authfw.storage import AuthStorage, DatabaseStorage
from django_authfw.wording import counted

from . import ops_support
from .factories import AuthTokenFactory
from .ops_support import is_empty

aliases = ops_support.aliases

SECOND = "authfw_second"  # testproject/settings.py
NAMES = ("alice", "bob", "carol", "dave")


def create_user(username: str, db: str = "default", pk: Any = None) -> str:
    manager = get_user_model()._default_manager.db_manager(db)
    if pk is None:
        return str(manager.create_user(username=username).pk)
    user = manager.model(pk=pk, username=username)
    user.set_unusable_password()
    user.save(using=db, force_insert=True)
    return str(user.pk)


def delete_user(user_id: str, db: str = "default") -> None:
    get_user_model()._default_manager.db_manager(db).filter(pk=user_id).delete()


@dataclass
class Stored:
    """The records stored for each user (by username), and the users' ids at backup time."""

    ids: dict[str, str]
    tokens: dict[str, AuthToken] = field(default_factory=dict)
    sessions: dict[str, SessionData] = field(default_factory=dict)
    audit: dict[str, AuditEvent] = field(default_factory=dict)


def store_records(storage: AuthStorage, ids: dict[str, str]) -> Stored:
    stored = Stored(ids=ids)
    for name, user_id in ids.items():
        token = AuthTokenFactory.build(user_id=user_id)
        storage.store_token(token)
        stored.tokens[name] = token
        session = SessionData(session_id=f"s-{uuid.uuid4().hex}", user_id=user_id)
        storage.store_session(session)
        stored.sessions[name] = session
        event = AuditEvent(action="login", outcome=True, user_id=user_id)
        storage.append_audit(event)
        stored.audit[name] = event
    storage.append_audit(AuditEvent(action="login", outcome=False, metadata={"username": "x"}))
    storage.kv_set("k", b"v")
    return stored


def change_users(stored: Stored, db: str = "default") -> dict[str, str]:
    """Apply the scenario of the module docstring; return the ids now (alice, bob, mallory)."""
    ids = stored.ids
    delete_user(ids["alice"], db)
    now = {"alice": create_user("alice", db), "bob": ids["bob"]}
    delete_user(ids["carol"], db)
    now["mallory"] = create_user("mallory", db, pk=int(ids["carol"]))
    delete_user(ids["dave"], db)
    assert now["alice"] != ids["alice"]
    assert now["mallory"] == ids["carol"]
    return now


def all_of(storage: AuthStorage) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    tokens = {t.token_id: t for b in storage.iter_tokens() for t in b}
    sessions = {s.session_id: s for b in storage.iter_sessions() for s in b}
    audit = {e.event_id: e for b in storage.iter_audit() for e in b}
    return tokens, sessions, audit


def check_restored(storage: AuthStorage, stored: Stored, now: dict[str, str]) -> None:
    tokens, sessions, audit = all_of(storage)
    # Nothing of carol's goes to mallory, who holds her old id; nothing of dave's comes back.
    for name in ("carol", "dave"):
        assert stored.tokens[name].token_id not in tokens, name
        assert stored.sessions[name].session_id not in sessions, name
        event = audit[stored.audit[name].event_id]  # history is kept, without a user
        assert event.user_id is None
        assert event.metadata["backup_user"] == {"user_id": stored.ids[name], "username": name}
    # alice's records follow her username to her new id; bob's are as they were.
    assert tokens[stored.tokens["alice"].token_id].user_id == now["alice"]
    assert sessions[stored.sessions["alice"].session_id].user_id == now["alice"]
    assert audit[stored.audit["alice"].event_id].user_id == now["alice"]
    assert tokens[stored.tokens["bob"].token_id] == stored.tokens["bob"]
    assert sessions[stored.sessions["bob"].session_id] == stored.sessions["bob"]
    assert {t.user_id for t in tokens.values()} == {now["alice"], now["bob"]}
    assert {s.user_id for s in sessions.values()} == {now["alice"], now["bob"]}
    assert now["mallory"] not in {e.user_id for e in audit.values()}


def check_report(report: RestoreReport, stored: Stored, now: dict[str, str]) -> None:
    one_each = {"tokens": 1, "sessions": 1, "kv": 0, "audit": 0}
    assert report.remapped == {"tokens": 1, "sessions": 1, "kv": 0, "audit": 1}
    assert report.skipped_user_id_taken == one_each  # carol
    assert report.skipped_missing_user == one_each  # dave
    assert report.unattributed == {"tokens": 0, "sessions": 0, "kv": 0, "audit": 2}
    assert report.skipped_orphans == {"tokens": 0, "sessions": 0, "kv": 0, "audit": 0}
    assert report.written == {"tokens": 2, "sessions": 2, "kv": 1, "audit": 5}
    changes = {c.username: c for c in report.user_changes}
    assert set(changes) == {"alice", "carol", "dave"}
    assert (changes["alice"].outcome, changes["alice"].target_user_id) == ("remapped", now["alice"])
    assert (changes["carol"].outcome, changes["carol"].holder_of_id) == ("id_taken", "mallory")
    assert changes["dave"].outcome == "missing"
    assert changes["dave"].records == {"tokens": 1, "sessions": 1, "kv": 0, "audit": 1}


def test_restore_maps_users_by_username(storage: AuthStorage, db: None, tmp_path: Path) -> None:
    stored = store_records(storage, {name: create_user(name) for name in NAMES})
    path = tmp_path / "b.gz"
    storage.create_backup(path)
    storage.flush()
    now = change_users(stored)
    storage.flush()  # what deleting users wrote (audit events): the target starts empty

    report = restore_backup(storage, path)
    check_restored(storage, stored, now)
    check_report(report, stored, now)


def test_restore_command_maps_users_and_says_so(backend: str, aliases: Any, tmp_path: Path) -> None:
    main = aliases(main=backend)["main"]
    stored = store_records(main, {name: create_user(name) for name in NAMES})
    path = tmp_path / "cmd.gz"
    call_command("authfw_backup", str(path), "--storage", "main", stdout=io.StringIO())
    now = change_users(stored)
    main.flush()

    out = io.StringIO()
    call_command("authfw_restore", str(path), "--storage", "main", stdout=out)
    text = out.getvalue()
    check_restored(main, stored, now)
    ids = stored.ids
    assert f"'alice': id {ids['alice']} in the backup is id {now['alice']} here" in text
    assert (
        f"'carol' (id {ids['carol']} in the backup): no such user here, and id {ids['carol']} "
        "here is 'mallory'; not given to them: 1 token, 1 session, 1 audit event." in text
    )
    assert f"'dave' (id {ids['dave']} in the backup): no such user here" in text
    assert "restored 2 of 4, 1 skipped (no user with that username here), 1 skipped" in text
    assert "1 moved to their username's id here" in text
    assert "2 kept without a user" in text


def test_records_of_users_already_gone_at_backup_time(
    storage: AuthStorage, db: None, tmp_path: Path
) -> None:
    # Only a storage without a foreign key can hold them (memory, Redis): the backup cannot
    # name their user, so a restore cannot give them to anyone.
    if isinstance(storage, DatabaseStorage):
        pytest.skip("a database storage cannot hold records of a user that does not exist")
    ghost = create_user("ghost")
    stored = store_records(storage, {"ghost": ghost})
    delete_user(ghost)
    path = tmp_path / "b.gz"
    storage.create_backup(path)
    storage.flush()
    report = restore_backup(storage, path)
    assert report.skipped_missing_user["tokens"] == 1
    assert report.skipped_missing_user["sessions"] == 1
    assert [c.outcome for c in report.user_changes] == ["no_username"]
    tokens, sessions, _audit = all_of(storage)
    assert stored.tokens["ghost"].token_id not in tokens
    assert not sessions


def test_restore_command_says_truly_what_became_of_users_gone_at_backup_time(
    backend: str, aliases: Any, tmp_path: Path
) -> None:
    main = aliases(main=backend)["main"]
    if isinstance(main, DatabaseStorage):
        pytest.skip("a database storage cannot hold records of a user that does not exist")
    ghost = create_user("ghost")
    store_records(main, {"ghost": ghost})
    delete_user(ghost)
    path = tmp_path / "b.gz"
    call_command("authfw_backup", str(path), "--storage", "main", stdout=io.StringIO())
    main.flush()
    out = io.StringIO()
    call_command("authfw_restore", str(path), "--storage", "main", stdout=out)
    # Its audit events are restored (without a user): the line must not call them "not
    # restored". (Deleting the user already deleted its tokens and sessions in "main".)
    kept = [e for e in all_of(main)[2].values() if "backup_user" in e.metadata]
    assert kept
    assert all(e.user_id is None for e in kept)
    assert (
        f"(unknown username) (id {ghost} in the backup, already deleted when it was written): "
        f"kept without a user: {counted(len(kept), 'audit event')}."
    ) in out.getvalue()


@pytest.mark.django_db(databases=["default", SECOND])
def test_sqlite_and_postgresql_databases(aliases: Any, tmp_path: Path) -> None:
    """The issue's case: a backup of one database restored into another one (with the run on
    PostgreSQL, from PostgreSQL into SQLite; with the SQLite run, SQLite into SQLite)."""
    storages = aliases(
        main={"BACKEND": "django_authfw.storage.DatabaseStorage"},
        second={"BACKEND": "django_authfw.storage.DatabaseStorage", "OPTIONS": {"using": SECOND}},
    )
    main, second = storages["main"], storages["second"]
    stored = store_records(main, {name: create_user(name) for name in NAMES})
    path = tmp_path / "cross.gz"
    call_command("authfw_backup", str(path), "--storage", "main", stdout=io.StringIO())

    # The second database has its own users, created in its own order: alice and bob have
    # other ids there, carol's id is mallory's, dave does not exist.
    ids = stored.ids
    now = {
        "mallory": create_user("mallory", SECOND, pk=int(ids["carol"])),
        "bob": create_user("bob", SECOND, pk=int(ids["bob"]) + 1000),
        "alice": create_user("alice", SECOND, pk=int(ids["alice"]) + 2000),
    }
    assert is_empty(second)
    out = io.StringIO()
    call_command("authfw_restore", str(path), "--storage", "second", stdout=out)
    tokens, sessions, audit = all_of(second)
    # Not carol's token to mallory, who has carol's id in the second database.
    assert stored.tokens["carol"].token_id not in tokens
    assert tokens[stored.tokens["alice"].token_id].user_id == now["alice"]
    assert tokens[stored.tokens["bob"].token_id].user_id == now["bob"]
    assert sessions[stored.sessions["bob"].session_id].user_id == now["bob"]
    assert {t.user_id for t in tokens.values()} == {now["alice"], now["bob"]}
    assert now["mallory"] not in {e.user_id for e in audit.values()}
    assert "here is 'mallory'; not given to them" in out.getvalue()


def test_many_users_in_one_batch(storage: AuthStorage, db: None, tmp_path: Path) -> None:
    # More users in one batch than one query takes (backup_users.CHUNK): every one is found.
    model = get_user_model()
    users = model._default_manager.bulk_create(
        [model(username=f"bulk-{i}", password="!") for i in range(1200)]
    )
    ids = [str(user.pk) for user in model._default_manager.filter(username__startswith="bulk-")]
    assert len(ids) == len(users)
    storage.import_tokens([AuthTokenFactory.build(user_id=user_id) for user_id in ids])
    path = tmp_path / "many.gz"
    storage.create_backup(path)
    storage.flush()
    report = restore_backup(storage, path, batch_size=1200)
    assert report.written["tokens"] == 1200
    assert report.user_changes == []
    assert report.remapped["tokens"] == 0


def test_another_username_field_is_refused(
    storage: AuthStorage, db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_records(storage, {"alice": create_user("alice")})
    path = tmp_path / "b.gz"
    storage.create_backup(path)
    storage.flush()
    # As if the project had since swapped to a user model that logs in by email.
    monkeypatch.setattr("django_authfw.backup.username_field", lambda: "email")
    with pytest.raises(BackupError, match=r"names users by 'username' .* by 'email'"):
        restore_backup(storage, path)
    assert is_empty(storage)
