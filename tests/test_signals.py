"""Deleting or deactivating a user, or changing their password, ends their tokens and sessions
in every configured storage alias; a storage that is down stops the change."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction

from django_authfw import AuthFramework
from django_authfw.exceptions import (
    InvalidCredentials,
    InvalidToken,
    StorageUnavailable,
    TokenRevoked,
)
from django_authfw.storage import DatabaseStorage, get_storage
from django_authfw.tokens import IssuedToken

from .backends import REDIS_TEST_URL, RUN_ID, selected_backends
from .framework_support import (  # noqa: F401  (fixtures are used by name)
    PASSWORD,
    counting_hasher_fixture,
    db_audit_fixture,
)
from .hashers import FAST_PBKDF2_HASHER, CountingArgon2PasswordHasher
from .test_framework_concurrency import needs_server_database

User = get_user_model()


def storages_config(prefix: str) -> dict[str, dict[str, Any]]:
    """One alias per selected backend; the database one is "default"."""
    configs = {
        "database": ("default", "DatabaseStorage", {}),
        "memory": ("memory", "InMemoryStorage", {"cleanup_interval": None}),
        "locmem": ("locmem", "CacheStorage", {"cache": "sig-locmem", "key_prefix": f"{prefix}:"}),
        "redis": ("redis", "CacheStorage", {"cache": "sig-redis", "key_prefix": f"{prefix}:"}),
    }
    return {
        alias: {"BACKEND": f"django_authfw.storage.{cls}", "OPTIONS": options}
        for alias, cls, options in (configs[name] for name in selected_backends())
    }


@pytest.fixture
def aliases(settings: Any, db: None) -> Iterator[list[str]]:
    prefix = f"authfw-test:{RUN_ID}:{uuid.uuid4().hex[:12]}"
    settings.CACHES = {
        **settings.CACHES,
        "sig-locmem": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": prefix,
        },
        "sig-redis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_TEST_URL},
    }
    storages = storages_config(prefix)
    settings.AUTHFW = {**settings.AUTHFW, "STORAGES": storages}
    yield list(storages)
    for alias in storages:
        get_storage(alias).flush()


@pytest.fixture
def dead_alias(settings: Any, aliases: list[str]) -> str:
    """An extra alias whose Redis is not there (a closed loopback port)."""
    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": {
            **settings.AUTHFW["STORAGES"],
            "down": {
                "BACKEND": "django_authfw.storage.RedisStorage",
                "OPTIONS": {
                    "url": "redis://127.0.0.1:1/0",
                    "timeout": 0.2,
                    "retry_attempts": 1,
                    "retry_delay": 0.01,
                },
            },
        },
    }
    return "down"


def log_in_everywhere(aliases: list[str], user: Any) -> dict[str, tuple[IssuedToken, str]]:
    """A token and a session for ``user`` in every alias."""
    grants = {}
    for alias in aliases:
        auth = AuthFramework(storage=alias)
        grants[alias] = (
            auth.authenticate(user.get_username(), PASSWORD),
            auth.create_session(user).session_id,
        )
    return grants


def assert_access_ended(grants: dict[str, tuple[IssuedToken, str]], *, deleted: bool) -> None:
    for alias, (issued, session_id) in grants.items():
        auth = AuthFramework(storage=alias)
        with pytest.raises(InvalidToken) as caught:
            auth.verify_token(issued.access_token)
        if not deleted:
            assert isinstance(caught.value, TokenRevoked), alias
        assert auth.get_session(session_id) is None, alias
        if deleted:
            assert auth.storage.list_user_tokens(issued.user_id) == [], alias


def assert_access_kept(grants: dict[str, tuple[IssuedToken, str]]) -> None:
    for alias, (issued, session_id) in grants.items():
        auth = AuthFramework(storage=alias)
        assert auth.verify_token(issued.access_token), alias
        assert auth.get_session(session_id) is not None, alias


@pytest.fixture
def alice(aliases: list[str]) -> Any:
    return AuthFramework(storage=aliases[0]).register_user("alice", PASSWORD)


def test_deactivation_ends_access_everywhere(
    aliases: list[str], alice: Any, db_audit: DatabaseStorage
) -> None:
    bob = AuthFramework(storage=aliases[0]).register_user("bob", PASSWORD)
    grants = log_in_everywhere(aliases, alice)
    bobs = log_in_everywhere(aliases, bob)
    alice.is_active = False
    alice.save()
    assert_access_ended(grants, deleted=False)
    assert_access_kept(bobs)
    [event] = db_audit.query_audit(action="user_deactivated")
    assert event.user_id == str(alice.pk)
    assert event.outcome is True
    assert event.metadata == {
        "reason": "deactivated",
        "password_changed": False,
        "tokens": len(aliases),
        "sessions": len(aliases),
    }
    alice.is_active = True
    alice.save()  # reactivation ends nothing and records nothing
    assert db_audit.count_audit(action="user_deactivated") == 1


@pytest.mark.parametrize("how", ["save", "update_fields", "asave"])
def test_password_change_ends_access_everywhere(
    aliases: list[str], alice: Any, db_audit: DatabaseStorage, how: str
) -> None:
    grants = log_in_everywhere(aliases, alice)
    alice.set_password("a brand new passphrase")
    if how == "save":
        alice.save()
    elif how == "update_fields":
        alice.save(update_fields=["password"])
    else:
        async_to_sync(alice.asave)()
    assert_access_ended(grants, deleted=False)
    [event] = db_audit.query_audit(action="password_change")
    assert event.metadata["tokens"] == len(aliases)
    assert event.metadata["password_changed"] is True


def test_other_saves_keep_access(aliases: list[str], alice: Any, db_audit: DatabaseStorage) -> None:
    grants = log_in_everywhere(aliases, alice)
    alice.email = "alice@example.org"
    alice.save()
    alice.save(update_fields=["last_login"])
    alice.first_name = "Alice"
    alice.save()
    assert_access_kept(grants)
    assert db_audit.count_audit(action="password_change") == 0
    assert db_audit.count_audit(action="user_deactivated") == 0


def outdated_hash_logged_in_everywhere(
    aliases: list[str], settings: Any
) -> tuple[Any, dict[str, tuple[IssuedToken, str]]]:
    """Alice, registered under an outdated hasher and logged in in every alias; then Argon2
    becomes the preferred hasher, so her next correct password check upgrades her hash."""
    settings.PASSWORD_HASHERS = [FAST_PBKDF2_HASHER, *settings.PASSWORD_HASHERS]
    user = AuthFramework(storage=aliases[0]).register_user("alice", PASSWORD)
    grants = log_in_everywhere(aliases, user)
    settings.PASSWORD_HASHERS = settings.PASSWORD_HASHERS[1:]
    return user, grants


def test_hash_upgrade_is_not_a_password_change(
    aliases: list[str], settings: Any, db_audit: DatabaseStorage
) -> None:
    user, grants = outdated_hash_logged_in_everywhere(aliases, settings)
    assert user.check_password(PASSWORD)  # Django's own upgrade path saves a new hash
    assert User.objects.get(pk=user.pk).password.startswith("argon2$")
    assert_access_kept(grants)
    assert db_audit.count_audit(action="password_change") == 0


def _assign_hash(user: Any) -> None:
    user.password = make_password("a password the attacker knows")


def _assign_outdated_hash(user: Any) -> None:
    # Looks exactly like an upgrade's input: a hash of the outdated hasher.
    user.password = make_password("a password the attacker knows", hasher="pbkdf2_sha256")


@pytest.mark.parametrize(
    "change",
    [_assign_hash, _assign_outdated_hash, lambda user: user.set_unusable_password()],
    ids=["assigned-hash", "assigned-outdated-hash", "set_unusable_password"],
)
@pytest.mark.parametrize("update_fields", [["password"], None], ids=["update_fields", "save"])
def test_every_way_of_changing_the_hash_ends_access(
    aliases: list[str],
    alice: Any,
    db_audit: DatabaseStorage,
    change: Any,
    update_fields: list[str] | None,
) -> None:
    grants = log_in_everywhere(aliases, alice)
    change(alice)
    alice.save(update_fields=update_fields)
    assert_access_ended(grants, deleted=False)
    [event] = db_audit.query_audit(action="password_change")
    assert event.metadata["password_changed"] is True


@pytest.mark.parametrize("how", ["authenticate", "aauthenticate"])
def test_our_login_upgrading_the_hash_keeps_access(
    aliases: list[str], settings: Any, db_audit: DatabaseStorage, how: str
) -> None:
    user, grants = outdated_hash_logged_in_everywhere(aliases, settings)
    auth = AuthFramework(storage=aliases[0])
    if how == "authenticate":
        auth.authenticate("alice", PASSWORD)
    else:
        async_to_sync(auth.aauthenticate)("alice", PASSWORD)
    assert User.objects.get(pk=user.pk).password.startswith("argon2$")
    assert_access_kept(grants)
    assert db_audit.count_audit(action="password_change") == 0


def test_an_upgrade_of_a_hash_assigned_before_it_ends_access(
    aliases: list[str], alice: Any, settings: Any, db_audit: DatabaseStorage
) -> None:
    """The upgrade path re-hashes whatever hash the instance holds, so a new password assigned
    in memory and then checked (and upgraded) is still a change of the stored password."""
    grants = log_in_everywhere(aliases, alice)
    alice.password = make_password("someone else's password", hasher="pbkdf2_sha256")
    assert alice.check_password("someone else's password")  # upgrades, update_fields=["password"]
    assert User.objects.get(pk=alice.pk).password.startswith("argon2$")
    assert_access_ended(grants, deleted=False)
    assert db_audit.count_audit(action="password_change") == 1


def test_django_async_upgrade_fails_closed(
    aliases: list[str], settings: Any, db_audit: DatabaseStorage
) -> None:
    """Django's acheck_password saves in another thread, out of sight: treated as a change."""
    user, grants = outdated_hash_logged_in_everywhere(aliases, settings)
    assert async_to_sync(user.acheck_password)(PASSWORD)
    assert User.objects.get(pk=user.pk).password.startswith("argon2$")
    assert_access_ended(grants, deleted=False)
    assert db_audit.count_audit(action="password_change") == 1


@pytest.mark.parametrize(
    "form",
    [
        {"password1": "A new admin-set passphrase", "password2": "A new admin-set passphrase"},
        {"usable_password": "false", "unset-password": "1"},
    ],
    ids=["new-password", "unusable"],
)
def test_admin_password_form_ends_access(
    aliases: list[str], alice: Any, client: Any, db_audit: DatabaseStorage, form: dict[str, str]
) -> None:
    grants = log_in_everywhere(aliases, alice)
    client.force_login(User.objects.create_superuser("root", "root@example.org", "x" * 20))
    response = client.post(f"/admin/auth/user/{alice.pk}/password/", form)
    assert response.headers["Location"] == f"/admin/auth/user/{alice.pk}/change/"
    assert_access_ended(grants, deleted=False)
    assert db_audit.count_audit(action="password_change") == 1


def test_registration_is_not_a_password_change(
    aliases: list[str], db_audit: DatabaseStorage
) -> None:
    auth = AuthFramework(storage=aliases[0])
    auth.register_user("alice", PASSWORD)
    async_to_sync(auth.aregister_user)("bob", PASSWORD)  # creates, then saves the hash
    assert db_audit.count_audit(action="password_change") == 0
    assert User.objects.get(username="bob").check_password(PASSWORD)


@pytest.mark.parametrize("how", ["instance", "queryset", "adelete"])
def test_deletion_deletes_tokens_and_sessions_everywhere(
    aliases: list[str], alice: Any, db_audit: DatabaseStorage, how: str
) -> None:
    grants = log_in_everywhere(aliases, alice)
    user_id = str(alice.pk)
    if how == "instance":
        alice.delete()
    elif how == "queryset":
        User.objects.filter(pk=alice.pk).delete()
    else:
        async_to_sync(alice.adelete)()
    assert_access_ended(grants, deleted=True)
    [event] = db_audit.query_audit(action="user_deactivated")
    assert event.user_id == user_id
    assert event.metadata["reason"] == "deleted"
    assert event.metadata["tokens"] == len(aliases)


def test_a_storage_that_is_down_stops_deactivation(
    aliases: list[str], dead_alias: str, alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    grants = log_in_everywhere(aliases, alice)
    alice.is_active = False
    with pytest.raises(StorageUnavailable, match=f"'{dead_alias}'.*refused"):
        alice.save()
    assert User.objects.get(pk=alice.pk).is_active is True  # the save did not happen
    # The reachable storages were ended anyway: failing closed.
    assert_access_ended(grants, deleted=False)
    assert any(r.levelno == logging.ERROR and dead_alias in r.getMessage() for r in caplog.records)


def test_a_storage_that_is_down_stops_deletion(
    aliases: list[str], dead_alias: str, alice: Any
) -> None:
    with pytest.raises(StorageUnavailable), transaction.atomic():
        alice.delete()
    assert User.objects.filter(pk=alice.pk).exists()
    alice.set_password("new password here")
    with pytest.raises(StorageUnavailable):
        alice.save()
    assert User.objects.get(pk=alice.pk).check_password(PASSWORD)


class HookedArgon2PasswordHasher(CountingArgon2PasswordHasher):
    """The test Argon2 hasher, which runs ``hook`` (once) when it next makes a hash: a point
    inside a login's hash upgrade, after the password was verified and before the new hash is
    saved, where a concurrent request can act."""

    hook: Callable[[], None] | None = None

    def encode(self, password: str, salt: str) -> str:
        hook, HookedArgon2PasswordHasher.hook = HookedArgon2PasswordHasher.hook, None
        if hook is not None:
            hook()
        return super().encode(password, salt)


@needs_server_database
@pytest.mark.django_db(transaction=True)
def test_a_password_change_during_our_hash_upgrade_is_kept(
    aliases: list[str], settings: Any
) -> None:
    """A login with the old password, upgrading its hash while the user changes password, must
    not write the old password back (its upgrade is of a hash that is no longer stored)."""
    settings.PASSWORD_HASHERS = [FAST_PBKDF2_HASHER, *settings.PASSWORD_HASHERS]
    user = AuthFramework(storage=aliases[0]).register_user("alice", PASSWORD)
    settings.PASSWORD_HASHERS = [
        f"{__name__}.HookedArgon2PasswordHasher",
        FAST_PBKDF2_HASHER,
    ]
    new_password = "a new passphrase after the theft"

    def change_password() -> None:
        def change() -> None:
            try:
                other = User.objects.get(pk=user.pk)
                other.set_password(new_password)
                other.save()
            finally:
                connection.close()

        thread = threading.Thread(target=change)
        thread.start()
        thread.join()

    HookedArgon2PasswordHasher.hook = change_password
    # The old password: checked before the change, so the login itself is refused after it.
    with pytest.raises(InvalidCredentials):
        AuthFramework(storage=aliases[0]).authenticate("alice", PASSWORD)
    stored = User.objects.get(pk=user.pk)
    assert stored.check_password(new_password)
    assert not stored.check_password(PASSWORD)


@needs_server_database
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["password", "deactivation"])
def test_a_login_between_the_change_and_its_commit_is_ended(
    aliases: list[str], change: str
) -> None:
    """The receiver ends access before the row is written; until the transaction commits, a
    login elsewhere still sees the old password and is_active and gets a token. The second
    pass after the commit ends it."""
    user = AuthFramework(storage=aliases[0]).register_user("alice", PASSWORD)
    issued: dict[str, IssuedToken] = {}

    def log_in_elsewhere() -> None:
        try:
            for alias in aliases:
                issued[alias] = AuthFramework(storage=alias).authenticate("alice", PASSWORD)
        finally:
            connection.close()

    with transaction.atomic():
        changing = User.objects.get(pk=user.pk)
        if change == "password":
            changing.set_password("a new passphrase, not yet committed")
        else:
            changing.is_active = False
        changing.save()
        thread = threading.Thread(target=log_in_elsewhere)
        thread.start()
        thread.join()
        assert set(issued) == set(aliases)  # the other connection saw the old row
        for alias, pair in issued.items():
            assert AuthFramework(storage=alias).verify_token(pair.access_token), alias
    for alias, pair in issued.items():
        with pytest.raises(TokenRevoked):
            AuthFramework(storage=alias).verify_token(pair.access_token)


class VerifyHookedArgon2PasswordHasher(CountingArgon2PasswordHasher):
    """Runs ``hook`` (once) when it next verifies a password: a point inside a login, after
    the user row was read and before the token is issued."""

    hook: Callable[[], None] | None = None

    def verify(self, password: str, encoded: str) -> bool:
        hook, VerifyHookedArgon2PasswordHasher.hook = VerifyHookedArgon2PasswordHasher.hook, None
        if hook is not None:
            hook()
        return super().verify(password, encoded)


@needs_server_database
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["authenticate", "aauthenticate"])
@pytest.mark.parametrize("change", ["password", "deactivation"])
def test_a_change_committed_while_a_login_checks_the_password_refuses_it(
    aliases: list[str], settings: Any, db_audit: DatabaseStorage, how: str, change: str
) -> None:
    """The change and its receivers' passes complete while the login is verifying the old
    password; the login then reads the row again after storing its token and gives it up."""
    settings.PASSWORD_HASHERS = [f"{__name__}.VerifyHookedArgon2PasswordHasher"]
    user = AuthFramework(storage=aliases[0]).register_user("alice", PASSWORD)

    def change_elsewhere() -> None:
        def run() -> None:
            try:
                other = User.objects.get(pk=user.pk)
                if change == "password":
                    other.set_password("changed while the login was hashing")
                else:
                    other.is_active = False
                other.save()
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    for alias in aliases:
        VerifyHookedArgon2PasswordHasher.hook = change_elsewhere
        auth = AuthFramework(storage=alias)
        login = auth.authenticate if how == "authenticate" else async_to_sync(auth.aauthenticate)
        with pytest.raises(InvalidCredentials):
            login("alice", PASSWORD)
        assert auth.storage.list_user_tokens(str(user.pk)) == [], alias
        User.objects.filter(pk=user.pk).update(password=make_password(PASSWORD), is_active=True)
    reasons = [e.metadata.get("reason") for e in db_audit.query_audit(action="login")]
    assert reasons.count("changed_during_login") == len(aliases)
