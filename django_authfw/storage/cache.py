"""Cache-backed storages: :class:`CacheStorage` over a Django cache alias, and
:class:`InMemoryStorage` and :class:`RedisStorage` built directly from their own options.

One front, two engines:

* a Redis alias (django-redis, or Django's own ``RedisCache``) and :class:`RedisStorage` use
  :class:`~django_authfw.storage.redis.engine.RedisEngine`: the raw redis-py client, the key
  names of :mod:`~django_authfw.storage.redis.keys` (not Django's ``make_key``), JSON values,
  Lua scripts for atomic multi-key writes, TTLs on every expiring key;
* a ``LocMemCache`` alias and :class:`InMemoryStorage` use
  :class:`~django_authfw.storage.memory.MemoryEngine`: dicts in this process.

The three are siblings over :class:`EngineStorage`, which hands :class:`AuthStorage`'s engine
methods to the engine (the validating front in :class:`AuthStorage` has checked every argument
by then) and provides the async twins: inline for the in-process engine (no thread hop), in a
worker thread for Redis.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from .. import validate
from ..exceptions import InvalidInput, StorageError
from ..records import AuditEvent, AuthToken, KVEntry, SessionData, StorageStatistics
from ..tokens import check_id
from .base import AuthStorage
from .engine import CacheEngine

logger = logging.getLogger("django_authfw.storage")

T = TypeVar("T")


def _default_ttl(value: object) -> timedelta | None:
    secs = validate.seconds(value, "default_ttl", allow_none=True)
    if secs == 0:
        raise InvalidInput("default_ttl must be positive, or None for no default expiry.")
    return None if secs is None else timedelta(seconds=secs)


def _key_prefix(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(
            "key_prefix must be a non-empty string such as 'auth:': flush() deletes every key "
            "under it, so an empty prefix would mean the whole database."
        )
    return value


def _retry_options(retry_attempts: object, retry_delay: object) -> tuple[int, float]:
    attempts = validate.count(retry_attempts, "retry_attempts")
    delay = validate.seconds(retry_delay, "retry_delay")
    assert delay is not None
    return attempts, delay


def _keep_connections(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("keep_connections must be True or False.")
    return value


class EngineStorage(AuthStorage):
    """The storage contract over a :class:`CacheEngine`: what :class:`CacheStorage`,
    :class:`InMemoryStorage` and :class:`RedisStorage` share. A subclass builds its engine in
    ``__init__`` and passes it to :meth:`_attach`; :class:`AuthStorage` has validated every
    argument before an engine method here hands it on."""

    native_expiry: bool = False
    cache_alias: str | None = None
    key_prefix: str = ""
    default_ttl: timedelta | None = None
    _engine: CacheEngine

    def _attach(self, engine: CacheEngine) -> None:
        self._engine = engine
        # Per instance: one CacheStorage class fronts both engines.
        self.native_expiry = engine.native_expiry
        # Verification's lookup goes straight to the engine (AuthStorage.lookup_access).
        self.lookup_access = engine.get_token_by_access  # type: ignore[method-assign]

    @property
    def engine(self) -> CacheEngine:
        """The engine behind this storage (a ``MemoryEngine`` or a ``RedisEngine``)."""
        return self._engine

    # Tokens -------------------------------------------------------------------------------

    def _store_token(self, token: AuthToken) -> None:
        self._engine.store_token(token)

    def _get_token(self, token_id: str) -> AuthToken | None:
        return self._engine.get_token(token_id)

    def _get_token_by_access(self, access_digest: str) -> AuthToken | None:
        return self._engine.get_token_by_access(access_digest)

    def _get_tokens(self, token_ids: Iterable[str]) -> dict[str, AuthToken]:
        return self._engine._get_tokens(token_ids)

    def _get_sessions(self, session_ids: Iterable[str]) -> dict[str, SessionData]:
        return self._engine._get_sessions(session_ids)

    def _kv_entries(self, keys: Iterable[str]) -> dict[str, KVEntry] | None:
        return self._engine._kv_entries(keys)

    def _get_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        return self._engine.get_token_by_refresh(refresh_digest)

    def _update_token(self, token: AuthToken) -> bool:
        return self._engine.update_token(token)

    def _revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None) -> bool:
        return self._engine.revoke_token(token_id, at=at, replaced_by=replaced_by)

    def _revoke_user_tokens(self, user_id: str, *, at: datetime, family_id: str | None) -> int:
        return self._engine.revoke_user_tokens(user_id, at=at, family_id=family_id)

    def _delete_token(self, token_id: str) -> bool:
        return self._engine.delete_token(token_id)

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        return self._engine.list_user_tokens(user_id)

    def _delete_user_tokens(self, user_id: str) -> int:
        return self._engine.delete_user_tokens(user_id)

    # Sessions -----------------------------------------------------------------------------

    def _store_session(self, session: SessionData) -> None:
        self._engine.store_session(session)

    def _get_session(self, session_id: str) -> SessionData | None:
        return self._engine.get_session(session_id)

    def _touch_session(self, session_id: str, *, at: datetime, expires_at: datetime | None) -> bool:
        return self._engine.touch_session(session_id, at=at, expires_at=expires_at)

    def _delete_session(self, session_id: str) -> bool:
        return self._engine.delete_session(session_id)

    def _list_user_sessions(self, user_id: str) -> list[SessionData]:
        return self._engine.list_user_sessions(user_id)

    def _delete_user_sessions(self, user_id: str) -> int:
        return self._engine.delete_user_sessions(user_id)

    def count_active_sessions(self) -> int:
        return self._engine.count_active_sessions()

    # Key-value ----------------------------------------------------------------------------

    def _kv_set(self, key: str, value: bytes, ttl: timedelta | None) -> None:
        self._engine.kv_set(key, value, ttl)

    def _kv_get(self, key: str) -> bytes | None:
        return self._engine.kv_get(key)

    def _kv_delete(self, key: str) -> bool:
        return self._engine.kv_delete(key)

    def _kv_incr(self, key: str, ttl: timedelta | None) -> int:
        return self._engine.kv_incr(key, ttl)

    # Audit log ----------------------------------------------------------------------------

    def _append_audit(self, event: AuditEvent) -> None:
        self._engine.append_audit(event)

    def _query_audit(self, **filters: Any) -> list[AuditEvent]:
        return self._engine.query_audit(**filters)

    def _count_audit(self, **filters: Any) -> int:
        return self._engine.count_audit(**filters)

    def _delete_audit_before(self, cutoff: datetime) -> int:
        return self._engine.delete_audit_before(cutoff)

    # Maintenance --------------------------------------------------------------------------

    def _cleanup_expired_tokens(self, *, batch_size: int, dry_run: bool) -> int:
        return self._engine.cleanup_expired_tokens(batch_size=batch_size, dry_run=dry_run)

    def _cleanup_expired_sessions(self, *, batch_size: int, dry_run: bool) -> int:
        return self._engine.cleanup_expired_sessions(batch_size=batch_size, dry_run=dry_run)

    def _cleanup_expired_kv(self, *, batch_size: int, dry_run: bool) -> int:
        return self._engine.cleanup_expired_kv(batch_size=batch_size, dry_run=dry_run)

    def statistics(self) -> StorageStatistics:
        return self._engine.statistics()

    def flush(self) -> None:
        self._engine.flush()

    def close(self) -> None:
        self._engine.close()

    # Iteration and import -----------------------------------------------------------------

    def _iter_tokens(self, *, batch_size: int) -> Iterator[list[AuthToken]]:
        return self._engine.iter_tokens(batch_size=batch_size)

    def _iter_sessions(self, *, batch_size: int) -> Iterator[list[SessionData]]:
        return self._engine.iter_sessions(batch_size=batch_size)

    def _iter_kv(self, *, batch_size: int) -> Iterator[list[KVEntry]]:
        return self._engine.iter_kv(batch_size=batch_size)

    def _iter_audit(self, *, batch_size: int) -> Iterator[list[AuditEvent]]:
        return self._engine.iter_audit(batch_size=batch_size)

    def _import_tokens(self, tokens: list[AuthToken]) -> int:
        return self._engine.import_tokens(tokens)

    def _import_sessions(self, sessions: list[SessionData]) -> int:
        return self._engine.import_sessions(sessions)

    def _import_kv(self, entries: list[KVEntry]) -> int:
        return self._engine.import_kv(entries)

    def _import_audit(self, events: list[AuditEvent]) -> int:
        return self._engine.import_audit(events)

    # Async ----------------------------------------------------------------------------------

    async def _run(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._engine.in_process:
            # Microseconds under a lock, no I/O: a thread hop would cost more than the call.
            return method(*args, **kwargs)
        # Redis calls never touch the ORM, so they need not queue behind the one thread that
        # thread_sensitive=True would use; they run in parallel worker threads.
        return await sync_to_async(method, thread_sensitive=False)(*args, **kwargs)

    async def _aiterate(self, batches: Iterator[list[T]]) -> AsyncIterator[list[T]]:
        done = object()
        while True:
            batch = await self._run(next, batches, done)
            if batch is done:
                return
            yield batch

    async def aiter_tokens(self, *, batch_size: int = 1000) -> AsyncIterator[list[AuthToken]]:
        async for batch in self._aiterate(self.iter_tokens(batch_size=batch_size)):
            yield batch

    async def aiter_sessions(self, *, batch_size: int = 1000) -> AsyncIterator[list[SessionData]]:
        async for batch in self._aiterate(self.iter_sessions(batch_size=batch_size)):
            yield batch

    async def aiter_kv(self, *, batch_size: int = 1000) -> AsyncIterator[list[KVEntry]]:
        async for batch in self._aiterate(self.iter_kv(batch_size=batch_size)):
            yield batch

    async def aiter_audit(self, *, batch_size: int = 1000) -> AsyncIterator[list[AuditEvent]]:
        async for batch in self._aiterate(self.iter_audit(batch_size=batch_size)):
            yield batch


class CacheStorage(EngineStorage):
    """The storage contract on a Django cache alias (``OPTIONS``: ``cache``, ``key_prefix``,
    ``default_ttl``, ``retry_attempts``, ``retry_delay``).

    * ``cache``: a ``CACHES`` alias. django-redis or Django's ``RedisCache`` store records in
      that Redis (timeouts come from the alias's own options); ``LocMemCache`` keeps them in
      this process. DummyCache stores nothing and is refused; other cache backends cannot do
      atomic multi-key writes and are refused too.
    * ``key_prefix``: every Redis key starts with it (default ``auth:``); ``flush()`` deletes
      only keys under it.
    * ``default_ttl``: seconds or a ``timedelta`` (default one hour): how long a session
      stored *without* ``expires_at`` lives after its last write; None keeps such sessions.
      Tokens carry their own expiry and key-value entries without ``ttl`` persist.
    * ``retry_attempts``/``retry_delay`` (Redis only, default 3 and 0.1 s): how often an
      idempotent command is retried after a connection error or timeout.
    * ``keep_connections`` (Redis only, default True): run idempotent calls on connections kept
      between calls (at most half the pool) instead of a pool checkout per command.
    """

    def __init__(
        self,
        *,
        cache: str = "authfw",
        key_prefix: str = "auth:",
        default_ttl: float | timedelta | None = 3600,
        retry_attempts: int = 3,
        retry_delay: float | timedelta = 0.1,
        keep_connections: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.cache_alias = cache
        self.key_prefix = _key_prefix(key_prefix)
        self.default_ttl = _default_ttl(default_ttl)
        retry = _retry_options(retry_attempts, retry_delay)
        keep = _keep_connections(keep_connections)
        self._attach(self._engine_for_alias(cache, *retry, keep_connections=keep))

    def _engine_for_alias(
        self, alias: str, retry_attempts: int, retry_delay: float, *, keep_connections: bool
    ) -> CacheEngine:
        from django.conf import settings
        from django.core.cache import InvalidCacheBackendError, caches
        from django.core.cache.backends.dummy import DummyCache
        from django.core.cache.backends.locmem import LocMemCache

        if not isinstance(alias, str) or not alias:
            raise InvalidInput("CacheStorage 'cache' must name an alias in CACHES.")
        try:
            cache = caches[alias]
        except InvalidCacheBackendError as exc:
            known = ", ".join(sorted(settings.CACHES)) or "none"
            raise StorageError(
                f"CacheStorage names cache alias {alias!r}, which is not in CACHES "
                f"(configured: {known}). Add it to CACHES or change OPTIONS['cache']."
            ) from exc
        if isinstance(cache, DummyCache):
            raise StorageError(
                f"Cache alias {alias!r} is a DummyCache, which stores nothing: every token "
                "would be forgotten at once. Point CacheStorage at Redis or LocMemCache."
            )
        if isinstance(cache, LocMemCache):
            from .memory import shared_engine

            location = str(settings.CACHES[alias].get("LOCATION", ""))
            return shared_engine(location, self.key_prefix, self.default_ttl)

        from .redis.client import RedisCaller, client_timeout, django_cache_client
        from .redis.engine import RedisEngine

        client = django_cache_client(cache)
        if client is None:
            raise StorageError(
                f"Cache alias {alias!r} uses {type(cache).__module__}.{type(cache).__name__}, "
                "which cannot hold the user indexes atomically. Use django-redis, Django's "
                "RedisCache or LocMemCache."
            )
        from redis.cluster import RedisCluster

        return RedisEngine(
            RedisCaller(
                lambda: client,
                description=f"cache alias {alias!r}",
                retry_attempts=retry_attempts,
                retry_delay=retry_delay,
                keep_connections=keep_connections,
            ),
            key_prefix=self.key_prefix,
            default_ttl=self.default_ttl,
            cluster=isinstance(client, RedisCluster),
            timeout=client_timeout(client),
            owns_client=False,  # the cache alias owns it
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} alias={self.alias!r} backend={self._engine.backend_name!r} "
            f"key_prefix={self.key_prefix!r}>"
        )


def _twin(name: str) -> Callable[..., Any]:
    sync_method = getattr(AuthStorage, name)

    @functools.wraps(getattr(AuthStorage, f"a{name}"))
    async def twin(self: EngineStorage, *args: Any, **kwargs: Any) -> Any:
        return await self._run(getattr(self, name), *args, **kwargs)

    twin.__doc__ = f"Async twin of :meth:`{name}`. {sync_method.__doc__ or ''}".strip()
    return twin


# Every async twin except the iterators (above) and create_backup (which writes a file and
# keeps the base's thread).
_TWINNED = (
    "store_token",
    "get_token",
    "get_token_by_access",
    "get_token_by_refresh",
    "update_token",
    "revoke_token",
    "revoke_user_tokens",
    "delete_token",
    "list_user_tokens",
    "delete_user_tokens",
    "store_session",
    "get_session",
    "touch_session",
    "delete_session",
    "list_user_sessions",
    "delete_user_sessions",
    "count_active_sessions",
    "kv_set",
    "kv_get",
    "kv_delete",
    "kv_incr",
    "append_audit",
    "query_audit",
    "count_audit",
    "delete_audit_before",
    "cleanup_expired_tokens",
    "cleanup_expired_sessions",
    "cleanup_expired_kv",
    "cleanup_expired",
    "statistics",
    "flush",
    "import_tokens",
    "import_sessions",
    "import_kv",
    "import_audit",
)
for _name in _TWINNED:
    setattr(EngineStorage, f"a{_name}", _twin(_name))


class InMemoryStorage(EngineStorage):
    """Everything in this process: fast, no dependency, gone on restart, not shared.

    ``InMemoryStorage(cleanup_interval=300, default_ttl=3600)`` (seconds or ``timedelta``):
    a daemon thread removes expired records every ``cleanup_interval`` (None: never; the
    records are invisible once expired either way) and stops on :meth:`close`.
    ``default_ttl`` is as for :class:`CacheStorage`.
    """

    native_expiry = False  # expired records stay until the sweep or cleanup removes them

    def __init__(
        self,
        *,
        cleanup_interval: float | timedelta | None = 300,
        default_ttl: float | timedelta | None = 3600,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        from .memory import MemoryEngine

        interval = validate.seconds(cleanup_interval, "cleanup_interval", allow_none=True)
        if interval == 0:
            raise InvalidInput("cleanup_interval must be positive, or None for no sweep thread.")
        self.default_ttl = _default_ttl(default_ttl)
        self.cleanup_interval = interval
        engine = MemoryEngine(default_ttl=self.default_ttl)
        self._attach(engine)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        if interval is not None:
            self._sweeper = threading.Thread(
                target=_sweep,
                args=(weakref.ref(engine), interval, self._stop),
                name="authfw-inmemory-sweep",
                daemon=True,
            )
            self._sweeper.start()

    def close(self) -> None:
        """Stop the sweep thread (waits for a sweep in progress to finish)."""
        self._stop.set()
        sweeper = self._sweeper
        if sweeper is not None and sweeper is not threading.current_thread():
            sweeper.join()

    def __repr__(self) -> str:
        return f"<InMemoryStorage alias={self.alias!r} cleanup_interval={self.cleanup_interval}>"


def _sweep(engine_ref: weakref.ref[CacheEngine], interval: float, stop: threading.Event) -> None:
    # Holds the engine only weakly between sweeps, so a storage dropped without close() is
    # still freed, and the thread then ends at its next wake-up.
    while not stop.wait(interval):
        engine = engine_ref()
        if engine is None:
            return
        try:
            counts = engine.cleanup_expired()
        except Exception:  # a sweep must never kill the thread
            logger.exception("authfw in-memory sweep failed")
        else:
            if any(counts.values()):
                logger.debug("authfw in-memory sweep removed %s", counts)
        del engine


class RedisStorage(EngineStorage):
    """A Redis storage built from its own options on redis-py (docs/backends.md#redis).

    ``RedisStorage(url="redis://localhost:6379", pool_size=10, timeout=5, key_prefix="auth:",
    default_ttl=3600, retry_attempts=3, retry_delay=0.1, cluster_mode=False,
    cluster_urls=None, master_name=None, sentinels=None, sentinel_password=None)``

    * single server: ``url`` (``redis://[user:pass@]host:port/db``, ``rediss://`` for TLS);
    * Cluster: ``cluster_mode=True`` and ``cluster_urls`` (seed nodes; ``url`` if omitted);
    * Sentinel: ``master_name`` and ``sentinels`` (``redis://host:26379`` each), with
      ``sentinel_password`` for the Sentinels; ``url`` then gives db and data-node password.

    ``timeout`` (seconds or ``timedelta``) bounds connecting, each reply and the wait for one
    of the ``pool_size`` connections. ``wait_for_connection`` (default True) makes callers
    beyond ``pool_size`` queue for a connection (a blocking pool; for Sentinel,
    :class:`~django_authfw.storage.redis.BoundedSentinelPool`); False gives redis-py's own
    pools, which refuse them at once ("Too many connections", retried like any connection
    error). A call fails with ``StorageUnavailable`` after at most
    ``timeout * (retry_attempts + 1) + retry_delay * retry_attempts`` (plus
    ``replica_ack_timeout`` per attempt for writes); only idempotent calls are retried.

    ``replica_acks`` (default 0): a write succeeds only once that many replicas acknowledged it
    (``WAIT`` on the writing connection, up to ``replica_ack_timeout`` seconds); otherwise it
    fails with ``StorageUnavailable``, so a revocation reported done survives a failover to
    one of those replicas. Not available with ``cluster_mode``.
    """

    native_expiry = True  # Redis TTLs remove expired records; cleanup only prunes indexes

    def __init__(
        self,
        *,
        url: str = "redis://localhost:6379",
        pool_size: int = 10,
        timeout: float | timedelta = 5,
        key_prefix: str = "auth:",
        default_ttl: float | timedelta | None = 3600,
        retry_attempts: int = 3,
        retry_delay: float | timedelta = 0.1,
        cluster_mode: bool = False,
        cluster_urls: list[str] | None = None,
        master_name: str | None = None,
        sentinels: list[str] | None = None,
        sentinel_password: str | None = None,
        replica_acks: int = 0,
        replica_ack_timeout: float | timedelta = 1,
        keep_connections: bool = True,
        wait_for_connection: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        from .redis import client as redis_client
        from .redis.engine import RedisEngine

        self.key_prefix = _key_prefix(key_prefix)
        self.default_ttl = _default_ttl(default_ttl)
        size = validate.count(pool_size, "pool_size", minimum=1)
        wait = validate.seconds(timeout, "timeout")
        if not wait:
            raise InvalidInput("timeout must be positive (seconds or a timedelta).")
        attempts, delay = _retry_options(retry_attempts, retry_delay)
        if not isinstance(cluster_mode, bool):
            raise InvalidInput("cluster_mode must be True or False.")
        if cluster_urls and not cluster_mode:
            raise InvalidInput("cluster_urls is given but cluster_mode is False; set both.")
        if master_name is not None and cluster_mode:
            raise InvalidInput("Use either Sentinel (master_name) or cluster_mode, not both.")
        acks = validate.count(replica_acks, "replica_acks")
        ack_wait = validate.seconds(replica_ack_timeout, "replica_ack_timeout")
        if acks and cluster_mode:
            raise InvalidInput(
                "replica_acks is not supported with cluster_mode (WAIT is per node); use "
                "Sentinel or a single primary with replicas."
            )
        if not isinstance(wait_for_connection, bool):
            raise InvalidInput("wait_for_connection must be True or False.")
        waits = wait_for_connection
        redis_client.parse_url(url)  # fail now on a malformed URL, not at first use

        connect: Callable[[], Any]
        if cluster_mode:
            seeds = list(cluster_urls or [url])
            for seed in seeds:
                redis_client.parse_url(seed)
            description = "cluster " + ",".join(_public(s) for s in seeds)

            def connect() -> Any:
                return redis_client.cluster_client(
                    seeds, pool_size=size, timeout=wait, wait_for_connection=waits
                )

        elif master_name is not None:
            check_id(master_name, "master_name")
            nodes = list(sentinels or [])
            if not nodes:
                raise InvalidInput("master_name needs sentinels, e.g. ['redis://host:26379'].")
            for node in nodes:
                redis_client.parse_url(node, default_port=26379)
            description = f"sentinel master {master_name!r} via " + ",".join(
                _public(s) for s in nodes
            )

            def connect() -> Any:
                return redis_client.sentinel_client(
                    master_name,
                    nodes,
                    url=url,
                    pool_size=size,
                    timeout=wait,
                    sentinel_password=sentinel_password,
                    wait_for_connection=waits,
                )

        else:
            description = _public(url)

            def connect() -> Any:
                return redis_client.single_client(
                    url, pool_size=size, timeout=wait, wait_for_connection=waits
                )

        self.url = _public(url)
        self.pool_size = size
        self.timeout = wait
        self.retry_attempts = attempts
        self.retry_delay = delay
        self.cluster_mode = cluster_mode
        self.master_name = master_name
        self.replica_acks = acks
        self._attach(
            RedisEngine(
                redis_client.RedisCaller(
                    connect,
                    description=description,
                    retry_attempts=attempts,
                    retry_delay=delay,
                    replica_acks=acks,
                    replica_ack_timeout=ack_wait or 0.001,
                    keep_connections=_keep_connections(keep_connections),
                ),
                key_prefix=self.key_prefix,
                default_ttl=self.default_ttl,
                cluster=cluster_mode,
                timeout=wait,
                owns_client=True,
            )
        )

    @property
    def retry_budget(self) -> float:
        """The longest a failing read can take before it raises ``StorageUnavailable``."""
        return self.timeout * (self.retry_attempts + 1) + self.retry_delay * self.retry_attempts

    def __repr__(self) -> str:
        return f"<RedisStorage alias={self.alias!r} {self._engine.call.description}>"  # type: ignore[attr-defined]


def _public(url: str) -> str:
    """A URL without its password, for messages and ``repr``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url if "://" in url else f"redis://{url}")
    if parts.password is None:
        return urlunsplit(parts)
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
