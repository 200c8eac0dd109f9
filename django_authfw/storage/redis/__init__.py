"""The Redis backend's mechanics, behind :class:`~django_authfw.storage.RedisStorage` and
:class:`~django_authfw.storage.CacheStorage` on a Redis cache alias.

* :mod:`.engine`: :class:`RedisEngine`, the contract on one Redis keyspace;
* :mod:`.client`: clients for a server, a Cluster and Sentinels, pools, retries, kept
  connections (:class:`BoundedSentinelPool` is named in django-redis settings);
* :mod:`.scripts`: the Lua scripts, run through redis-py's ``Script``;
* :mod:`.keys`: the key names.
"""

from .client import BoundedSentinelPool
from .engine import RedisEngine

__all__ = ["BoundedSentinelPool", "RedisEngine"]
