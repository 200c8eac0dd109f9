from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_authfw.storage import AuthStorage

from .backends import (
    SERVER_BACKENDS,
    backend_id,
    built_storage,
    runs_on_server_backends,
    selected_backends,
)
from .factories import UserFactory
from .hashers import COUNTING_HASHER
from .redis_servers import (  # noqa: F401  (session fixtures: servers stop at the end)
    _stop_redis_servers_at_session_end,
    redis_cluster,
    redis_sentinel,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = selected_backends(servers=runs_on_server_backends(metafunc.module.__name__))
        metafunc.parametrize(
            "backend",
            [
                pytest.param(n, id=backend_id(n), marks=[pytest.mark.slow] * (n in SERVER_BACKENDS))
                for n in names
            ],
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the contract classes (tests/contract) of backends the run does not cover."""
    selected = set(selected_backends(servers=True))
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        name = getattr(getattr(item, "cls", None), "backend_name", None)
        (dropped if name is not None and name not in selected else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header() -> list[str]:
    from django.db import connection

    return [
        f"authfw: database vendor {connection.vendor}, backends "
        f"{', '.join(selected_backends(servers=True))}"
    ]


@pytest.fixture(autouse=True)
def _cheap_argon2(settings: Any) -> None:
    """Real Argon2 with a small work factor for every test; the default costs ~100 MiB a hash.

    Tests about hashing policy set PASSWORD_HASHERS themselves (Django's own Argon2 included).
    """
    settings.PASSWORD_HASHERS = [
        COUNTING_HASHER,
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]


@pytest.fixture
def storage(backend: str, settings: object, db: None) -> Iterator[AuthStorage]:
    """A fresh, empty storage of each selected backend."""
    with built_storage(backend, settings) as built:
        yield built


@pytest.fixture
def other_storage(backend: str, settings: object, db: None) -> Iterator[AuthStorage]:
    """A second, independent, empty storage of the same backend (import and migration)."""
    with built_storage(backend, settings) as built:
        yield built


@pytest.fixture
def make_user(db: None) -> Callable[..., str]:
    """Create a real user and return its id as records carry it (str of the pk)."""

    def make(**kwargs: object) -> str:
        return str(UserFactory.create(**kwargs).pk)

    return make
