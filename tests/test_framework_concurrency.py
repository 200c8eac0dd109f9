"""Concurrent use of AuthFramework: many registrations and logins at once (threads on
PostgreSQL, asyncio on every backend), and concurrent refreshes of one refresh token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import connection

from django_authfw import AuthFramework
from django_authfw.exceptions import TokenRevoked
from django_authfw.storage import AuthStorage, DatabaseStorage
from django_authfw.tokens import IssuedToken

from .framework_support import (  # noqa: F401  (fixtures are used by name)
    PASSWORD,
    counting_hasher_fixture,
)

User = get_user_model()

USERS = 100
THREADS = 20  # 100 calls on 20 threads: PostgreSQL's 100 connections are shared by the suite

needs_server_database = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="threads writing at once need a server database; SQLite serialises writers",
)


def check_outcome(storage: AuthStorage, issued: dict[int, IssuedToken]) -> None:
    """Every login produced one verifiable token, and every user index holds exactly it."""
    auth = AuthFramework(storage=storage, audit_storage=storage)
    assert sorted(issued) == list(range(USERS))
    assert len({t.access_token for t in issued.values()}) == USERS
    for i, token in issued.items():
        record = auth.verify_token(token.access_token)
        assert record.token_id == token.token_id
        assert [t.token_id for t in storage.list_user_tokens(token.user_id)] == [token.token_id]
        assert User.objects.get(pk=token.user_id).get_username() == f"user-{i}"
    assert storage.statistics()["total_tokens"] == USERS
    assert storage.count_audit(action="register") == USERS
    assert storage.count_audit(action="login", outcome=True) == USERS


def run_in_threads(work: Callable[[int], None], count: int, threads: int) -> list[BaseException]:
    """Run ``work(i)`` for ``i`` in ``range(count)`` on ``threads`` threads started together."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(offset: int) -> None:
        try:
            barrier.wait()
            for i in range(offset, count, threads):
                work(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection; give it back

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=300)
    return errors


@needs_server_database
@pytest.mark.django_db(transaction=True)
def test_concurrent_register_and_login_in_threads(storage: AuthStorage) -> None:
    auth = AuthFramework(storage=storage, audit_storage=storage)
    issued: dict[int, IssuedToken] = {}

    def register_and_login(i: int) -> None:
        auth.register_user(f"user-{i}", PASSWORD)
        issued[i] = auth.authenticate(f"user-{i}", PASSWORD)

    assert run_in_threads(register_and_login, USERS, THREADS) == []
    check_outcome(storage, issued)


def test_concurrent_register_and_login_with_asyncio(storage: AuthStorage) -> None:
    auth = AuthFramework(storage=storage, audit_storage=storage)

    async def register_and_login(i: int) -> tuple[int, IssuedToken]:
        await auth.aregister_user(f"user-{i}", PASSWORD)
        return i, await auth.aauthenticate(f"user-{i}", PASSWORD)

    async def everyone() -> dict[int, IssuedToken]:
        results = await asyncio.gather(*(register_and_login(i) for i in range(USERS)))
        for _, token in results:
            assert (await auth.averify_token(token.access_token)).token_id == token.token_id
        return dict(results)

    check_outcome(storage, async_to_sync(everyone)())


def check_single_winner(
    storage: AuthStorage, outcomes: list[Any], family_tokens: list[IssuedToken]
) -> None:
    """Exactly one refresh won; the others were treated as reuse and ended the family."""
    winners = [o for o in outcomes if isinstance(o, IssuedToken)]
    losers = [o for o in outcomes if isinstance(o, TokenRevoked)]
    assert len(winners) == 1, outcomes
    assert len(losers) == len(outcomes) - 1, outcomes
    auth = AuthFramework(storage=storage, audit_storage=storage)
    for token in [*family_tokens, *winners]:
        with pytest.raises(TokenRevoked):
            auth.verify_token(token.access_token)
    assert storage.count_audit(action="refresh", outcome=True) == 1
    assert storage.count_audit(action="refresh_reuse") == len(losers)


def test_concurrent_refreshes_of_one_token_with_asyncio(storage: AuthStorage) -> None:
    auth = AuthFramework(storage=storage, audit_storage=storage)
    auth.register_user("alice", PASSWORD)
    issued = auth.authenticate("alice", PASSWORD)

    async def race() -> list[Any]:
        return list(
            await asyncio.gather(
                *(auth.arefresh(issued.refresh_token or "") for _ in range(10)),
                return_exceptions=True,
            )
        )

    check_single_winner(storage, async_to_sync(race)(), [issued])


@needs_server_database
@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_of_one_token_in_threads(storage: AuthStorage) -> None:
    auth = AuthFramework(storage=storage, audit_storage=storage)
    auth.register_user("alice", PASSWORD)
    issued = auth.authenticate("alice", PASSWORD)
    outcomes: list[Any] = []

    def refresh(_: int) -> None:
        try:
            outcomes.append(auth.refresh(issued.refresh_token or ""))
        except TokenRevoked as exc:
            outcomes.append(exc)

    assert run_in_threads(refresh, 10, 10) == []
    check_single_winner(storage, outcomes, [issued])
    if isinstance(storage, DatabaseStorage):
        assert connection.vendor == "postgresql"


_REVOKE_ELSEWHERE = """
import sys
import django

django.setup()
from django_authfw.records import utcnow
from django_authfw.storage import DatabaseStorage, RedisStorage

kind, token_id, url, prefix = sys.argv[1:]
storage = DatabaseStorage() if kind == "database" else RedisStorage(url=url, key_prefix=prefix)
print(storage.revoke_token(token_id, at=utcnow()))
"""


@needs_server_database
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["database", "redis"])
def test_a_revocation_in_another_process_is_seen_at_once(kind: str) -> None:
    """No cache between the storage and verification: the next verify in this process, right
    after another process revoked the token, refuses it."""
    import os
    import subprocess
    import sys
    import uuid

    from .backends import REDIS_TEST_URL, RUN_ID

    if kind == "database":
        storage: AuthStorage = DatabaseStorage()
        prefix = ""
    else:
        from django_authfw.storage import RedisStorage

        prefix = f"authfw-test:{RUN_ID}:{uuid.uuid4().hex[:12]}:"
        storage = RedisStorage(url=REDIS_TEST_URL, key_prefix=prefix)
    auth = AuthFramework(storage=storage)
    auth.register_user("ann", PASSWORD)
    issued = auth.authenticate("ann", PASSWORD)
    assert auth.verify_token(issued.access_token)
    # The other process uses this run's test database, not the one DATABASE_URL names.
    settings_dict = connection.settings_dict
    url = (
        f"postgres://{settings_dict['USER']}@{settings_dict['HOST'] or '127.0.0.1'}:"
        f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
    )
    done = subprocess.run(
        [sys.executable, "-c", _REVOKE_ELSEWHERE, kind, issued.token_id, REDIS_TEST_URL, prefix],
        env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "testproject.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.strip() == "True", done.stderr
    with pytest.raises(TokenRevoked):
        auth.verify_token(issued.access_token)
    if kind == "redis":
        storage.flush()
