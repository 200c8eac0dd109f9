"""Hostile review of issue 14: the token joined to its user, the user snapshot, the shared
framework, the Redis layout, prepared statements and frozen tokens.

Every way of changing a user is tried against both request.user paths: the database storage's
one-query join (it reads the user row live, so any change is seen by the next request) and the
snapshot on the other storages (stale for the changes that bypass the signals, until the token
is revoked or expires, as docs/middleware.md says).
"""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Manager
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import include, path

from django_authfw import AuthFramework
from django_authfw.decorators import bearer_required
from django_authfw.exceptions import InvalidToken
from django_authfw.models import Token
from django_authfw.request_user import TokenUser
from django_authfw.storage.database import fast_sql

from .http_support import (
    bearer,
    body,
    default_storage_backend,
    fast_hashing,
    http_backends,
    login,
    storages_for,
    user_factory,
)

__all__ = ["default_storage_backend", "fast_hashing", "login", "user_factory"]

User = get_user_model()


@bearer_required
def who(request: HttpRequest) -> JsonResponse:
    user = request.user
    return JsonResponse({"pk": user.pk, "active": user.is_active})


@bearer_required
def who_named(request: HttpRequest) -> JsonResponse:
    user = request.user
    return JsonResponse({"username": user.get_username(), "authenticated": user.is_authenticated})


urlpatterns = [
    path("who/", who),
    path("named/", who_named),
    path("", include("testproject.urls")),
]

pytestmark = pytest.mark.urls(__name__)


def get(client: Client, url: str, token: str) -> Any:
    return client.get(url, **bearer(token))


# The database join: any change to the user row is seen by the very next request ----------------


def _deactivate_by_update(user: Any) -> None:
    User.objects.filter(pk=user.pk).update(is_active=False)


def _deactivate_by_bulk_update(user: Any) -> None:
    user.is_active = False
    User.objects.bulk_update([user], ["is_active"])


def _deactivate_by_raw_sql(user: Any) -> None:
    table = connection.ops.quote_name(User._meta.db_table)
    column = connection.ops.quote_name(str(User._meta.get_field("is_active").column))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [False, user.pk])


def _delete_by_raw_sql(user: Any) -> None:
    # The token table's foreign key is checked at commit (deferred) on PostgreSQL, and not
    # enforced by SQLite's default settings here: inside the test transaction the row goes.
    table = connection.ops.quote_name(User._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [user.pk])


SIGNAL_LESS = {
    "QuerySet.update": _deactivate_by_update,
    "bulk_update": _deactivate_by_bulk_update,
    "raw UPDATE": _deactivate_by_raw_sql,
    "raw DELETE": _delete_by_raw_sql,
}


@pytest.fixture
def database_storage(settings: Any, db: None) -> Iterator[None]:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:  # a raw DELETE of a user with tokens, as on PG
            cursor.execute("PRAGMA foreign_keys = OFF")
    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages_for("database", settings)}
    yield
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA foreign_keys = ON")


@pytest.mark.parametrize("change", list(SIGNAL_LESS), ids=list(SIGNAL_LESS))
def test_the_join_denies_at_once_a_user_changed_without_signals(
    database_storage: None, client: Client, user_factory: Any, login: Any, change: str
) -> None:
    user = user_factory()
    issued = login(user)
    assert get(client, "/who/", issued.access_token).status_code == 200
    SIGNAL_LESS[change](user)
    assert get(client, "/who/", issued.access_token).status_code == 401
    assert get(client, "/named/", issued.access_token).status_code == 401
    # The rows left pointing at a deleted user would fail the deferred check at teardown.
    Token.objects.filter(user_id=user.pk).delete()


def test_the_join_sees_a_new_username_at_once(
    database_storage: None, client: Client, user_factory: Any, login: Any
) -> None:
    user = user_factory(username="before")
    issued = login(user)
    User.objects.filter(pk=user.pk).update(username="after")
    assert body(get(client, "/named/", issued.access_token))["username"] == "after"


class _HidingManager(Manager):  # type: ignore[type-arg]
    """A default manager that hides some users, as a soft-delete user model's does."""

    def get_queryset(self) -> Any:
        return super().get_queryset().exclude(last_name="soft-deleted")


@contextmanager
def hiding_default_manager() -> Iterator[None]:
    """Make ``_HidingManager`` the user model's default manager for a while."""
    manager = _HidingManager()
    manager.model = User
    manager.name = "objects"
    options = User._meta
    before = options.__dict__.get("default_manager")
    options.__dict__["default_manager"] = manager
    # load_active_user's SELECT is compiled once per thread from the default manager (which a
    # project never swaps at run time): compiled again for this one, and after it.
    fast_sql._local.__dict__.pop("by_pk", None)
    try:
        yield
    finally:
        fast_sql._local.__dict__.pop("by_pk", None)
        if before is None:
            del options.__dict__["default_manager"]
        else:
            options.__dict__["default_manager"] = before


def test_the_join_honours_the_user_models_default_manager(
    database_storage: None, client: Client, user_factory: Any, login: Any
) -> None:
    """A user the default manager hides (ModelBackend.get_user and load_active_user do not find
    it) is not a token's user on the one-query path either."""
    user = user_factory()
    issued = login(user)
    other = login(user_factory())
    assert get(client, "/who/", issued.access_token).status_code == 200
    # A soft delete: a change no signal receiver watches, so the tokens live on.
    User.objects.filter(pk=user.pk).update(last_name="soft-deleted")
    with hiding_default_manager():
        framework = AuthFramework()
        assert framework.get_user(framework.verify_token(issued.access_token)) is None
        assert get(client, "/who/", issued.access_token).status_code == 401
        # Users the manager shows still get in (loaded through it).
        assert get(client, "/who/", other.access_token).status_code == 200


# The snapshot -------------------------------------------------------------------------------


def test_a_token_user_can_be_copied_before_it_is_loaded(user_factory: Any) -> None:
    user = user_factory(username="copied")
    loads: list[int] = []

    def load() -> Any:
        loads.append(1)
        return User.objects.get(pk=user.pk)

    snapshot = TokenUser(user.pk, "id", load)
    shallow = copy.copy(snapshot)
    assert shallow.pk == user.pk
    assert not loads
    deep = copy.deepcopy(snapshot)
    assert deep.pk == user.pk
    assert deep.get_username() == "copied"
    assert pickle.loads(pickle.dumps(snapshot)).pk == user.pk


# Prepared statements (DatabaseStorage(prepare=True), PostgreSQL) -------------------------------

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"
)


def _forget_prepared_behind_psycopgs_back() -> None:
    # What a pooler that hands us another server connection (PgBouncer in transaction mode
    # before 1.21), or a server_reset_query of DISCARD ALL, does: the statements psycopg
    # believes prepared no longer exist on the server. A DO block hides the command from
    # psycopg, which otherwise notices a DEALLOCATE ALL of its own connection.
    with connection.cursor() as cursor:
        cursor.execute("DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$")


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_verify_after_the_server_forgot_the_prepared_statements(
    settings: Any, user_factory: Any, login: Any
) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages_for("database", settings)}
    client = Client(raise_request_exception=False)
    issued = login(user_factory())
    for _ in range(3):  # prepared by now
        assert get(client, "/who/", issued.access_token).status_code == 200
    _forget_prepared_behind_psycopgs_back()
    statuses = [get(client, "/who/", issued.access_token).status_code for _ in range(3)]
    # At worst one clear failure (503, the storage's own answer), never a 500, and the next
    # requests verify again.
    assert 500 not in statuses
    assert statuses[-1] == 200
    AuthFramework().storage.flush()


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_verify_after_a_migration_changed_a_user_column_in_another_process(
    settings: Any, user_factory: Any, login: Any
) -> None:
    """A deploy runs ``migrate`` while the old workers keep their connections (CONN_MAX_AGE):
    a column type of the joined user row changes under a prepared statement, which PostgreSQL
    then refuses ("cached plan must not change result type")."""
    import psycopg

    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages_for("database", settings)}
    client = Client(raise_request_exception=False)
    issued = login(user_factory())
    for _ in range(3):
        assert get(client, "/who/", issued.access_token).status_code == 200
    table = User._meta.db_table
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute(f'ALTER TABLE "{table}" ALTER COLUMN first_name TYPE varchar(200)')
    try:
        statuses = [get(client, "/who/", issued.access_token).status_code for _ in range(3)]
    finally:
        with psycopg.connect(**params, autocommit=True) as other:
            other.execute(f'ALTER TABLE "{table}" ALTER COLUMN first_name TYPE varchar(150)')
        AuthFramework().storage.flush()
    assert statuses == [200, 200, 200]


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_a_forgotten_statement_is_a_storage_error_once(
    user_factory: Any,
) -> None:
    """The failed EXECUTE aborted the caller's transaction, so nothing is retried in it: a
    StorageError (not a driver error), and after the block's rollback verification works."""
    from django.db import transaction

    from django_authfw.exceptions import StorageError
    from django_authfw.storage import DatabaseStorage

    from .factories import PASSWORD

    storage = DatabaseStorage()
    auth = AuthFramework(storage=storage, audit_storage=storage)
    user = user_factory()
    issued = auth.authenticate(user.get_username(), PASSWORD)
    assert auth.verify_token(issued.access_token).user_id == str(user.pk)
    with pytest.raises(StorageError), transaction.atomic():  # noqa: PT012
        _forget_prepared_behind_psycopgs_back()
        auth.verify_token(issued.access_token)
    assert auth.verify_token(issued.access_token).user_id == str(user.pk)
    _forget_prepared_behind_psycopgs_back()  # and outside one, at once
    assert auth.verify_token(issued.access_token).user_id == str(user.pk)
    storage.flush()


# Concurrency: revoke or deactivate while other threads verify -----------------------------------

THREADED_BACKENDS = [name for name in ("memory", "locmem", "redis") if name in http_backends()]


@pytest.mark.parametrize("snapshot", [False, True], ids=["lazy", "snapshot"])
@pytest.mark.parametrize("kind", THREADED_BACKENDS)
@pytest.mark.parametrize("how", ["revoke", "deactivate"])
def test_no_request_started_after_the_end_of_a_token_gets_in(
    settings: Any, user_factory: Any, login: Any, kind: str, snapshot: bool, how: str
) -> None:
    """Four threads authenticate requests through the shared framework in a loop while the
    main thread revokes the token (or deactivates its user, whose receivers revoke it); every
    request that started after that call returned is refused."""
    _race(settings, user_factory, login, kind, snapshot=snapshot, how=how)


@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="the test database is SQLite in memory, shared-cache: a write while other threads "
    "read fails with 'database table is locked' (a file database waits); the PostgreSQL run "
    "covers the race",
)
@pytest.mark.parametrize("how", ["revoke", "deactivate", "raw UPDATE"])
def test_on_the_join_no_request_started_after_the_end_gets_in(
    transactional_db: None, settings: Any, user_factory: Any, login: Any, how: str
) -> None:
    """The same on the database storage, where the user comes with the token: a deactivation
    that sends no signal (raw SQL) is refused at once too."""
    try:
        _race(settings, user_factory, login, "database", snapshot=False, how=how)
    finally:
        AuthFramework().storage.flush()


def _race(
    settings: Any, user_factory: Any, login: Any, kind: str, *, snapshot: bool, how: str
) -> None:
    from django.db import connections
    from django.test import RequestFactory

    from django_authfw.middleware import authenticate_request

    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": storages_for(kind, settings),
        "USER_SNAPSHOT": snapshot,
    }
    user = user_factory()
    issued = login(user)
    factory = RequestFactory()
    ended = threading.Event()
    stop = threading.Event()
    barrier = threading.Barrier(5)
    late_admissions: list[Any] = []
    errors: list[BaseException] = []
    tried_after: list[int] = []
    # On the database the user is read with the token (no extra query): ask it. Elsewhere
    # a loaded user would come from the thread's own connection, which cannot see the test's
    # rows; the snapshot and the token decide there.
    ask_user = kind == "database"

    def worker() -> None:
        try:
            barrier.wait()
            while not stop.is_set():
                after_end = ended.is_set()
                request = factory.get("/who/", **bearer(issued.access_token))
                response = authenticate_request(request)
                if after_end:
                    tried_after.append(1)
                admitted = response is None and (not ask_user or request.user.is_authenticated)
                if admitted and after_end:
                    late_admissions.append(request.auth)  # type: ignore[attr-defined]
                elif response is not None and response.status_code != 401:
                    errors.append(AssertionError(response.status_code))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
        if how == "revoke":
            AuthFramework().revoke_token(issued.access_token)
        elif how == "deactivate":
            user.is_active = False
            user.save()
        else:
            _deactivate_by_raw_sql(user)
        ended.set()
        for _ in range(2000):  # until the threads made requests after the end
            if len(tried_after) >= 40 or errors:
                break
            threading.Event().wait(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        if kind != "database":
            AuthFramework().storage.flush()
    assert not errors
    assert len(tried_after) >= 40
    assert late_admissions == []


# Frozen tokens: no path from user code back into a stored record ---------------------------------


def test_a_frozen_dict_built_by_hand_freezes_what_it_holds() -> None:
    """``FrozenDict``/``FrozenList`` are public; one built by hand around a caller's list or
    dict must not let that caller change a stored token later (the in-memory store shares
    records, and ``freeze`` trusts a FrozenDict as it is)."""
    from django_authfw.records import FrozenDict, FrozenList
    from django_authfw.storage import InMemoryStorage

    from .factories import AuthTokenFactory

    inner_list: list[Any] = ["a"]
    inner_dict: dict[str, Any] = {"k": "v"}
    storage = InMemoryStorage()
    token = AuthTokenFactory.build(
        user_id="1",
        metadata=FrozenDict({"list": inner_list, "dict": inner_dict}),
    )
    storage.store_token(token)
    inner_list.append("injected")
    inner_dict["k"] = "changed"
    stored = storage.get_token(token.token_id)
    assert stored is not None
    assert stored.metadata == {"list": ["a"], "dict": {"k": "v"}}
    nested = FrozenList([{"k": ["v"]}])
    with pytest.raises(TypeError):
        nested[0]["k"] = "changed"
    with pytest.raises(TypeError):
        nested[0]["k"].append("changed")


def test_calling_init_again_does_not_refill_a_frozen_container() -> None:
    """``__init__`` is the one dict/list method that changes the object and is not a mutator
    by name; every token with no metadata shares one empty FrozenDict."""
    from .factories import AuthTokenFactory

    token = AuthTokenFactory.build(user_id="1", metadata={}, roles=[])
    other = AuthTokenFactory.build(user_id="2", metadata={}, roles=[])
    try:
        token.metadata.__init__({"is_admin": True})  # type: ignore[misc]
        token.roles.__init__(["admin"])  # type: ignore[misc]
    except TypeError:
        pass
    assert other.metadata == {}
    assert other.roles == []
    assert token.metadata == {}
    assert token.roles == []


# The snapshot of a token whose user_id is not the canonical str(pk) -------------------------------

SNAPSHOT_KINDS = [name for name in ("memory", "locmem", "redis") if name in http_backends()]


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS)
def test_a_snapshot_is_only_taken_from_a_canonical_user_id(
    settings: Any, client: Client, user_factory: Any, kind: str
) -> None:
    """A token imported (authfw_migrate, authfw_restore, store_token) with ``user_id`` "01" for
    user 1 names the same primary key, but not the user index the receivers revoke by
    (``str(user.pk)``): deactivating the user through save() leaves it alive, and a snapshot
    would keep answering "authenticated" for it. Such a token must not be answered from."""
    from django_authfw import tokens

    from .factories import AuthTokenFactory

    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": storages_for(kind, settings),
        "USER_SNAPSHOT": True,
    }
    user = user_factory()
    raw = tokens.new_secret(tokens.ACCESS_PREFIX)
    storage = AuthFramework().storage
    storage.store_token(
        AuthTokenFactory.build(user_id=f"0{user.pk}", access_digest=tokens.digest(raw))
    )
    try:
        # Not answered from the snapshot; loaded, it names no user (load_active_user takes
        # str(pk) exactly), so it is refused before and after the deactivation.
        assert get(client, "/who/", raw).status_code == 401
        user.is_active = False
        user.save()  # the receivers revoke str(user.pk)'s tokens
        assert get(client, "/who/", raw).status_code == 401
    finally:
        storage.flush()


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_prepared_statements_follow_the_search_path(user_factory: Any) -> None:
    """Schema-per-tenant projects (django-tenants) switch ``search_path`` per request on one
    connection: a statement prepared under one schema must read the next schema's tables, and
    a schema without them gives a clear StorageError, not the previous schema's rows."""
    import uuid

    from django_authfw.exceptions import StorageError
    from django_authfw.storage import DatabaseStorage

    from .factories import PASSWORD

    storage = DatabaseStorage()
    auth = AuthFramework(storage=storage, audit_storage=storage)
    user = user_factory()
    issued = auth.authenticate(user.get_username(), PASSWORD)
    for _ in range(3):  # prepared by now
        assert auth.verify_token(issued.access_token).user_id == str(user.pk)
    tenant = f"authfw_tenant_{uuid.uuid4().hex[:10]}"
    empty = f"authfw_empty_{uuid.uuid4().hex[:10]}"
    tokens_table = Token._meta.db_table
    users_table = User._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{tenant}"')
        cursor.execute(f'CREATE SCHEMA "{empty}"')
        for table in (users_table, tokens_table):
            cursor.execute(
                f'CREATE TABLE "{tenant}"."{table}" (LIKE public."{table}" INCLUDING ALL)'
            )
            cursor.execute(f'INSERT INTO "{tenant}"."{table}" SELECT * FROM public."{table}"')
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'SET search_path TO "{tenant}"')
        assert auth.verify_token(issued.access_token).user_id == str(user.pk)
        with connection.cursor() as cursor:
            cursor.execute(f'DELETE FROM "{tenant}"."{tokens_table}"')
        with pytest.raises(InvalidToken):  # the tenant's table, not public's
            auth.verify_token(issued.access_token)
        with connection.cursor() as cursor:
            cursor.execute(f'SET search_path TO "{empty}"')
        with pytest.raises(StorageError):
            auth.verify_token(issued.access_token)
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO public")
        assert auth.verify_token(issued.access_token).user_id == str(user.pk)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO public")
            cursor.execute(f'DROP SCHEMA "{tenant}" CASCADE')
            cursor.execute(f'DROP SCHEMA "{empty}" CASCADE')
        storage.flush()


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS)
def test_the_snapshots_staleness_ends_with_the_access_token(
    settings: Any, client: Client, user_factory: Any, login: Any, kind: str
) -> None:
    """After a deactivation that sends no signal the snapshot answers for the access token's
    life (documented), but that bound holds only if a refresh cannot extend it: the refresh
    loads the user and refuses."""
    from django_authfw.exceptions import AuthError

    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": storages_for(kind, settings),
        "USER_SNAPSHOT": True,
    }
    user = user_factory()
    issued = login(user)
    other = login(user)
    framework = AuthFramework()
    try:
        User.objects.filter(pk=user.pk).update(is_active=False)
        assert get(client, "/who/", issued.access_token).status_code == 200  # as documented
        assert get(client, "/named/", issued.access_token).status_code == 200
        assert body(get(client, "/named/", issued.access_token))["authenticated"] is False
        with pytest.raises(AuthError):
            framework.refresh(issued.refresh_token)
        # The refused refresh revoked its pair, so the snapshot of that one ends too.
        assert get(client, "/who/", issued.access_token).status_code == 401
        assert get(client, "/who/", other.access_token).status_code == 200
        framework.revoke_user_tokens(user)  # the documented remedy ends it at once
        assert get(client, "/who/", other.access_token).status_code == 401
    finally:
        framework.storage.flush()


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_the_join_over_http_after_the_backend_is_killed(
    settings: Any, user_factory: Any, login: Any
) -> None:
    """A PostgreSQL restart (here: our own backend terminated) between two requests: the
    request that meets the dead connection answers 503 with Retry-After, never a 500, and the
    next one verifies on a new connection, its statements prepared again."""
    from .test_database_reconnect import kill_our_backend

    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages_for("database", settings)}
    client = Client(raise_request_exception=False)
    issued = login(user_factory())
    try:
        for _ in range(3):  # prepared by now
            assert get(client, "/who/", issued.access_token).status_code == 200
        kill_our_backend()
        lost = get(client, "/who/", issued.access_token)
        assert lost.status_code == 503
        assert lost["Retry-After"]
        assert get(client, "/who/", issued.access_token).status_code == 200
    finally:
        AuthFramework().storage.flush()


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS)
def test_a_token_imported_with_another_spelling_of_the_pk_names_no_user(
    settings: Any, client: Client, user_factory: Any, kind: str
) -> None:
    from django_authfw import tokens

    from .factories import AuthTokenFactory

    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages_for(kind, settings)}
    user = user_factory()
    raw = tokens.new_secret(tokens.ACCESS_PREFIX)
    storage = AuthFramework().storage
    storage.import_tokens(
        [AuthTokenFactory.build(user_id=f"0{user.pk}", access_digest=tokens.digest(raw))]
    )
    try:
        # The receivers end user 1's tokens by "1", which would leave this one alive after a
        # password change: it is refused from the start (the lazy load finds no user).
        assert get(client, "/who/", raw).status_code == 401
        user.set_password("a new password 123")
        user.save()
        assert get(client, "/who/", raw).status_code == 401
        assert AuthFramework().get_user(AuthFramework().verify_token(raw)) is None
    finally:
        storage.flush()


# Redis Cluster: the record key named by the digest, revoked through another client ----------------


@pytest.mark.slow
def test_cluster_revocation_through_another_client_is_seen_by_the_next_verify(
    redis_cluster: Any, user_factory: Any
) -> None:
    """Two storages (two client pools, as two processes) on one Cluster: one verifies in four
    threads while the other revokes; no verify that starts after the revocation returned
    succeeds, and a refresh rotated through one cannot be replayed through the other."""
    import uuid

    from django_authfw.exceptions import InvalidToken
    from django_authfw.storage import RedisStorage

    from .factories import PASSWORD

    prefix = f"authfw-test:{uuid.uuid4().hex[:12]}:"

    def storage() -> RedisStorage:
        return RedisStorage(
            cluster_mode=True, cluster_urls=redis_cluster.urls, key_prefix=prefix, timeout=2
        )

    reader, writer = storage(), storage()
    verifier = AuthFramework(storage=reader, audit_storage=reader)
    revoker = AuthFramework(storage=writer, audit_storage=writer)
    user = user_factory()
    issued = verifier.authenticate(user.get_username(), PASSWORD)
    ended = threading.Event()
    stop = threading.Event()
    barrier = threading.Barrier(5)
    late: list[Any] = []
    tried_after: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            while not stop.is_set():
                after = ended.is_set()
                try:
                    verifier.verify_token(issued.access_token)
                    if after:
                        late.append(1)
                except InvalidToken:
                    pass
                if after:
                    tried_after.append(1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
        revoker.revoke_token(issued.access_token)
        ended.set()
        for _ in range(2000):
            if len(tried_after) >= 40 or errors:
                break
            threading.Event().wait(0.005)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert not errors
        assert len(tried_after) >= 40
        assert late == []
        # Rotation through one client, replay of the old refresh token through the other.
        second = verifier.authenticate(user.get_username(), PASSWORD)
        assert second.refresh_token is not None
        rotated = verifier.refresh(second.refresh_token)
        with pytest.raises(InvalidToken):
            revoker.refresh(second.refresh_token)
        with pytest.raises(InvalidToken):  # the replay ended the family
            verifier.verify_token(rotated.access_token)
    finally:
        stop.set()
        reader.flush()
        reader.close()
        writer.close()


# Redis: pointers and record keys that lie ---------------------------------------------------------


@pytest.mark.skipif("redis" not in http_backends(), reason="Redis is not selected")
def test_redis_stale_pointers_and_misplaced_records_match_nothing() -> None:
    """Indexes and pointers are hints: a refresh pointer left naming a record whose refresh
    digest changed, an ``id:`` pointer to another token's record, and a record copied under the
    key another access digest names must each match nothing."""
    import uuid

    import redis

    from django_authfw import tokens
    from django_authfw.storage import RedisStorage
    from django_authfw.storage.codec import encode_token
    from django_authfw.tokens import token_id_for

    from .backends import REDIS_TEST_URL
    from .factories import AuthTokenFactory

    prefix = f"authfw-test:{uuid.uuid4().hex[:12]}:"
    storage = RedisStorage(url=REDIS_TEST_URL, key_prefix=prefix)
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        victim = AuthTokenFactory.build(user_id="1")
        storage.store_token(victim)
        victim_rid = token_id_for(victim.access_digest)
        forged_refresh = tokens.digest(tokens.new_secret(tokens.REFRESH_PREFIX))
        forged_access = tokens.digest(tokens.new_secret(tokens.ACCESS_PREFIX))
        # A stale refresh pointer naming the victim's record.
        client.set(f"{prefix}refresh:{token_id_for(forged_refresh)}", victim_rid, ex=60)
        assert storage.get_token_by_refresh(forged_refresh) is None
        # The victim's record copied under the key the forged access digest names.
        client.set(
            f"{prefix}token:{token_id_for(forged_access)}",
            encode_token(victim, victim_rid),
            ex=60,
        )
        assert storage.get_token_by_access(forged_access) is None
        # An id pointer naming the victim's record for another id.
        client.set(f"{prefix}id:someone-else", victim_rid, ex=60)
        assert storage.get_token("someone-else") is None
        # The victim itself is untouched by all of it.
        assert storage.get_token_by_access(victim.access_digest) == victim
        assert victim.refresh_digest is not None
        assert storage.get_token_by_refresh(victim.refresh_digest) == victim
    finally:
        storage.flush()
        storage.close()
        client.close()


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS)
def test_a_user_instance_whose_pk_is_spelled_otherwise_names_its_canonical_id(
    settings: Any, client: Client, user_factory: Any, login: Any, kind: str
) -> None:
    """An instance whose primary key attribute holds another spelling of the key (assigned as
    a string: ``User(id="07")``, a UUID as hex) is the same user. Revoking its tokens, or a
    password change saved through it, must reach the tokens issued as ``str(pk)``, which the
    non-database stores index by that exact string."""
    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages_for(kind, settings)}
    user = user_factory()
    first, second = login(user), login(user)
    respelled = User.objects.get(pk=user.pk)
    respelled.pk = f"0{user.pk}"
    framework = AuthFramework()
    try:
        assert get(client, "/who/", first.access_token).status_code == 200
        assert framework.revoke_user_tokens(respelled) == 2
        assert get(client, "/who/", first.access_token).status_code == 401
        third = login(user)
        respelled.set_password("a new password 123")
        respelled.save()  # the receivers end str(pk)'s tokens
        assert get(client, "/who/", third.access_token).status_code == 401
        assert get(client, "/who/", second.access_token).status_code == 401
    finally:
        framework.storage.flush()
