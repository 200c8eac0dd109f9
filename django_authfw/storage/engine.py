"""The mechanics behind :class:`~django_authfw.storage.CacheStorage` and its siblings.

An engine implements :class:`AuthStorage`'s public methods directly on one kind of store (an
in-process keyspace or a Redis server), overriding the validating front: it trusts its
arguments, because the storage in front of it (an ``AuthStorage`` itself) has already checked
them. Keeping validation out of the engines means they cannot drift apart in what they accept.
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
