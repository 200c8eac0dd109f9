"""The mechanics behind :class:`~django_authfw.storage.CacheStorage`.

An engine implements the :class:`AuthStorage` methods on one kind of store (an in-process
keyspace or a Redis server) and trusts its arguments: the storage in front of it has already
validated them. Keeping validation out of the engines means the two engines cannot drift apart
in what they accept.
"""

from __future__ import annotations

from .base import AuthStorage


class CacheEngine(AuthStorage):
    """Base of the cache engines; the attributes describe the store to the storage in front."""

    #: Name reported as ``statistics()["backend"]``.
    backend_name: str = "cache"
    #: True when calls never block on I/O, so async twins may run them inline (no thread hop).
    in_process: bool = False
    #: True when the store drops expired records by itself (Redis TTLs), so the
    #: ``cleanup_expired_*`` methods find none to remove.
    native_expiry: bool = False
