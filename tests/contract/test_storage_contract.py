"""Every backend of this package through the shipped contract suite,
:class:`django_authfw.testing.StorageContractTests`, exactly as a third-party backend runs it:
one thin subclass per backend, naming only its storage factory (tests/backends.py).

``AUTHFW_TEST_BACKENDS`` narrows the run (tests/conftest.py deselects the other classes); a
backend whose service is down fails its tests, never skips them. Cluster and Sentinel start
their own servers (tests/redis_servers.py) and are marked ``slow``.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import TestCase, override_settings

from django_authfw.testing import StorageContractTests

from .. import backends

# The locmem and Redis factories name the two cache aliases of tests/backends.py.
with_test_caches = override_settings(CACHES=backends.with_test_caches(settings.CACHES))


class TestDatabaseStorage(StorageContractTests, TestCase):
    backend_name = "database"
    storage_factory = backends.database_storage


class TestDatabaseStorageWithoutFastSQL(StorageContractTests, TestCase):
    """The ORM path (``fast_sql=False``) answers every call exactly as the fast path does."""

    backend_name = "database"
    storage_factory = backends.database_storage_without_fast_sql


class TestInMemoryStorage(StorageContractTests, TestCase):
    backend_name = "memory"
    storage_factory = backends.memory_storage


@with_test_caches
class TestLocmemCacheStorage(StorageContractTests, TestCase):
    backend_name = "locmem"
    storage_factory = backends.locmem_storage


@with_test_caches
class TestRedisCacheStorage(StorageContractTests, TestCase):
    backend_name = "redis"
    storage_factory = backends.redis_storage


@pytest.mark.slow
class TestRedisClusterStorage(StorageContractTests, TestCase):
    backend_name = "redis-cluster"
    storage_factory = backends.redis_cluster_storage


@pytest.mark.slow
class TestRedisSentinelStorage(StorageContractTests, TestCase):
    backend_name = "redis-sentinel"
    storage_factory = backends.redis_sentinel_storage
