"""Cache-backed storages: CacheStorage over a Django cache alias, InMemoryStorage, RedisStorage."""

from __future__ import annotations

from .base import AuthStorage


class CacheStorage(AuthStorage):
    """Placeholder, implemented in a later commit."""


class InMemoryStorage(CacheStorage):
    """Placeholder, implemented in a later commit."""


class RedisStorage(CacheStorage):
    """Placeholder, implemented in a later commit."""
