"""Fixtures and helpers shared by the framework, signal and check tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission

from django_authfw.framework import AuthFramework
from django_authfw.request_info import RequestInfo
from django_authfw.storage import AuthStorage, DatabaseStorage

from .hashers import COUNTING_HASHER, CountingArgon2PasswordHasher

PASSWORD = "correct horse battery staple"
CLIENT = RequestInfo(ip_address="203.0.113.9", user_agent="pytest-client/1.0")


@pytest.fixture(autouse=True, name="counting_hasher")
def counting_hasher_fixture(settings: Any) -> Iterator[type[CountingArgon2PasswordHasher]]:
    """Real Argon2 with a small work factor, first in PASSWORD_HASHERS, calls counted."""
    # Django's own Argon2 hasher must not be listed too: hashers are looked up by algorithm
    # name, and the later entry would verify every "argon2" hash uncounted.
    settings.PASSWORD_HASHERS = [
        COUNTING_HASHER,
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
    CountingArgon2PasswordHasher.reset()
    yield CountingArgon2PasswordHasher
    CountingArgon2PasswordHasher.reset()


@pytest.fixture(name="auth")
def auth_fixture(storage: AuthStorage) -> AuthFramework:
    """A framework on the backend under test that also keeps its audit log there."""
    return AuthFramework(storage=storage, audit_storage=storage)


@pytest.fixture(name="db_audit")
def db_audit_fixture(db: None) -> DatabaseStorage:
    """The database audit table (the default audit target)."""
    return DatabaseStorage()


def grant_perms(user: Any, *codenames: str, groups: tuple[str, ...] = ()) -> None:
    """Give a user auth permissions by codename and membership of named groups."""
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    for name in groups:
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)


def all_records(storage: AuthStorage) -> list[Any]:
    """Every record the storage holds, of every kind."""
    return [
        record
        for iterate in (
            storage.iter_tokens,
            storage.iter_sessions,
            storage.iter_kv,
            storage.iter_audit,
        )
        for batch in iterate()
        for record in batch
    ]
