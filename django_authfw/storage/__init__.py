"""Storage backends and the alias registry built from ``AUTHFW["STORAGES"]``.

``get_storage("redis")`` returns the one instance for that alias in this process, built on first
use from ``{"BACKEND": "dotted.path", "OPTIONS": {...}}`` and dropped when the ``AUTHFW``
setting changes (``override_settings`` in tests).
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..conf import conf
from ..exceptions import StorageError
from .base import AuthStorage
from .cache import CacheStorage, InMemoryStorage, RedisStorage
from .database import DatabaseStorage

__all__ = [
    "AuthStorage",
    "CacheStorage",
    "DatabaseStorage",
    "InMemoryStorage",
    "RedisStorage",
    "backend_path",
    "build_storage",
    "forget_storages",
    "get_storage",
    "reset_storages",
]


def backend_path(storage: AuthStorage) -> str:
    """The dotted path of ``storage``'s class as settings name it: the public one for a
    shipped backend (``django_authfw.storage.DatabaseStorage``), the class's own otherwise."""
    cls = type(storage)
    if globals().get(cls.__qualname__) is cls:
        return f"{__name__}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


_instances: dict[str, AuthStorage] = {}
_lock = threading.Lock()


def build_storage(config: dict[str, Any], alias: str | None = None) -> AuthStorage:
    """Build a storage from one ``{"BACKEND": ..., "OPTIONS": ...}`` entry."""
    backend = config.get("BACKEND")
    if not isinstance(backend, str):
        raise StorageError(f"AUTHFW['STORAGES'][{alias!r}] needs a 'BACKEND' import string.")
    try:
        cls = import_string(backend)
    except ImportError as exc:
        raise StorageError(
            f"AUTHFW['STORAGES'][{alias!r}]['BACKEND'] = {backend!r} cannot be imported: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, AuthStorage)):
        raise StorageError(f"{backend!r} is not a subclass of AuthStorage.")
    storage = cls(**(config.get("OPTIONS") or {}))
    storage.alias = alias
    return storage


def get_storage(alias: str = "default") -> AuthStorage:
    """Return the shared storage instance for ``alias``."""
    storage = _instances.get(alias)
    if storage is not None:
        return storage
    with _lock:
        storage = _instances.get(alias)
        if storage is None:
            storages = conf.STORAGES
            if alias not in storages:
                known = ", ".join(sorted(storages)) or "none"
                raise StorageError(
                    f"No storage alias {alias!r} in AUTHFW['STORAGES'] (configured: {known})."
                )
            storage = _instances[alias] = build_storage(storages[alias], alias)
    return storage


def forget_storages() -> None:
    """Forget every built storage without closing it: for a forked child process, whose
    inherited storages hold its parent's connections (closing them could end the parent's).

    No lock is taken: one held by another thread of the parent when it forked is never
    released in the child."""
    _instances.clear()


def reset_storages() -> None:
    """Close and forget every built storage; the next ``get_storage`` builds afresh."""
    with _lock:
        for storage in _instances.values():
            storage.close()
        _instances.clear()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("AUTHFW", "CACHES", "DATABASES"):
        reset_storages()
