"""``Session.id_digest``: the admin's key for a session (issue 13). Every write sets it, migration
0005 fills the rows written before it, and a session written any way is reachable in the admin
by it."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from django_authfw import AuthFramework
from django_authfw.backup import restore_backup, write_backup
from django_authfw.models import Session
from django_authfw.records import SessionData, replace, utcnow
from django_authfw.storage import DatabaseStorage
from django_authfw.storage.database.rows import session_id_digest
from django_authfw.tokens import new_id, shown_session_id

from .http_support import fast_hashing, user_factory

__all__ = ["fast_hashing", "user_factory"]

SESSIONS = "/admin/django_authfw/session/"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def root(user_factory: Any) -> Client:
    client = Client()
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


def assert_reachable(client: Client, session: SessionData) -> None:
    """The row has the digest of its id, and the admin opens it by that digest."""
    stored = Session.objects.values_list("id_digest", flat=True).get(pk=session.session_id)
    assert stored == sha256(session.session_id) == session_id_digest(session.session_id)
    page = client.get(f"{SESSIONS}{stored}/change/")
    assert page.status_code == 200
    assert shown_session_id(session.session_id) in page.content.decode()
    assert session.session_id not in page.content.decode()


def test_the_digest_is_sha256_hex() -> None:
    assert session_id_digest("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("fast", [True, False], ids=["fast_sql", "orm"])
def test_every_write_sets_the_digest(
    fast: bool, root: Client, user_factory: Any, tmp_path: Path
) -> None:
    storage = DatabaseStorage(fast_sql=fast)
    framework = AuthFramework(storage)
    user = user_factory(username="writer")
    created = framework.create_session(user, {"n": 1})
    assert_reachable(root, created)
    # Written again (the upsert's UPDATE) and touched: the digest stays the id's.
    storage.store_session(replace(created, data={"n": 2}))
    assert storage.touch_session(created.session_id, at=utcnow())
    assert_reachable(root, created)
    # A bulk import (authfw_migrate, restore): a new row and an overwritten one.
    imported = replace(created, session_id=new_id())
    assert storage.import_sessions([imported, replace(created, user_agent="x")]) == 2
    assert_reachable(root, imported)
    assert_reachable(root, created)
    # A restore, replacing what the storage holds.
    path = tmp_path / "backup.jsonl"
    write_backup(storage, path)
    restore_backup(storage, path, if_not_empty="replace")
    assert Session.objects.count() == 2
    for session in (created, imported):
        assert_reachable(root, session)
    assert not Session.objects.filter(id_digest="").exists()


def _migration_module() -> Any:
    return importlib.import_module("django_authfw.migrations.0005_session_id_digest")


def _columns() -> dict[str, Any]:
    with connection.cursor() as cursor:
        table = Session._meta.db_table
        return {
            column.name: column
            for column in connection.introspection.get_table_description(cursor, table)
        }


def _constraints() -> dict[str, Any]:
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, Session._meta.db_table)


@pytest.mark.django_db(transaction=True)
def test_migration_0005_goes_back_and_forth_and_fills_existing_rows(
    user_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches, so that several pages (and a last, short one) are filled.
    monkeypatch.setattr(_migration_module(), "BATCH_SIZE", 2)
    framework = AuthFramework(DatabaseStorage())
    user = user_factory(username="before")
    sessions = [framework.create_session(user) for _ in range(5)]
    assert _constraints()["idx_sessions_id_digest"]["unique"]
    try:
        call_command("migrate", "django_authfw", "0004", verbosity=0)
        assert "id_digest" not in _columns()
        assert "idx_sessions_id_digest" not in _constraints()
        # The rows are still there, without a digest.
        assert Session.objects.values_list("session_id").count() == 5
    finally:
        call_command("migrate", "django_authfw", verbosity=0)
    assert not _columns()["id_digest"].null_ok
    assert _constraints()["idx_sessions_id_digest"]["unique"]
    stored = dict(Session.objects.values_list("session_id", "id_digest"))
    assert stored == {s.session_id: sha256(s.session_id) for s in sessions}


@pytest.mark.django_db(transaction=True)
def test_migration_0005_on_an_empty_table() -> None:
    try:
        call_command("migrate", "django_authfw", "0004", verbosity=0)
    finally:
        call_command("migrate", "django_authfw", verbosity=0)
    assert _constraints()["idx_sessions_id_digest"]["unique"]
