"""System checks for cache-backed storages (registered when this module is imported, from
``AppConfig.ready``).

=================  ==========================================================================
``authfw.E020``    a ``CacheStorage`` on a ``DummyCache`` alias (it stores nothing)
``authfw.E021``    a ``CacheStorage`` on a cache alias that is missing or not Redis/LocMem
``authfw.W021``    a ``CacheStorage`` on a Redis alias whose pool has a ``max_connections`` but
                   does not wait for a free connection: a burst fails with "Too many
                   connections" instead of queueing
``authfw.W020``    an in-process storage (``InMemoryStorage``, ``CacheStorage`` on LocMemCache)
                   in a setup that runs several processes: each process sees only its own tokens
=================  ==========================================================================

A process count cannot be known at check time, so W020 looks for the usual signs
(``WEB_CONCURRENCY`` > 1, several uWSGI processes, gunicorn with more than one worker) and is
always given by ``manage.py check --deploy``, where a production setup is being checked.
The checks read settings and import classes only: no storage is built, no server contacted.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage
from django.utils.module_loading import import_string

TAG = "authfw"

_DUMMY = "django.core.cache.backends.dummy.DummyCache"
_LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
_DJANGO_REDIS = "django_redis.cache.RedisCache"
_DJANGO_BUILTIN_REDIS = "django.core.cache.backends.redis.RedisCache"
_REDIS_BACKENDS = (_DJANGO_REDIS, _DJANGO_BUILTIN_REDIS)


def _storages() -> Iterator[tuple[str, type, Mapping[str, Any]]]:
    """(alias, class, OPTIONS) of every storage entry whose class can be imported."""
    from .storage import AuthStorage

    user = getattr(settings, "AUTHFW", None)
    if not isinstance(user, Mapping):
        return
    storages = user.get("STORAGES")
    if not isinstance(storages, Mapping):
        return
    for alias, config in storages.items():
        if not isinstance(config, Mapping) or not isinstance(config.get("BACKEND"), str):
            continue  # authfw.E002 reports it
        try:
            cls = import_string(config["BACKEND"])
        except ImportError:
            continue
        options = config.get("OPTIONS") or {}
        if isinstance(cls, type) and issubclass(cls, AuthStorage) and isinstance(options, Mapping):
            yield str(alias), cls, options


def _cache_backend(alias: str) -> str | None:
    caches = getattr(settings, "CACHES", {}) or {}
    entry = caches.get(alias)
    if not isinstance(entry, Mapping):
        return None
    return str(entry.get("BACKEND", ""))


def _in_process(cls: type, options: Mapping[str, Any]) -> bool:
    from .storage import CacheStorage, InMemoryStorage, RedisStorage

    if issubclass(cls, InMemoryStorage):
        return True
    if issubclass(cls, CacheStorage) and not issubclass(cls, RedisStorage):
        return _cache_backend(str(options.get("cache", "authfw"))) == _LOCMEM
    return False


def several_processes() -> str | None:
    """Why this setup looks like it serves from several processes, or None."""
    try:
        if int(os.environ.get("WEB_CONCURRENCY", "1")) > 1:
            return "WEB_CONCURRENCY is greater than 1"
    except ValueError:
        pass
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None and int(getattr(uwsgi, "numproc", 1) or 1) > 1:
        return "uWSGI runs several processes"
    args = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
    for flag in ("-w", "--workers"):
        value = args[args.index(flag) + 1] if flag in args[:-1] else ""
        if value.isdigit() and int(value) > 1:
            return "gunicorn runs several workers"
    return None


def _cache_messages() -> list[CheckMessage]:
    from .storage import CacheStorage, InMemoryStorage, RedisStorage

    messages: list[CheckMessage] = []
    for alias, cls, options in _storages():
        if not issubclass(cls, CacheStorage) or issubclass(cls, InMemoryStorage | RedisStorage):
            continue
        where = f"AUTHFW['STORAGES'][{alias!r}]"
        cache = options.get("cache", "authfw")
        backend = _cache_backend(str(cache))
        if backend == _DUMMY:
            messages.append(
                checks.Error(
                    f"{where} keeps tokens in cache {cache!r}, a DummyCache, which stores "
                    "nothing: every login would be forgotten at once.",
                    hint="Point OPTIONS['cache'] at a django-redis or LocMemCache alias.",
                    obj=where,
                    id="authfw.E020",
                )
            )
        elif backend is None:
            messages.append(
                checks.Error(
                    f"{where} names cache alias {cache!r}, which is not in CACHES.",
                    hint="Add the alias to CACHES or change OPTIONS['cache'].",
                    obj=where,
                    id="authfw.E021",
                )
            )
        elif backend != _LOCMEM and backend not in _REDIS_BACKENDS:
            messages.append(
                checks.Error(
                    f"{where} names cache alias {cache!r} with BACKEND {backend!r}, which "
                    "cannot keep a user's token index atomically.",
                    hint="Use django_redis.cache.RedisCache, Django's RedisCache or LocMemCache.",
                    obj=where,
                    id="authfw.E021",
                )
            )
    return messages


def _locations(entry: Mapping[str, Any]) -> list[str]:
    location = entry.get("LOCATION", "")
    if isinstance(location, str):
        return [part.strip() for part in location.split(",") if part.strip()]
    if isinstance(location, Sequence):
        return [str(part) for part in location]
    return []


def _non_blocking_pool(entry: Mapping[str, Any]) -> tuple[str, int, str] | None:
    """(pool class path, max_connections, the fix) when the alias's pool has a size limit it
    enforces by raising, not by waiting; None when it waits or has no limit set."""
    import redis

    from .storage.redis.client import BoundedSentinelPool

    options = entry.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        return None
    if entry.get("BACKEND") == _DJANGO_REDIS:
        kwargs = options.get("CONNECTION_POOL_KWARGS") or {}
        sentinel = "SENTINELS" in options
        default = "redis.sentinel.SentinelConnectionPool" if sentinel else "redis.ConnectionPool"
        path = options.get("CONNECTION_POOL_CLASS", default)
        fix = (
            "OPTIONS['CONNECTION_POOL_CLASS'] = "
            "'django_authfw.storage.redis.BoundedSentinelPool' and a 'wait' (seconds) "
            "in CONNECTION_POOL_KWARGS"
            if sentinel
            else "OPTIONS['CONNECTION_POOL_CLASS'] = 'redis.BlockingConnectionPool' and a "
            "'timeout' (seconds to wait) in OPTIONS['CONNECTION_POOL_KWARGS']"
        )
    else:
        kwargs = options
        path = options.get("pool_class") or "redis.ConnectionPool"  # None: Django's default
        fix = "OPTIONS['pool_class'] = 'redis.BlockingConnectionPool' and OPTIONS['timeout']"
    kwargs = kwargs if isinstance(kwargs, Mapping) else {}
    limit, wait = kwargs.get("max_connections"), kwargs.get("timeout", 20.0)
    for url in _locations(entry):  # redis://host/0?max_connections=10 sets it too
        query = parse_qs(urlsplit(url).query)
        limit = query.get("max_connections", [limit])[0]
        wait = query.get("timeout", [wait])[0]
    try:
        cls = import_string(path) if isinstance(path, str) else path
    except ImportError:
        return None  # the cache itself reports it when first used
    if not isinstance(cls, type) or limit is None:
        return None
    if issubclass(cls, BoundedSentinelPool):
        wait = kwargs.get("wait", 20.0)
    # A waiting pool given no time to wait (timeout 0) refuses a burst all the same.
    if issubclass(cls, redis.BlockingConnectionPool | BoundedSentinelPool) and (
        wait is None or float(wait) > 0
    ):
        return None
    return f"{cls.__module__}.{cls.__qualname__}", int(limit), fix


def _pool_warnings() -> list[CheckMessage]:
    from .storage import CacheStorage, InMemoryStorage, RedisStorage

    messages: list[CheckMessage] = []
    for alias, cls, options in _storages():
        if not issubclass(cls, CacheStorage) or issubclass(cls, InMemoryStorage | RedisStorage):
            continue
        cache = str(options.get("cache", "authfw"))
        entry = (getattr(settings, "CACHES", {}) or {}).get(cache)
        if not isinstance(entry, Mapping) or entry.get("BACKEND") not in _REDIS_BACKENDS:
            continue
        try:
            found = _non_blocking_pool(entry)
        except (TypeError, ValueError):
            continue  # a malformed max_connections: redis-py refuses it when first used
        if found is None:
            continue
        pool, limit, fix = found
        where = f"AUTHFW['STORAGES'][{alias!r}]"
        messages.append(
            checks.Warning(
                f"{where} uses cache {cache!r}, whose connection pool ({pool}) allows "
                f"{limit} connections and refuses a call beyond them with 'Too many "
                "connections' instead of waiting for a free one: a burst of logins fails.",
                hint=f"Set {fix}; see 'Connection pools' in docs/backends.md.",
                obj=where,
                id="authfw.W021",
            )
        )
    return messages


def _in_process_warnings(reason: str) -> list[CheckMessage]:
    return [
        checks.Warning(
            f"AUTHFW['STORAGES'][{alias!r}] keeps tokens in this process only, and {reason}: "
            "a token issued by one process is unknown to the others, and a revocation in one "
            "does not reach them.",
            hint="Use Redis (CacheStorage on django-redis, or RedisStorage) or "
            "DatabaseStorage; if exactly one process serves, add 'authfw.W020' to "
            "SILENCED_SYSTEM_CHECKS.",
            obj=f"AUTHFW['STORAGES'][{alias!r}]",
            id="authfw.W020",
        )
        for alias, cls, options in _storages()
        if _in_process(cls, options)
    ]


@checks.register(TAG)
def check_cache_storages(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.E020/E021 for unusable cache aliases; authfw.W021 for a pool that does not wait;
    authfw.W020 when several processes serve."""
    messages = _cache_messages() + _pool_warnings()
    reason = several_processes()
    if reason is not None:
        messages.extend(_in_process_warnings(reason))
    return messages


@checks.register(TAG, deploy=True)
def check_cache_storages_deploy(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """authfw.W020 under ``check --deploy``: production setups run several processes."""
    if several_processes() is not None:
        return []  # check_cache_storages already warned
    return _in_process_warnings("production deployments usually run several processes")
