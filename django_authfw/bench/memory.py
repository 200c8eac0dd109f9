"""Memory (or disk) each stored token costs, measured around the fill of the store.

* **Redis**: the server's ``used_memory`` (``INFO memory``; summed over the primaries of a
  Cluster) before and after storing the
  tokens, divided by their number. It counts everything a token brings: its record, both digest
  pointers, its user-index entry, the TTLs and the allocator's rounding. Another client writing
  to the same server meanwhile shows up in it, so the ``MEMORY USAGE`` of the keys of a sample
  of tokens is reported beside it (it misses the TTL entries and allocator slack).
* **PostgreSQL**: ``pg_total_relation_size`` of the tokens table (heap, TOAST and every index)
  before and after, divided by the rows added. Free space left by deleted rows is filled
  before the files grow, so on a table with such space the delta under-counts: the size of
  the whole table over its rows (which counts that space) is reported beside it.
  **SQLite**: the database file's page count.
* **In this process**: :mod:`tracemalloc` around the storing of a sample of up to
  :data:`TRACED_SAMPLE` tokens (tracing slows every allocation, so not the whole fill), minus
  what the bench itself keeps per token (the raw secrets it presents later).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from dataclasses import dataclass
from typing import Any

from django.db import connections

from ..storage import AuthStorage
from ..tokens import digest
from .probe import Backend, engine_of, redis_info

TRACED_SAMPLE = 20_000


@dataclass
class MemoryFigure:
    """Bytes per stored token and how they were measured."""

    bytes_per_token: float | None
    method: str
    tokens: int = 0
    detail: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bytes_per_token": None
            if self.bytes_per_token is None
            else round(self.bytes_per_token, 1),
            "method": self.method,
            "tokens": self.tokens,
            **(self.detail or {}),
        }


def _tokens_table() -> str:
    from ..models import Token

    return Token._meta.db_table


def _database_size(backend: Backend) -> int | None:
    assert backend.db_alias is not None
    connection = connections[backend.db_alias]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [_tokens_table()])
            return int(cursor.fetchone()[0])
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA page_count")
            pages = int(cursor.fetchone()[0])
            cursor.execute("PRAGMA page_size")
            return pages * int(cursor.fetchone()[0])
    return None


def _token_rows(backend: Backend) -> int:
    from ..models import Token

    assert backend.db_alias is not None
    return Token._base_manager.using(backend.db_alias).count()


def _redis_used_memory(backend: Backend) -> int:
    return sum(int(info["used_memory"]) for info in redis_info(backend.redis, "memory"))


class MemoryMeter:
    """Reads the store's size before and after a fill (or a traced part of it)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._before: int | None = None
        self._started_tracing = False

    @property
    def traced(self) -> bool:
        """Whether this store is measured with tracemalloc (only part of the fill)."""
        return self.backend.kind == "in_process"

    def start(self, kept: list[list[str]]) -> None:
        """Take the "before" reading; ``kept`` are the bench's own lists of raw secrets."""
        kind = self.backend.kind
        if kind == "in_process":
            gc.collect()
            if not tracemalloc.is_tracing():
                tracemalloc.start()
                self._started_tracing = True
            self._kept_sizes = [(len(lst), sys.getsizeof(lst)) for lst in kept]
            self._before = tracemalloc.get_traced_memory()[0]
        elif kind == "redis":
            self._before = _redis_used_memory(self.backend)
        elif kind == "database":
            self._before = _database_size(self.backend)

    def stop(self, count: int, kept: list[list[str]]) -> MemoryFigure:
        """Take the "after" reading for ``count`` tokens stored since :meth:`start`."""
        kind = self.backend.kind
        before = self._before
        if before is None or count <= 0:
            self._stop_tracing()
            return MemoryFigure(None, "not measured for this kind of storage")
        if kind == "in_process":
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            self._stop_tracing()
            # The bench keeps the raw secrets it stored (to present them again): those
            # strings and the lists' growth are not the storage's memory.
            own = 0
            for lst, (length, size) in zip(kept, self._kept_sizes, strict=True):
                own += sys.getsizeof(lst) - size
                own += sum(sys.getsizeof(raw) for raw in lst[length:])
            return MemoryFigure(
                (after - before - own) / count,
                "tracemalloc delta per token (bench's own raw secrets excluded)",
                count,
            )
        if kind == "redis":
            after = _redis_used_memory(self.backend)
            return MemoryFigure(
                (after - before) / count, "Redis INFO used_memory delta per token", count
            )
        after_size = _database_size(self.backend)
        if after_size is None:
            return MemoryFigure(None, "no size query for this database", count)
        if self.backend.vendor != "postgresql":
            method = "SQLite database file growth per row (page_count x page_size)"
            return MemoryFigure((after_size - before) / count, method, count)
        # Space freed by deleted rows (an earlier run's cleanup) is reused before the files
        # grow, so on a table with free space the delta under-counts; the whole table over its
        # rows is the bound from the other side (it counts that free space too).
        rows = _token_rows(self.backend)
        return MemoryFigure(
            (after_size - before) / count,
            "pg_total_relation_size(tokens table) delta per row (heap + TOAST + indexes)",
            count,
            {"table_bytes_per_row": round(after_size / rows, 1) if rows else None},
        )

    def _stop_tracing(self) -> None:
        if self._started_tracing:
            tracemalloc.stop()
            self._started_tracing = False


def redis_key_usage(
    backend: Backend, storage: AuthStorage, raw_access: list[str], size: int = 100
) -> dict[str, Any] | None:
    """``MEMORY USAGE`` of every key of a sample of stored tokens, per token.

    The user index is one set for all of them, so its size is shared out by its member count.
    """
    if backend.kind != "redis" or not raw_access or backend.key_prefix is None:
        return None
    sample = [
        token
        for token in (storage.get_token_by_access(digest(raw)) for raw in raw_access[:size])
        if token is not None
    ]
    if not sample:
        return None
    from ..storage.redis.engine import RedisEngine

    engine = engine_of(storage)
    if not isinstance(engine, RedisEngine):
        return None
    keys = engine.keys
    client = backend.redis
    names = [name for token in sample for name in engine.token_keys(token)]
    # One call per key: a Cluster spreads them over its primaries.
    per_key = [int(client.memory_usage(name, samples=0) or 0) for name in names]
    index_key = keys.user_tokens(sample[0].user_id)
    index = int(client.memory_usage(index_key, samples=0) or 0)
    members = int(client.scard(index_key) or 1)
    return {
        "memory_usage_bytes_per_token": round(sum(per_key) / len(sample) + index / members, 1),
        "memory_usage_sample": len(sample),
    }
