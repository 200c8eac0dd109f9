"""A process that is not a request cycle gets a working connection back after losing one.

Django drops a broken connection only at the start and end of a request; a worker or a consumer
calling ``verify_token`` in a loop never gets there. DatabaseStorage closes a connection that an
error left unusable, so the next call connects again (issue 10, item 9). The server restart
itself is in ``tests/faults/test_postgres_restart.py``; here the test database's server kills
our own backend (``pg_terminate_backend`` of this connection's pid only), as a restart does to
every connection.
"""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest
from django.db import connection, transaction

from django_authfw import AuthFramework
from django_authfw.exceptions import StorageError, StorageUnavailable
from django_authfw.storage import DatabaseStorage

from .factories import PASSWORD, AuthTokenFactory, UserFactory

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="kills a PostgreSQL backend; the PostgreSQL run covers it",
    ),
    # Autocommit, as in a worker: no test transaction around the calls, and the connection may
    # be opened again. Rows are committed, and flushed after each test.
    pytest.mark.django_db(transaction=True),
]


def kill_our_backend() -> None:
    """Terminate the server process behind this thread's default connection.

    From a separate psycopg connection with the same parameters; only our own pid.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as killer:
        killed = killer.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()
    assert killed == (True,)


def test_verify_token_reconnects_after_the_backend_is_killed() -> None:
    storage = DatabaseStorage()
    auth = AuthFramework(storage=storage, audit_storage=storage)
    user = UserFactory.create()
    issued = auth.authenticate(user.username, PASSWORD)
    assert auth.verify_token(issued.access_token).user_id == str(user.pk)

    errors = []
    for _ in range(3):  # three losses in a row: each is followed by a fresh connection
        kill_our_backend()
        with pytest.raises(StorageUnavailable) as raised:
            auth.verify_token(issued.access_token)
        errors.append(raised.value)
        assert connection.connection is None  # dropped, not kept for the next call
        # The next call, in the same process and thread, connects again: no restart needed.
        assert auth.verify_token(issued.access_token).user_id == str(user.pk)
    assert len(errors) == 3


def test_orm_queries_reconnect_too() -> None:
    # Statements on Django's own cursor (not the verification fast path) recover the same way.
    storage = DatabaseStorage()
    user_id = str(UserFactory.create().pk)
    storage.kv_set("k", b"v")
    kill_our_backend()
    with pytest.raises(StorageUnavailable):
        storage.list_user_tokens(user_id)
    assert storage.kv_get("k") == b"v"
    kill_our_backend()
    with pytest.raises(StorageUnavailable):
        storage.kv_set("k", b"w")
    assert storage.kv_get("k") == b"v"


def test_sound_connection_is_kept_after_an_ordinary_error() -> None:
    # A refused write (a token of a user that does not exist) leaves the connection alone.
    storage = DatabaseStorage()
    storage.kv_set("k", b"v")
    raw = connection.connection
    with pytest.raises(StorageError) as raised:
        storage.store_token(AuthTokenFactory.build(user_id="987654321"))
    assert not isinstance(raised.value, StorageUnavailable)
    assert connection.connection is raw
    assert storage.kv_get("k") == b"v"


def test_inside_atomic_the_block_drops_the_dead_connection() -> None:
    # Within atomic() the storage leaves the connection to the block (a test query would fail
    # on any aborted transaction): the block's rollback fails on the dead connection, Django
    # drops it, and the connection it opens again to restore autocommit works.
    storage = DatabaseStorage()
    storage.kv_set("k", b"v")
    # The error may come from kv_get or from the block's rollback on exit: both are inside.
    with pytest.raises(StorageUnavailable), transaction.atomic():  # noqa: PT012
        raw = connection.connection
        kill_our_backend()
        storage.kv_get("k")
    assert connection.connection is not raw
    assert storage.kv_get("k") == b"v"


def test_inside_atomic_an_ordinary_error_keeps_the_transaction_to_the_caller() -> None:
    # An error inside the caller's transaction neither closes the connection nor ends the
    # block early: the caller's atomic() rolls back as usual.
    storage = DatabaseStorage()
    token = AuthTokenFactory.build(user_id=str(UserFactory.create().pk))
    with transaction.atomic():
        raw = connection.connection
        storage.kv_set("kept-out", b"v")
        storage.store_token(token)
        with pytest.raises(StorageError), transaction.atomic():
            storage.store_token(token)  # the same token_id again: a unique violation
        assert connection.connection is raw
        assert storage.kv_get("kept-out") == b"v"
    assert connection.connection is raw


def test_async_user_lookups_reconnect_in_the_connections_thread() -> None:
    """Under ASGI the event loop's thread holds no connection: the async user lookups must drop
    the broken connection in the thread that owns it (asgiref's sync thread), or every later
    lookup of that long-lived process fails."""
    from asgiref.sync import sync_to_async

    from django_authfw.users import aload_active_user

    user_id = str(UserFactory.create().pk)
    outcomes: list[object] = []

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    async def scenario() -> None:
        try:
            assert await aload_active_user(user_id) is not None
            pid = await sync_to_async(backend_pid)()
            with psycopg.connect(**params, autocommit=True) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", [pid])
            for _ in range(2):
                try:
                    outcomes.append(await aload_active_user(user_id))
                except StorageUnavailable as exc:
                    outcomes.append(exc)
        finally:
            # Resolved in the sync thread: that thread's connection, not the loop thread's.
            await sync_to_async(lambda: connection.close())()

    params = connection.get_connection_params()
    # A loop in a thread of its own, as an ASGI server runs it: thread-sensitive calls then go
    # to asgiref's sync thread, not to the loop's.
    loop_thread = threading.Thread(target=asyncio.run, args=(scenario(),))
    loop_thread.start()
    loop_thread.join()
    assert isinstance(outcomes[0], StorageUnavailable)
    assert getattr(outcomes[1], "pk", None) == int(user_id)  # reconnected
