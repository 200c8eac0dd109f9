"""``authfw_cleanup`` on every backend: dry run, batches, counts, nothing to do, failures."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_authfw.exceptions import StorageUnavailable
from django_authfw.records import CleanupCounts
from django_authfw.storage import InMemoryStorage

from . import ops_support
from .ops_support import (
    add_expiring,
    native_expiry,
    populate,
    snapshot,
    wait_past,
)

aliases = ops_support.aliases  # the fixture, shared by the operations tests


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("authfw_cleanup", *args, stdout=out)
    return out.getvalue()


def test_cleanup_removes_expired_records(
    backend: str, aliases: Any, make_user: Callable[..., str]
) -> None:
    storage = aliases(main=backend)["main"]
    populate(storage, make_user)
    live = snapshot(storage)
    add_expiring(storage, make_user(), count=3)
    wait_past()

    if native_expiry(storage):
        # Redis has dropped them by itself: there is nothing left for cleanup to do.
        assert run("--storage", "main") == (
            "main: nothing to clean up (its backend expires records by itself).\n"
        )
    else:
        dry = run("--storage", "main", "--dry-run")
        assert dry == "main: would remove 3 tokens, 3 sessions, 3 key-value entries.\n"
        # The dry run removed nothing: the real run still finds all of them.
        assert run("--storage", "main", "--batch-size", "2") == (
            "main: removed 3 tokens, 3 sessions, 3 key-value entries.\n"
        )
        assert run("--storage", "main") == "main: nothing to clean up.\n"
    after = snapshot(storage)
    assert after.tokens == live.tokens
    assert after.sessions == live.sessions
    assert after.kv.keys() == live.kv.keys()
    assert after.audit == live.audit


def test_cleanup_every_alias_by_default(
    backend: str, aliases: Any, make_user: Callable[..., str]
) -> None:
    second = "memory" if backend != "memory" else "locmem"
    storages = aliases(first=backend, second=second)
    for storage in storages.values():
        add_expiring(storage, make_user(), count=1)
    wait_past()
    lines = run().splitlines()
    assert [line.split(":")[0] for line in lines] == ["first", "second"]
    for line, storage in zip(lines, storages.values(), strict=True):
        expected = "nothing to clean up" if native_expiry(storage) else "removed 1 token,"
        assert expected in line


def test_one_singular(aliases: Any, make_user: Callable[..., str]) -> None:
    storage = aliases(main="memory")["main"]
    add_expiring(storage, make_user(), count=1)
    wait_past()
    assert run("--dry-run") == "main: would remove 1 token, 1 session, 1 key-value entry.\n"


def test_unknown_alias(aliases: Any) -> None:
    aliases(main="memory")
    with pytest.raises(CommandError, match=r"Unknown storage alias 'other'.*defines: main"):
        run("--storage", "other")


def test_bad_batch_size(aliases: Any) -> None:
    aliases(main="memory")
    with pytest.raises(CommandError, match="at least 1"):
        run("--batch-size", "0")


class DownStorage(InMemoryStorage):
    """A storage whose service is unreachable."""

    def cleanup_expired(self, *, batch_size: int = 1000, dry_run: bool = False) -> CleanupCounts:
        raise StorageUnavailable("connection refused")


def test_storage_down_fails_after_cleaning_the_others(
    aliases: Any, make_user: Callable[..., str]
) -> None:
    storages = aliases(down={"BACKEND": "tests.test_cleanup_command.DownStorage"}, ok="memory")
    add_expiring(storages["ok"], make_user(), count=1)
    wait_past()
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=r"Storage 'down' is unavailable.*Check that"):
        call_command("authfw_cleanup", stdout=out, stderr=err)
    assert out.getvalue() == "ok: removed 1 token, 1 session, 1 key-value entry.\n"


def test_real_redis_down(aliases: Any, settings: Any) -> None:
    # A django-redis cache pointing at a loopback port nobody listens on.
    settings.CACHES = {
        **settings.CACHES,
        "authfw-ops-down": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/15",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        },
    }
    aliases(
        down={
            "BACKEND": "django_authfw.storage.CacheStorage",
            "OPTIONS": {"cache": "authfw-ops-down", "key_prefix": "authfw-ops-down:"},
        }
    )
    with pytest.raises(CommandError, match="Storage 'down' is unavailable"):
        run("--storage", "down")


@pytest.mark.parametrize(("count", "batch"), [(4, 2), (5, 2), (3, 1), (3, 1000)])
def test_database_cleanup_deletes_exactly_the_expired_rows_in_rounds(
    aliases: Any, make_user: Callable[..., str], count: int, batch: int
) -> None:
    # One DELETE ... IN (SELECT ... LIMIT n) per round on PostgreSQL and SQLite: a count that
    # is a multiple of the batch, one that is not, batches of one; live rows all kept.
    storage = aliases(main="database")["main"]
    populate(storage, make_user)
    live = snapshot(storage)
    add_expiring(storage, make_user(), count=count)
    wait_past()
    assert run("--storage", "main", "--batch-size", str(batch)) == (
        f"main: removed {count} tokens, {count} sessions, {count} key-value entries.\n"
    )
    after = snapshot(storage)
    assert after.tokens == live.tokens
    assert after.sessions == live.sessions
    assert after.kv.keys() == live.kv.keys()
    assert run("--storage", "main") == "main: nothing to clean up.\n"


def test_database_cleanup_keeps_a_row_that_stopped_matching(
    aliases: Any, make_user: Callable[..., str]
) -> None:
    # The filter is in the DELETE itself, not only in the SELECT of keys: a row of the table
    # that does not match (here, never expiring) is never removed by a round.
    from django_authfw.storage.database.models import Session
    from django_authfw.storage.database.queries import delete_in_batches

    storage = aliases(main="database")["main"]
    user = make_user()
    add_expiring(storage, user, count=3)
    wait_past()
    kept = Session.objects.filter(user_id=user).order_by("session_id").first()
    assert kept is not None
    Session.objects.filter(pk=kept.pk).update(expires_at=None)
    from django_authfw.records import utcnow

    expired = Session.objects.filter(expires_at__lte=utcnow())
    assert delete_in_batches(expired, 1) == 2
    assert list(Session.objects.filter(user_id=user).values_list("pk", flat=True)) == [kept.pk]
