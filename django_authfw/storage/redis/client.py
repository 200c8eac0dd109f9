"""redis-py clients for the Redis storages, and the retry policy every call goes through.

Three shapes, chosen by :class:`~django_authfw.storage.RedisStorage`'s options:

* a single server (``url``) through a blocking pool of ``pool_size`` connections;
* a Redis Cluster (``cluster_mode=True`` with ``cluster_urls`` or ``url`` as seed nodes);
* a primary found through Sentinel (``master_name`` and ``sentinels``).

redis-py's own retries are switched off (its default backs off exponentially for tens of
seconds); :class:`RedisCaller` retries instead, within a budget the caller can compute:
``timeout * (retry_attempts + 1) + retry_delay * retry_attempts``. A refused password is not
retried at all (:class:`CredentialsRefused`): no retry can fix it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import UnixDomainSocketConnection
from redis.connection import parse_url as redis_parse_url
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from ...exceptions import CredentialsRefused, InvalidInput, StorageError, StorageUnavailable

T = TypeVar("T")

# Errors after which the same call may succeed: the server is unreachable, slow, loading, a
# demoted primary refuses writes during a failover, or the cluster is re-sharding.
TRANSIENT: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
    ClusterError,
    OSError,
)


class NotReplicated(ConnectionError):
    """A write reached the primary but not ``replica_acks`` replicas in time (retried)."""


# redis-py raises these when the server refuses AUTH/HELLO (WRONGPASS, "invalid password",
# AUTH sent to a server without a password), or a command before AUTH (NOAUTH). The first
# and last are ConnectionError subclasses, so they must be told apart before TRANSIENT is.
_REFUSED: tuple[type[Exception], ...] = (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
)
# Replies that mean the same if a parser left them as a plain ResponseError; the last is how
# Redis 7 refuses a long command (a script call, a token write) from a client that has not
# authenticated, before it even reads the command.
_REFUSED_REPLIES = ("WRONGPASS", "NOAUTH", "Protocol error: unauthenticated")
# Sentinel.discover_master() keeps only the repr() of each Sentinel's error in the text of
# the MasterNotFoundError it raises (no __cause__): "<client> - auth:AuthenticationError" in
# redis-py 8, "<client> - AuthenticationError('...')" before. The class name is in both.
_REFUSED_NAMES = tuple(cls.__name__ for cls in _REFUSED)


def credentials_refused(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it wraps, says the server refused our credentials."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _REFUSED):
            return True
        text = str(current)
        if isinstance(current, ResponseError) and text.startswith(_REFUSED_REPLIES):
            return True
        if isinstance(current, MasterNotFoundError) and any(n in text for n in _REFUSED_NAMES):
            return True
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return False


def _refused(description: str, exc: BaseException) -> CredentialsRefused:
    if isinstance(exc, MasterNotFoundError):
        whose, fix = "the Sentinels", "sentinel_password (the Sentinels' requirepass)"
        # Its text repeats every Sentinel client's repr; the first clause says enough.
        detail = str(exc).split(" : ", 1)[0]
    else:
        whose, fix = "the server", "the password (and username) in the URL or cache OPTIONS"
        detail = str(exc)
    return CredentialsRefused(
        f"Redis at {description}: {whose} refused the credentials (wrong or missing password "
        f"or username): {detail}. Check {fix}; this is a configuration error and is not "
        "retried."
    )


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


_SCHEMES = ("redis://", "rediss://", "unix://")


def parse_url(url: str, default_port: int = 6379) -> dict[str, Any]:
    """Connection keyword arguments for ``url``, parsed by redis-py's own ``parse_url``.

    ``redis://[user:pass@]host[:port][/db]``, ``rediss://`` (TLS) and ``unix://path``, with every
    query option redis-py knows (``?ssl_ca_certs=/path/ca.pem&ssl_cert_reqs=required``,
    ``?socket_keepalive=true``, ``?db=2`` ...); a bare ``host:port`` means ``redis://host:port``.
    Host, port and db default to ``localhost``, ``default_port`` and 0.
    """
    if not isinstance(url, str) or not url:
        raise InvalidInput(f"A Redis URL must be a non-empty string, not {url!r}.")
    if "://" not in url:
        url = f"redis://{url}"
    if not url.startswith(_SCHEMES):
        scheme = url.split("://", 1)[0]
        raise InvalidInput(
            f"Redis URL scheme {scheme!r} is not supported; use redis://, rediss:// or unix://."
        )
    try:
        options: dict[str, Any] = redis_parse_url(url)
    except ValueError as exc:
        # The message names the option, never the URL (which may hold a password).
        raise InvalidInput(f"Bad Redis URL: {exc}") from None
    if options.get("connection_class") is not UnixDomainSocketConnection:
        options.setdefault("host", "localhost")
        options.setdefault("port", default_port)
    options.setdefault("db", 0)
    return options


def _ssl_options(options: dict[str, Any]) -> dict[str, Any]:
    """The TLS options of parsed URL ``options``, as ``ssl=`` and ``ssl_*`` keywords."""
    ssl = options.get("connection_class") is redis.SSLConnection
    return {"ssl": ssl, **{k: v for k, v in options.items() if ssl and k.startswith("ssl_")}}


def _common(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": _no_retry(),
        # RESP2 with no client-side extras: nothing is sent that an older server or a proxy
        # might refuse.
        "protocol": 2,
    }


def single_client(
    url: str, *, pool_size: int, timeout: float, wait_for_connection: bool = True
) -> redis.Redis:
    """A client of one server. With ``wait_for_connection`` callers wait up to ``timeout``
    for a free pooled connection; without, redis-py's pool refuses them at once."""
    options = parse_url(url)
    options.setdefault("connection_class", redis.Connection)
    # The URL's own query options (a socket_timeout, TLS files) win over our defaults, as in
    # redis-py's from_url.
    kwargs = {**_common(timeout), **options}
    pool = (
        redis.BlockingConnectionPool(max_connections=pool_size, timeout=timeout, **kwargs)
        if wait_for_connection
        else redis.ConnectionPool(max_connections=pool_size, **kwargs)
    )
    return redis.Redis(connection_pool=pool)


def cluster_client(
    urls: Sequence[str], *, pool_size: int, timeout: float, wait_for_connection: bool = True
) -> RedisCluster:
    """A Redis Cluster client seeded with ``urls`` (any reachable node is enough); its
    per-node pools wait for a free connection as in :func:`single_client`."""
    endpoints = [parse_url(url) for url in urls]
    if not endpoints:
        raise InvalidInput("cluster_mode=True needs cluster_urls (or url) naming seed nodes.")
    first = endpoints[0]
    if first.get("connection_class") is UnixDomainSocketConnection:
        raise InvalidInput("A Redis Cluster is reached over TCP: use redis:// or rediss:// seeds.")
    return RedisCluster(
        startup_nodes=[ClusterNode(e["host"], e["port"]) for e in endpoints],
        username=first.get("username"),
        password=first.get("password"),
        **_ssl_options(first),
        max_connections=pool_size,
        connection_pool_class=(
            functools.partial(redis.BlockingConnectionPool, timeout=timeout)
            if wait_for_connection
            else redis.ConnectionPool
        ),
        # No retries of its own (RedisCaller owns the budget); MOVED/ASK redirects are
        # followed regardless.
        **_common(timeout),
    )


class BoundedSentinelPool(SentinelConnectionPool):
    """A Sentinel pool that makes callers wait for a free connection (up to ``wait`` seconds).

    redis-py's Sentinel pool raises "Too many connections" as soon as ``max_connections`` are
    in use; under a burst that would turn into errors instead of a short queue, as the
    blocking pool gives for a single server. RedisStorage uses it with ``wait=timeout``; a
    django-redis Sentinel alias can name it in ``CONNECTION_POOL_CLASS`` (``wait`` and
    ``max_connections`` in ``CONNECTION_POOL_KWARGS``; ``wait`` defaults to 20 s, as
    ``BlockingConnectionPool``'s ``timeout`` does).
    """

    def __init__(
        self, service_name: str, sentinel_manager: Any, *, wait: float = 20.0, **kwargs: Any
    ) -> None:
        # redis-py leaves SentinelConnectionPool.__init__ unannotated, and mypy's
        # untyped_calls_exclude does not reach a super() call.
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._slots = threading.Semaphore(self.max_connections)
        self._handed_out: set[int] = set()
        self._slots_lock = threading.Lock()
        self._wait = wait

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._slots.acquire(timeout=self._wait):
            raise ConnectionError(f"No free connection in the pool within {self._wait}s")
        try:
            connection = super().get_connection(*args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        with self._slots_lock:
            self._handed_out.add(id(connection))
        return connection

    def release(self, connection: Any) -> None:
        try:
            super().release(connection)
        finally:
            with self._slots_lock:
                mine = id(connection) in self._handed_out
                self._handed_out.discard(id(connection))
            if mine:
                self._slots.release()


def sentinel_client(
    master_name: str,
    sentinels: Sequence[str],
    *,
    url: str,
    pool_size: int,
    timeout: float,
    sentinel_password: str | None,
    wait_for_connection: bool = True,
) -> redis.Redis:
    """A client of the primary that the Sentinels name; it follows failovers by itself.

    With ``wait_for_connection`` its pool is a :class:`BoundedSentinelPool` that queues
    callers up to ``timeout``; without, redis-py's Sentinel pool, which refuses them at once."""
    if not sentinels:
        raise InvalidInput("master_name needs sentinels, e.g. ['redis://sentinel1:26379'].")
    nodes = [parse_url(s, default_port=26379) for s in sentinels]
    data = parse_url(url)
    if any(n.get("connection_class") is UnixDomainSocketConnection for n in nodes):
        raise InvalidInput("Sentinels are reached over TCP: use redis:// URLs for them.")
    sentinel_kwargs: dict[str, Any] = _common(timeout)
    if sentinel_password is not None:
        sentinel_kwargs["password"] = sentinel_password
    manager = Sentinel(
        [(n["host"], n["port"]) for n in nodes],
        sentinel_kwargs=sentinel_kwargs,
        **_common(timeout),
    )
    client: redis.Redis = manager.master_for(
        master_name,
        connection_pool_class=(
            functools.partial(BoundedSentinelPool, wait=timeout)
            if wait_for_connection
            else SentinelConnectionPool
        ),
        db=data["db"],
        username=data.get("username"),
        password=data.get("password"),
        **_ssl_options(data),
        max_connections=pool_size,
        **_common(timeout),
    )
    return client


def django_cache_client(cache: Any) -> redis.Redis | None:
    """The redis-py client behind a Django cache alias, or None if it is not Redis-backed.

    Supports django-redis (``django_redis.cache.RedisCache`` with its default or Sentinel
    client) and Django's own ``django.core.cache.backends.redis.RedisCache`` (writes go to its
    first server, the primary).
    """
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):  # django-redis
        if type(client).__name__ == "ShardClient":
            raise StorageError(
                "CacheStorage cannot use a django-redis ShardClient: it spreads keys over "
                "servers by hash, which breaks atomic multi-key writes. Use the default client, "
                "Redis Cluster (RedisStorage(cluster_mode=True)) or Sentinel instead."
            )
        found: redis.Redis = client.get_client(write=True)
        return found
    # Private attributes, because Django's RedisCache has no public way to its client: ``_cache``
    # (the RedisCacheClient) and its ``get_client(key, write=)``; ``_pools`` tells it apart from
    # other backends' ``_cache``. django-redis's ``client.get_client(write=True)`` above is public.
    inner = getattr(cache, "_cache", None)
    if inner is not None and hasattr(inner, "get_client") and hasattr(inner, "_pools"):
        primary: redis.Redis = inner.get_client(None, write=True)
        return primary
    return None


def client_timeout(client: Any, default: float = 5.0) -> float:
    """The socket timeout a client was configured with (used to size waits)."""
    try:
        value = client.connection_pool.connection_kwargs.get("socket_timeout")
    except AttributeError:
        value = None
    return float(value) if value else default


# Bumped in a forked child: a client lent out before the fork holds the parent's socket.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class ClientShelf:
    """Single-connection clients of one pool, each lent to one call at a time.

    redis-py checks a connection out of its pool for every command and, to make sure the
    connection holds no unread reply, polls its socket first: a system call and some
    bookkeeping that cost a third of a ``GET`` on a loopback server. A client that keeps its
    connection skips both. A lent client is returned after a call that completed and closed
    (its connection back to the pool, which checks it as usual) after any error, so a
    connection left mid-reply is never reused. At most half of the pool's connections are
    kept here, so that pipelines, which take a connection of the pool, always find one.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.pooled = client  # the client that takes a pooled connection per command
        self._idle: list[redis.Redis] = []
        self._limit = max(0, min(client.connection_pool.max_connections // 2, 64))
        self._count = 0
        self._lock = threading.Lock()
        self._generation = _fork_generation

    def borrow(self) -> redis.Redis | None:
        """An idle client, a new one while under the limit, else None (use the pool)."""
        if self._generation != _fork_generation:
            # Forget, without closing, the clients of the parent process's sockets.
            self._idle, self._count, self._generation = [], 0, _fork_generation
            self._lock = threading.Lock()
        try:
            return self._idle.pop()
        except IndexError:
            pass
        with self._lock:
            if self._count >= self._limit:
                return None
            self._count += 1
        try:
            return redis.Redis(
                connection_pool=self.pooled.connection_pool, single_connection_client=True
            )
        except BaseException:
            self._forget()
            raise

    def give_back(self, client: redis.Redis) -> None:
        self._idle.append(client)

    def discard(self, client: redis.Redis) -> None:
        """Close a client whose call failed; its connection goes back to the pool."""
        self._forget()
        with contextlib.suppress(RedisError, OSError):
            client.close()

    def _forget(self) -> None:
        with self._lock:
            self._count -= 1

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            self.discard(client)


# One shelf per pool, kept on the pool: several storages on one cache alias share its pool
# (django-redis keeps one per LOCATION for the whole process), and their kept connections
# together must still leave half of it free, or a blocking pool is starved for good.
_shelves_lock = threading.Lock()


def _shelf_for(client: Any) -> ClientShelf | None:
    # Cluster clients route each command to a node's own pool: nothing to pin there.
    pool = getattr(client, "connection_pool", None)
    if type(client) is not redis.Redis or not isinstance(
        getattr(pool, "max_connections", None), int
    ):
        return None
    with _shelves_lock:
        shelf = getattr(pool, "_authfw_shelf", None)
        if not isinstance(shelf, ClientShelf):
            shelf = ClientShelf(client)
            pool._authfw_shelf = shelf  # type: ignore[union-attr]
    return shelf


class RedisCaller:
    """Runs calls against a client, retrying transient failures within a fixed budget.

    Every redis-py error leaves as a :class:`StorageError`: :class:`StorageUnavailable` for
    unreachable/slow/failing-over servers once the retries are spent, so no failure is ever
    taken for an empty answer (token verification fails closed); :class:`CredentialsRefused`
    at once, with no retry, when the server or the Sentinels refuse the password.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        description: str,
        retry_attempts: int,
        retry_delay: float,
        replica_acks: int = 0,
        replica_ack_timeout: float = 1.0,
        keep_connections: bool = True,
    ) -> None:
        # The client is made on first use: a Cluster client talks to the servers as soon as
        # it is built, and building a storage (at startup) must not need Redis to be up.
        self._connect = connect
        self._client: Any = None
        self._shelf: ClientShelf | None = None
        self._keep_connections = keep_connections
        self._lock = threading.Lock()
        self.description = description
        self.retry_attempts = retry_attempts
        self.retry_delay = retry_delay
        self.replica_acks = replica_acks
        self.replica_ack_timeout = replica_ack_timeout

    @property
    def client(self) -> Any:
        """The redis-py client, built on first use (may raise a redis-py error)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    client = self._connect()
                    self._shelf = _shelf_for(client) if self._keep_connections else None
                    self._client = client
        return self._client

    def __call__(
        self,
        operation: Callable[..., T],
        *args: Any,
        idempotent: bool = True,
        write: bool = False,
    ) -> T:
        """Run ``operation(client, *args)``.

        Only idempotent operations are retried: a write whose reply was lost may have been
        applied, and repeating one that is not idempotent (an increment) would apply it twice.
        With ``replica_acks``, a ``write`` counts as done only once that many replicas have it
        (``WAIT`` on the connection that wrote).
        """
        attempts = self.retry_attempts + 1 if idempotent else 1
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.retry_delay)
            try:
                if write and self.replica_acks:
                    return self._replicated(operation, args)
                client = self.client
                if idempotent and self._shelf is not None:
                    return self._on_shelf_client(self._shelf, operation, args)
                return operation(client, *args)
            except TRANSIENT as exc:
                if credentials_refused(exc):
                    raise _refused(self.description, exc) from exc
                last = exc
            except ResponseError as exc:
                if credentials_refused(exc):
                    raise _refused(self.description, exc) from exc
                raise StorageError(f"Redis at {self.description} refused a command: {exc}") from exc
            except RedisClusterException as exc:
                # Not a RedisError: what a Cluster client raises when no seed node could be
                # used (the node's error is its __cause__) or a slot has no node yet.
                if credentials_refused(exc):
                    raise _refused(self.description, exc) from exc
                if not isinstance(exc, SlotNotCoveredError) and not isinstance(
                    exc.__cause__, TRANSIENT
                ):
                    raise StorageError(f"Redis at {self.description} failed: {exc}") from exc
                last = exc
            except RedisError as exc:
                raise StorageError(f"Redis at {self.description} failed: {exc}") from exc
        raise StorageUnavailable(
            f"Redis at {self.description} is unreachable or too slow "
            # The client's own message may end with a full stop already.
            f"({attempts} attempt{'s' if attempts > 1 else ''}): {str(last).rstrip('.')}. "
            "Check that the server is up, or raise timeout/retry_attempts."
        ) from last

    @staticmethod
    def _on_shelf_client(
        shelf: ClientShelf, operation: Callable[..., T], args: tuple[Any, ...]
    ) -> T:
        # Only idempotent calls run here: a kept connection that the server closed while idle
        # fails the first command sent on it, and only an idempotent call may be retried.
        lent = shelf.borrow()
        if lent is None:
            return operation(shelf.pooled, *args)
        try:
            result = operation(lent, *args)
        except BaseException:
            shelf.discard(lent)
            raise
        shelf.give_back(lent)
        return result

    def _replicated(self, operation: Callable[..., T], args: tuple[Any, ...]) -> T:
        # WAIT counts the writes of its own connection, so the operation runs on one pinned
        # connection and WAIT follows on it.
        pinned = redis.Redis(
            connection_pool=self.client.connection_pool, single_connection_client=True
        )
        try:
            result = operation(pinned, *args)
            acked = int(
                pinned.execute_command(
                    "WAIT", self.replica_acks, max(1, int(self.replica_ack_timeout * 1000))
                )
            )
        finally:
            pinned.close()
        if acked < self.replica_acks:
            raise NotReplicated(
                f"the write reached the primary but {acked} of {self.replica_acks} replicas "
                f"within {self.replica_ack_timeout}s"
            )
        return result

    def close(self) -> None:
        shelf, self._shelf = self._shelf, None
        if shelf is not None:
            shelf.close()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(RedisError):  # closing a dead server's client must not fail
                client.close()
                # A client given its pool does not close the pool's connections itself.
                pool = getattr(client, "connection_pool", None)
                if pool is not None:
                    pool.disconnect()
