"""The Redis keyspace: records as JSON under :mod:`~django_authfw.storage.redis.keys` names.

Consistency rules (the user index never misses a live token):

* **Single server / Sentinel**: a token's record, its pointers and its user-index entry are
  written and deleted by one Lua script each, so no reader ever sees half of a change.
* **Cluster**: keys of one token live in different slots, so no script can cover them. Writes
  are ordered: the index entry first, then the record, then the pointers; deletes go the other
  way (record first, index entry last). A crash in between can leave a stale index entry or a
  dangling pointer, never a live token outside its user's index. Readers treat indexes and
  pointers as hints and check the record itself (its ``user_id``, its digest), and
  ``cleanup_expired_*`` prunes stale entries.

Every record change that depends on the current value (revoke, update, touch, delete) is a
compare-and-set on the record's JSON, retried on conflict, so two concurrent revocations
cannot both succeed. TTLs are relative (``PX``): the app server's clock decides the record's
remaining life and the Redis server only counts it down, so clock skew between the two does
not move expiries.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from redis.exceptions import NoScriptError, ResponseError

from ... import validate
from ...exceptions import StorageError
from ...records import (
    AuditEvent,
    AuthToken,
    KVEntry,
    SessionData,
    StorageStatistics,
    now_ts,
    utcnow,
)
from ...tokens import token_id_for
from .. import codec
from ..engine import CacheEngine
from . import scripts as redis_scripts
from .client import NotReplicated, RedisCaller
from .keys import Keyspace

logger = logging.getLogger("django_authfw.storage")

PUT_RECORD = redis_scripts.Script(redis_scripts.PUT_RECORD)
SET_RECORD = redis_scripts.Script(redis_scripts.SET_RECORD)
INDEX_ADD = redis_scripts.Script(redis_scripts.INDEX_ADD)
DELETE_RECORD = redis_scripts.Script(redis_scripts.DELETE_RECORD)
DELETE_IF_EQUAL = redis_scripts.Script(redis_scripts.DELETE_IF_EQUAL)
GET_VIA_POINTER = redis_scripts.Script(redis_scripts.GET_VIA_POINTER)
PRUNE_INDEX = redis_scripts.Script(redis_scripts.PRUNE_INDEX)
KV_INCR = redis_scripts.Script(redis_scripts.KV_INCR)
AUDIT_APPEND = redis_scripts.Script(redis_scripts.AUDIT_APPEND)
AUDIT_TRIM = redis_scripts.Script(redis_scripts.AUDIT_TRIM)

WRITTEN, CHANGED, GONE = 1, 0, -1
# Compare-and-set attempts before giving up; a conflict needs another writer on the very same
# record between our read and our write, so a handful of attempts is plenty.
MAX_CAS_ATTEMPTS = 16
AUDIT_PAGE = 500
PIPELINE_BATCH = 500
"""Records written per pipeline (imports, ``revoke_user_tokens``). Each record is one script
call of a few hundred bytes, so a pipeline stays well under a megabyte, and the server
answers it in a millisecond or two: other clients are never kept waiting long."""
MGET_BATCH = 1000
"""Keys per MGET: a read of a huge user index is split so no single reply is huge."""

T = TypeVar("T")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _time_key(moment: datetime) -> str:
    return f"{max(0, codec.epoch_us(moment)):017d}"


def _chunks_of(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _segments(
    records: Iterable[T], names: Callable[[T], tuple[str, ...]], size: int
) -> Iterator[list[T]]:
    """``records`` in order, in lists of at most ``size`` in which no name repeats.

    A list is written with one pipeline, whose writes land in no guaranteed order on a
    Cluster (one node after another) and are planned together; a record whose name (id,
    record id) is already in the list starts the next list, so a later copy of the same
    record is written after the earlier one, as one by one.
    """
    chunk: list[T] = []
    seen: set[str] = set()
    for record in records:
        keys = names(record)
        if chunk and (len(chunk) >= size or not seen.isdisjoint(keys)):
            yield chunk
            chunk, seen = [], set()
        chunk.append(record)
        seen.update(keys)
    if chunk:
        yield chunk


@dataclass(frozen=True, slots=True)
class _Put:
    """One record write of a batch: what ``_put_token``/``_put_session`` hand their script."""

    record: str
    index: str
    member: str
    pointers: list[str]
    raw: bytes
    deadline: datetime | None
    """When the record is over (its TTL is counted from the moment of writing); None: none."""
    expected: bytes | None = None


class RedisEngine(CacheEngine):
    """The storage contract on one Redis deployment (single server, Sentinel or Cluster)."""

    backend_name = "redis"
    in_process = False
    native_expiry = True

    def __init__(
        self,
        caller: RedisCaller,
        *,
        key_prefix: str,
        default_ttl: timedelta | None,
        cluster: bool,
        timeout: float,
        owns_client: bool,
    ) -> None:
        super().__init__()
        self.call = caller
        self.keys = Keyspace(key_prefix)
        self.default_ttl = default_ttl
        self.cluster = cluster
        self.timeout = timeout
        self._owns_client = owns_client

    # Shared helpers -----------------------------------------------------------------------

    def _get(self, key: str) -> bytes | None:
        value: bytes | None = self.call(lambda c: c.get(key))
        return value

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        if self.cluster:
            # Split by slot and pipelined per node by redis-py.
            return self.call(lambda c: c.mget_nonatomic(keys))
        if len(keys) <= MGET_BATCH:
            return self.call(lambda c: c.mget(keys))

        def chunked(c: Any) -> list[bytes | None]:
            pipe = c.pipeline(transaction=False)
            for start in range(0, len(keys), MGET_BATCH):
                pipe.mget(keys[start : start + MGET_BATCH])
            return [value for reply in pipe.execute() for value in reply]

        return self.call(chunked)

    def _execute(self, pipe: Any, *, raise_on_error: bool = True) -> list[Any]:
        """Run a pipeline of writes on one server; with ``replica_acks``, WAIT on its own
        connection (the one that wrote) and fail, to be retried, if too few replicas have it.
        With ``raise_on_error=False`` a command's error is its reply (redis-py's pipeline)."""
        acks = int(getattr(self.call, "replica_acks", 0) or 0)
        if acks:
            wait_ms = max(1, int(self.call.replica_ack_timeout * 1000))
            pipe.execute_command("WAIT", acks, wait_ms)
        replies: list[Any] = pipe.execute(raise_on_error=raise_on_error)
        if acks:
            acked = replies.pop()
            if isinstance(acked, Exception):
                raise acked
            if int(acked) < acks:
                raise NotReplicated(
                    f"the writes reached the primary but {acked} of {acks} replicas "
                    f"within {self.call.replica_ack_timeout}s"
                )
        return replies

    def _run_loaded(
        self, c: Any, script: redis_scripts.Script, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """Run ``script`` once per ``(keys, args)`` of ``calls`` on one server, in one pipeline
        opened by ``SCRIPT LOAD``; return the replies in the order of ``calls``.

        Another client's ``SCRIPT FLUSH`` (an operator, a deploy tool) can land between the
        ``SCRIPT LOAD`` and the ``EVALSHA`` calls of a long pipeline, which spans many reads
        on the server: those calls are answered NOSCRIPT and did nothing, so they alone are
        sent again, as ``EVAL`` with the source (which no flush can miss), as redis-py's
        ``Script`` reloads for a single call. The other replies are kept, so nothing is
        written twice and every reply is the write's own. Any other error is raised, as a
        failing pipeline always was.
        """
        pipe = c.pipeline(transaction=False)
        script.load_in(pipe)
        for keys, args in calls:
            script.queue_loaded(pipe, keys, args)
        got = self._execute(pipe, raise_on_error=False)
        replies = got[1:]
        again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        for reply in got:
            if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                raise reply  # the first error, as a pipeline raising on error does
        if again:
            pipe = c.pipeline(transaction=False)
            for i in again:
                script.queue(pipe, *calls[i])
            for i, reply in zip(again, self._execute(pipe), strict=True):
                replies[i] = reply
        return replies

    def _put_many(self, puts: list[_Put]) -> list[Any]:
        """Write several records as ``_put_token``/``_put_session`` write one, with the same
        scripts, keys and TTLs, one pipeline per step; return each script's reply.

        The records must be distinct keys (see :func:`_segments`). One server: one
        ``PUT_RECORD`` per record, all in one pipeline. Cluster: the index entries of the whole
        batch, then its records, then the pointers of the records written, so each record
        keeps the order its single write has. A pipeline that fails raises (nothing is
        reported written); the writes are upserts, so a retry or a second run repeats them
        harmlessly.
        """
        if not puts:
            return []

        def px_of(put: _Put, now: datetime) -> int:
            if put.deadline is None:
                return 0
            return max(1, codec.remaining_ms(put.deadline, now))

        def args(put: _Put, px: int) -> list[Any]:
            mode = "set" if put.expected is None else "cas"
            return [put.raw, px, put.member, mode, put.expected or b""]

        def write(c: Any) -> list[Any]:
            now = utcnow()
            pxs = [px_of(put, now) for put in puts]
            if not self.cluster:
                calls = [
                    ([put.record, put.index, *put.pointers], args(put, px))
                    for put, px in zip(puts, pxs, strict=True)
                ]
                return self._run_loaded(c, PUT_RECORD, calls)
            pipe = c.pipeline()
            for put, px in zip(puts, pxs, strict=True):
                INDEX_ADD.queue(pipe, [put.index], [put.member, px])
            pipe.execute()
            pipe = c.pipeline()
            for put, px in zip(puts, pxs, strict=True):
                SET_RECORD.queue(pipe, [put.record], args(put, px))
            results: list[Any] = pipe.execute()
            pipe = c.pipeline()
            pointers = 0
            for put, px, result in zip(puts, pxs, results, strict=True):
                if int(result[0]) == WRITTEN:
                    for pointer in put.pointers:
                        # Pointers have a TTL whenever records do (tokens always have one).
                        pipe.set(pointer, put.member, px=px or None)
                        pointers += 1
            if pointers:
                pipe.execute()
            return results

        return self.call(write, write=True)

    def _members(self, key: str) -> list[str]:
        return sorted(_text(m) for m in self.call(lambda c: c.smembers(key)))

    def _scan(self, pattern: str, count: int = 1000, *, exact: bool = False) -> Iterator[list[str]]:
        """Keys matching ``pattern`` in chunks, one chunk per SCAN reply.

        SCAN may return a key more than once (when the keyspace shrinks or is rehashed during
        the scan). A chunk never repeats a key; with ``exact`` no later chunk repeats one
        either, which costs a set of every key returned, so only counts ask for it. Without
        it memory is one reply, whatever the size of the keyspace: readers that feed an
        import (migration, backup then restore) upsert, so a repeated record is written
        twice with the same content, and is counted twice at worst.
        """
        seen: set[str] = set()
        if self.cluster:
            nodes = self.call(lambda c: c.get_primaries())
            clients = [self.call(lambda c, n: c.get_redis_connection(n), n) for n in nodes]
        else:
            clients = [None]
        for node_client in clients:
            cursor = 0
            while True:

                def scan(c: Any, cursor: int = cursor, node_client: Any = node_client) -> Any:
                    return (node_client or c).scan(cursor, match=pattern, count=count)

                cursor, found = self.call(scan)
                if exact:
                    fresh = [k for k in dict.fromkeys(_text(key) for key in found) if k not in seen]
                    seen.update(fresh)
                else:
                    fresh = list(dict.fromkeys(_text(key) for key in found))
                if fresh:
                    yield fresh
                if not cursor:
                    break

    def _chunks(self, pattern: str, size: int) -> Iterator[list[str]]:
        """Scanned keys regrouped into lists of exactly ``size`` (the last may be shorter),
        none of which repeats a key (a later list may repeat one of an earlier list)."""
        buffer: dict[str, None] = {}
        for keys in self._scan(pattern, count=size):
            buffer.update(dict.fromkeys(keys))
            while len(buffer) >= size:
                chunk = list(itertools.islice(buffer, size))
                for key in chunk:
                    del buffer[key]
                yield chunk
        if buffer:
            yield list(buffer)

    def _prune(self, stale: list[tuple[str, str, list[tuple[str, bytes]]]]) -> int:
        """Remove index members whose record is missing or names another user.

        ``stale`` holds (index key, record key prefix, [(member, record value seen)]). A single
        server checks each record again inside the script. In Cluster mode the record lives in
        another slot, so the check is repeated once after ``timeout``: a write still in flight
        by then has failed on its client, which never handed out its token. Returns how many
        members were removed.
        """
        stale = [item for item in stale if item[2]]
        if not stale:
            return 0
        removed = 0
        if not self.cluster:
            for index, record_prefix, members in stale:
                # A script per MGET_BATCH members: the server runs nothing else meanwhile, so
                # the index of a user with 100,000 expired tokens is pruned in short steps.
                for chunk in _chunks_of(members, MGET_BATCH):
                    args: list[Any] = [record_prefix]
                    for member, seen in chunk:
                        args.extend([member, seen])
                    removed += int(
                        self.call(lambda c, i, a: PRUNE_INDEX(c, [i], a), index, args, write=True)
                    )
            return removed
        time.sleep(self.timeout)
        for index, record_prefix, members in stale:
            current = self._mget([record_prefix + member for member, _ in members])
            gone = [
                member
                for (member, seen), now in zip(members, current, strict=True)
                if (now or b"") == seen
            ]
            if gone:
                removed += int(self.call(lambda c, i, g: c.srem(i, *g), index, gone, write=True))
        return removed

    # Tokens -------------------------------------------------------------------------------
    #
    # A token's record lives under ``token:<record id>``, the record id derived from its access
    # digest (tokens.token_id_for): verification computes the key from the presented token and
    # reads the record with one plain GET, on one key, so it is one round trip on a Cluster too.
    # The framework gives every token it mints that id as its token_id, so the same key is
    # found by id. A token with another id (imported from elsewhere) gets an ``id:<token_id>``
    # pointer to its record id; refresh lookups follow ``refresh:<id of the refresh digest>``.
    # Pointers and user-index members hold record ids. Revocation rewrites the record in place
    # (compare-and-set), so the next GET sees it at once.

    @staticmethod
    def record_id(token: AuthToken) -> str:
        """The id of the key ``token``'s record is stored under."""
        return token_id_for(token.access_digest)

    def _pointers(self, token: AuthToken, rid: str) -> list[str]:
        keys = []
        if token.refresh_digest:
            keys.append(self.keys.refresh(token_id_for(token.refresh_digest)))
        if token.token_id != rid:
            keys.append(self.keys.by_id(token.token_id))
        return keys

    def token_keys(self, token: AuthToken) -> list[str]:
        """Every key that holds ``token`` (its record, then its pointers), user index aside."""
        rid = self.record_id(token)
        return [self.keys.token(rid), *self._pointers(token, rid)]

    def _put_token(self, token: AuthToken, expected: bytes | None = None) -> int:
        """Write a token (upsert, or compare-and-set against ``expected``).

        Returns WRITTEN, CHANGED (the record no longer holds ``expected``) or GONE.
        """
        rid = self.record_id(token)
        raw = codec.encode_token(token, rid)
        mode = "set" if expected is None else "cas"
        if codec.remaining_ms(token.retain_until, utcnow()) <= 0:
            # Already over: not written; whatever the id held is over too.
            if expected is None:
                self._remove_token_id(token.token_id)
                return GONE
            return self._delete_token_raw(token, expected)
        if expected is None and token.token_id != rid:
            # An id that is not its record id (an imported token): a record stored earlier
            # under the same id but another access digest lives under another key; an upsert
            # by token_id replaces it.
            self._drop_other_record(token.token_id, rid)
        index = self.keys.user_tokens(token.user_id)
        record = self.keys.token(rid)
        pointers = self._pointers(token, rid)

        def write(c: Any) -> Any:
            px = max(1, codec.remaining_ms(token.retain_until, utcnow()))
            args = [raw, px, rid, mode, expected or b""]
            if not self.cluster:
                return PUT_RECORD(c, [record, index, *pointers], args)
            INDEX_ADD(c, [index], [rid, px])
            result = SET_RECORD(c, [record], args)
            if int(result[0]) == WRITTEN:
                for pointer in pointers:
                    c.set(pointer, rid, px=px)
            return result

        result = self.call(write, write=True)
        status = int(result[0])
        if status == WRITTEN and len(result) > 1 and result[1] != raw:
            self._forget_old_links(codec.decode_token(result[1], rid), token, rid)
        return status

    def _token_put(self, token: AuthToken, rid: str, expected: bytes | None = None) -> _Put:
        return _Put(
            record=self.keys.token(rid),
            index=self.keys.user_tokens(token.user_id),
            member=rid,
            pointers=self._pointers(token, rid),
            raw=codec.encode_token(token, rid),
            deadline=token.retain_until,
            expected=expected,
        )

    def _put_tokens(self, tokens: list[tuple[AuthToken, str, bytes | None]]) -> list[int]:
        """``_put_token`` for several live tokens of distinct record ids at once:
        ``(token, record id, expected)`` each; returns their statuses."""
        puts = [self._token_put(token, rid, expected) for token, rid, expected in tokens]
        statuses = []
        for (token, rid, _), put, result in zip(tokens, puts, self._put_many(puts), strict=True):
            status = int(result[0])
            if status == WRITTEN and len(result) > 1 and result[1] != put.raw:
                self._forget_old_links(codec.decode_token(result[1], rid), token, rid)
            statuses.append(status)
        return statuses

    def _import_token_batch(self, tokens: list[AuthToken]) -> int:
        """Upsert a batch of distinct tokens (ids and record ids) as ``_put_token`` would, one
        by one; return how many were written."""
        now = utcnow()
        rids = [self.record_id(token) for token in tokens]
        over = [codec.remaining_ms(token.retain_until, now) <= 0 for token in tokens]
        # What _put_token reads before writing: for a token already over, whatever its id holds
        # (to remove it); for a token whose id is not its record id, a record of that id under
        # another key (to drop it). One read for the batch; the few found take the single path.
        check = [i for i, token in enumerate(tokens) if over[i] or token.token_id != rids[i]]
        held: set[int] = set()
        if check:
            keys = []
            for i in check:
                keys += [self.keys.token(tokens[i].token_id), self.keys.by_id(tokens[i].token_id)]
            values = self._mget(keys)
            for n, i in enumerate(check):
                record, pointer = values[2 * n], values[2 * n + 1]
                if over[i]:
                    found = record is not None or pointer is not None
                else:
                    found = record is not None or (
                        pointer is not None and _text(pointer) != rids[i]
                    )
                if found:
                    held.add(i)
        live: list[tuple[AuthToken, str, bytes | None]] = []
        for i, token in enumerate(tokens):
            if over[i]:
                if i in held:
                    self._remove_token_id(token.token_id)
                continue
            if i in held:
                self._drop_other_record(token.token_id, rids[i])
            live.append((token, rids[i], None))
        return sum(1 for status in self._put_tokens(live) if status == WRITTEN) if live else 0

    def _forget_old_links(self, old: AuthToken, new: AuthToken, rid: str) -> None:
        """After an upsert changed the refresh digest, the id or the owner of the record under
        ``rid``, drop the old pointers and index entry."""
        current = self._pointers(new, rid)
        stale = [p for p in self._pointers(old, rid) if p not in current]
        for pointer in stale:
            self.call(lambda c, p: DELETE_IF_EQUAL(c, [p], [rid]), pointer, write=True)
        if old.user_id != new.user_id:
            self.call(lambda c: c.srem(self.keys.user_tokens(old.user_id), rid), write=True)

    def _drop_other_record(self, token_id: str, rid: str) -> None:
        for _ in range(MAX_CAS_ATTEMPTS):
            found = self._find_by_id(token_id)
            if found is None or found[0] == rid:
                return
            if self._delete_token_raw(found[2], found[1]) != CHANGED:
                return
        raise self._contention("token", token_id)

    def _delete_token_raw(self, token: AuthToken, expected: bytes) -> int:
        rid = self.record_id(token)
        record = self.keys.token(rid)
        index = self.keys.user_tokens(token.user_id)
        pointers = self._pointers(token, rid)

        def delete(c: Any) -> int:
            if not self.cluster:
                return int(DELETE_RECORD(c, [record, index, *pointers], [expected, rid]))
            status = int(DELETE_IF_EQUAL(c, [record], [expected]))
            if status != CHANGED:
                # Record first, then pointers, index entry last; on a retry after a lost reply
                # the record is already gone and the rest is finished off.
                for pointer in pointers:
                    DELETE_IF_EQUAL(c, [pointer], [rid])
                c.srem(index, rid)
            return status

        return self.call(delete, write=True)

    def _remove_token_id(self, token_id: str) -> bool:
        for _ in range(MAX_CAS_ATTEMPTS):
            found = self._find_by_id(token_id)
            if found is None:
                return False
            status = self._delete_token_raw(found[2], found[1])
            if status != CHANGED:
                return status == WRITTEN
        raise self._contention("token", token_id)

    @staticmethod
    def _contention(kind: str, ident: str) -> StorageError:
        return StorageError(
            f"The {kind} {ident!r} kept changing under {MAX_CAS_ATTEMPTS} attempts to update it; "
            "retry the operation."
        )

    @staticmethod
    def _live_token(raw: bytes | None, rid: str, now: float | None = None) -> AuthToken | None:
        """The token held in ``raw`` (stored under record id ``rid``) unless past its
        ``retain_until`` at ``now`` (a timestamp; default: this moment)."""
        if raw is None:
            return None
        token = codec.decode_token(raw, rid)
        return token if (now_ts() if now is None else now) < token.retain_ts else None

    def _find_by_id(self, token_id: str) -> tuple[str, bytes, AuthToken] | None:
        """``(record id, raw record, token)`` of the token with this id, expired or not.

        A token the framework minted is under its own id (one GET); another follows its
        ``id:`` pointer.
        """
        raw = self._get(self.keys.token(token_id))
        if raw is not None:
            token = codec.decode_token(raw, token_id)
            if token.token_id == token_id:
                return token_id, raw, token
        found = self._via_pointer(self.keys.by_id(token_id))
        if found is None:
            return None
        rid, raw = found
        token = codec.decode_token(raw, rid)
        # A pointer left behind by a change of the record's id must not match.
        return (rid, raw, token) if token.token_id == token_id else None

    def store_token(self, token: AuthToken) -> None:
        self._put_token(token)

    def get_token(self, token_id: str) -> AuthToken | None:
        found = self._find_by_id(token_id)
        if found is None or now_ts() >= found[2].retain_ts:
            return None
        return found[2]

    def _get_tokens(self, token_ids: Iterable[str]) -> dict[str, AuthToken]:
        """``get_token`` of many ids: one MGET of the records their ids name, then, for the
        ids not found there, one of their ``id:`` pointers and one of the records named."""
        ids = list(dict.fromkeys(token_ids))
        now = now_ts()
        found: dict[str, AuthToken] = {}
        rest: list[str] = []
        for token_id, raw in zip(ids, self._mget([self.keys.token(i) for i in ids]), strict=True):
            if raw is not None:
                token = codec.decode_token(raw, token_id)
                if token.token_id == token_id:
                    if now < token.retain_ts:
                        found[token_id] = token
                    continue
            rest.append(token_id)
        pointers = self._mget([self.keys.by_id(i) for i in rest])
        named = [(i, _text(rid)) for i, rid in zip(rest, pointers, strict=True) if rid is not None]
        raws = self._mget([self.keys.token(rid) for _, rid in named])
        for (token_id, rid), raw in zip(named, raws, strict=True):
            pointed = self._live_token(raw, rid, now)
            if pointed is not None and pointed.token_id == token_id:
                found[token_id] = pointed
        return found

    def _via_pointer(self, pointer: str) -> tuple[str, bytes] | None:
        """``(record id, raw record)`` of the record a pointer names, or None."""
        if not self.cluster:
            prefix = self.keys.token_prefix
            reply = self.call(lambda c: GET_VIA_POINTER(c, [pointer], [prefix]))
            return None if not reply else (_text(reply[0]), reply[1])

        # Cluster: the pointer and the record hash to different slots, so this takes two GETs.
        def two_gets(c: Any) -> tuple[str, bytes] | None:
            rid = c.get(pointer)
            if rid is None:
                return None
            raw = c.get(self.keys.token(_text(rid)))
            return None if raw is None else (_text(rid), raw)

        return self.call(two_gets)

    def get_token_by_access(self, access_digest: str) -> AuthToken | None:
        # The hot path: one plain GET of the key the digest names.
        rid = token_id_for(access_digest)
        token = self._live_token(self._get(self.keys.token(rid)), rid)
        return token if token is not None and token.access_digest == access_digest else None

    def get_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        found = self._via_pointer(self.keys.refresh(token_id_for(refresh_digest)))
        if found is None:
            return None
        token = self._live_token(found[1], found[0])
        # A pointer left behind by an upsert that changed digests must not match.
        return token if token is not None and token.refresh_digest == refresh_digest else None

    def update_token(self, token: AuthToken) -> bool:
        for _ in range(MAX_CAS_ATTEMPTS):
            found = self._find_by_id(token.token_id)
            if found is None or now_ts() >= found[2].retain_ts:
                return False
            rid, raw, old = found
            if rid != self.record_id(token):
                # A new access digest: the record moves to the key the new digest names.
                status = self._delete_token_raw(old, raw)
                if status == CHANGED:
                    continue
                return status == WRITTEN and self._put_token(token) == WRITTEN
            status = self._put_token(token, expected=raw)
            if status != CHANGED:
                return status == WRITTEN
        raise self._contention("token", token.token_id)

    def _revoke(
        self, raw: bytes, rid: str, at: datetime, replaced_by: str | None, family_id: str | None
    ) -> bool:
        """Revoke the token held in ``raw`` unless someone else already did."""
        for _ in range(MAX_CAS_ATTEMPTS):
            token = self._live_token(raw, rid)
            if token is None or token.revoked_at is not None:
                return False
            if family_id is not None and token.family_id != family_id:
                return False
            revoked = replace(token, revoked_at=at, replaced_by=replaced_by, updated_at=at)
            status = self._put_token(revoked, expected=raw)
            if status != CHANGED:
                return status == WRITTEN
            fresh = self._get(self.keys.token(rid))
            if fresh is None:
                return False
            raw = fresh
        raise StorageError("A token kept changing while it was being revoked; retry.")

    def revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None = None) -> bool:
        found = self._find_by_id(token_id)
        return found is not None and self._revoke(found[1], found[0], at, replaced_by, None)

    def _user_record_pages(
        self,
        index: str,
        record_prefix: str,
        user_id: str,
        decode: Callable[[bytes, str], Any],
        live: Callable[[Any, datetime], bool],
        prune: bool,
    ) -> Iterator[list[tuple[bytes, Any]]]:
        """The (raw, record) pairs a user index lists, a page (one SSCAN reply, about
        ``MGET_BATCH`` members) at a time, stale entries pruned; ``decode`` gets each raw
        record and its member (the id in its key).

        Memory is one page, whatever the size of the index (a service account may hold
        100,000 tokens). SSCAN may return a member twice; a member is read once per page, and
        a caller that writes (revoke, delete) reads the record again on its second showing,
        so it finds the record already revoked or gone and counts nothing twice.
        """
        cursor = 0
        while True:
            cursor, found = self.call(
                lambda c, cursor: c.sscan(index, cursor, count=MGET_BATCH), cursor
            )
            members = sorted({_text(m) for m in found})
            if members:
                raws = self._mget([record_prefix + m for m in members])
                now = utcnow()
                page: list[tuple[bytes, Any]] = []
                stale: list[tuple[str, bytes]] = []
                for member, raw in zip(members, raws, strict=True):
                    if raw is None:
                        stale.append((member, b""))
                        continue
                    record = decode(raw, member)
                    if record.user_id != user_id:
                        stale.append((member, raw))
                    elif live(record, now):
                        page.append((raw, record))
                if prune and not self.cluster:
                    # Cluster prunes only in cleanup_expired_* (it has to wait; see _prune).
                    self._prune([(index, record_prefix, stale)])
                if page:
                    yield page
            if not cursor:
                break

    def _user_records(
        self,
        index: str,
        record_prefix: str,
        user_id: str,
        decode: Callable[[bytes, str], Any],
        live: Callable[[Any, datetime], bool],
        prune: bool,
    ) -> list[tuple[bytes, Any]]:
        """Every (raw, record) pair of ``_user_record_pages``, each record once, oldest
        first (for the lists a caller asked for whole)."""
        by_member: dict[str, tuple[bytes, Any]] = {}
        for page in self._user_record_pages(index, record_prefix, user_id, decode, live, prune):
            for raw, record in page:
                by_member[member_id(record)] = (raw, record)
        found = list(by_member.values())
        found.sort(key=lambda pair: (pair[1].created_at, member_id(pair[1])))
        return found

    def _user_tokens(self, user_id: str) -> list[tuple[bytes, AuthToken]]:
        return self._user_records(
            self.keys.user_tokens(user_id),
            self.keys.token_prefix,
            user_id,
            codec.decode_token,
            lambda t, now: now.timestamp() < t.retain_ts,
            prune=True,
        )

    def _user_token_pages(self, user_id: str) -> Iterator[list[tuple[bytes, AuthToken]]]:
        return self._user_record_pages(
            self.keys.user_tokens(user_id),
            self.keys.token_prefix,
            user_id,
            codec.decode_token,
            lambda t, now: now.timestamp() < t.retain_ts,
            prune=True,
        )

    def revoke_user_tokens(
        self, user_id: str, *, at: datetime, family_id: str | None = None
    ) -> int:
        # Compare-and-set writes as _revoke makes, a pipeline per PIPELINE_BATCH tokens: a
        # service account with 100,000 tokens is revoked in 200 round trips, not 100,000.
        # A token that changed meanwhile (CHANGED) or is about to be over goes through _revoke.
        # The index is read a page at a time (_user_token_pages), so memory is one page.
        count = 0
        for page in self._user_token_pages(user_id):
            pending = [
                (raw, token)
                for raw, token in page
                if token.revoked_at is None and (family_id is None or token.family_id == family_id)
            ]
            count += self._revoke_chunks(pending, at, family_id)
        return count

    def _revoke_chunks(
        self, pending: list[tuple[bytes, AuthToken]], at: datetime, family_id: str | None
    ) -> int:
        """Revoke ``pending`` (raw, token) pairs as ``revoke_user_tokens`` does; the count."""
        count = 0
        for chunk in _chunks_of(pending, PIPELINE_BATCH):
            now = utcnow()
            batch: list[tuple[AuthToken, str, bytes | None]] = []
            single: list[tuple[bytes, AuthToken]] = []
            for raw, token in chunk:
                if codec.remaining_ms(token.retain_until, now) <= 0:
                    single.append((raw, token))
                    continue
                revoked = replace(token, revoked_at=at, updated_at=at)
                batch.append((revoked, self.record_id(token), raw))
            statuses = self._put_tokens(batch) if batch else []
            for (revoked, rid, _), status in zip(batch, statuses, strict=True):
                if status == WRITTEN:
                    count += 1
                elif status == CHANGED:
                    # Someone else wrote it meanwhile: _revoke decides on what it holds now.
                    fresh = self._get(self.keys.token(rid))
                    if fresh is not None:
                        single.append((fresh, revoked))
            for raw, token in single:
                count += self._revoke(raw, self.record_id(token), at, token.replaced_by, family_id)
        return count

    def delete_token(self, token_id: str) -> bool:
        return self._remove_token_id(token_id)

    def list_user_tokens(self, user_id: str) -> list[AuthToken]:
        return [token for _, token in self._user_tokens(user_id)]

    def delete_user_tokens(self, user_id: str) -> int:
        count = 0
        for page in self._user_token_pages(user_id):
            for chunk in _chunks_of(page, PIPELINE_BATCH):
                statuses = self._delete_tokens_raw(chunk)
                for (_, token), status in zip(chunk, statuses, strict=True):
                    if status == CHANGED:
                        status = WRITTEN if self._remove_token_id(token.token_id) else GONE
                    count += status == WRITTEN
        return count

    def _delete_tokens_raw(self, items: list[tuple[bytes, AuthToken]]) -> list[int]:
        """``_delete_token_raw`` of several tokens of distinct record ids, a pipeline per
        step: one ``DELETE_RECORD`` each on one server; in a Cluster the records, then the
        pointers and index entries of those not changed meanwhile."""
        plans = []
        for raw, token in items:
            rid = self.record_id(token)
            plans.append(
                (
                    raw,
                    rid,
                    self.keys.token(rid),
                    self.keys.user_tokens(token.user_id),
                    self._pointers(token, rid),
                )
            )

        attempts = []

        def delete(c: Any) -> list[int]:
            attempts.append(1)
            statuses = delete_once(c)
            if len(attempts) > 1:
                # Sent again after the connection dropped or timed out: the lost attempt may
                # have deleted some of these records (each was live, holding what was read,
                # a moment ago), so "gone" now is this call's own delete, as one by one it is
                # the reply of the write that deleted it.
                statuses = [WRITTEN if status == GONE else status for status in statuses]
            return statuses

        def delete_once(c: Any) -> list[int]:
            if not self.cluster:
                calls = [
                    ([record, index, *pointers], [raw, rid])
                    for raw, rid, record, index, pointers in plans
                ]
                return [int(status) for status in self._run_loaded(c, DELETE_RECORD, calls)]
            pipe = c.pipeline()
            for raw, _, record, _, _ in plans:
                DELETE_IF_EQUAL.queue(pipe, [record], [raw])
            statuses = [int(status) for status in pipe.execute()]
            pipe = c.pipeline()
            queued = False
            for (_, rid, _, index, pointers), status in zip(plans, statuses, strict=True):
                if status != CHANGED:
                    for pointer in pointers:
                        DELETE_IF_EQUAL.queue(pipe, [pointer], [rid])
                    pipe.srem(index, rid)
                    queued = True
            if queued:
                pipe.execute()
            return statuses

        return self.call(delete, write=True) if plans else []

    # Sessions -----------------------------------------------------------------------------

    def _session_px(self, session: SessionData, now: datetime) -> int | None:
        """Remaining life in ms (<= 0: over), or None for a session that persists."""
        if session.expires_at is not None:
            return codec.remaining_ms(session.expires_at, now)
        if self.default_ttl is None:
            return None
        return codec.ttl_ms(self.default_ttl)

    def _put_session(self, session: SessionData, expected: bytes | None = None) -> int:
        raw = codec.encode_session(session)
        mode = "set" if expected is None else "cas"
        px = self._session_px(session, utcnow())
        if px is not None and px <= 0:
            if expected is None:
                self._remove_session_id(session.session_id)
                return GONE
            return self._delete_session_raw(session, expected)
        index = self.keys.user_sessions(session.user_id)
        record = self.keys.session(session.session_id)

        def write(c: Any) -> Any:
            ttl = self._session_px(session, utcnow())
            px_arg = 0 if ttl is None else max(1, ttl)
            args = [raw, px_arg, session.session_id, mode, expected or b""]
            if not self.cluster:
                return PUT_RECORD(c, [record, index], args)
            INDEX_ADD(c, [index], [session.session_id, px_arg])
            return SET_RECORD(c, [record], args)

        result = self.call(write, write=True)
        status = int(result[0])
        if status == WRITTEN and len(result) > 1 and result[1] != raw:
            old = codec.decode_session(result[1])
            if old.user_id != session.user_id:
                self.call(
                    lambda c: c.srem(self.keys.user_sessions(old.user_id), old.session_id),
                    write=True,
                )
        return status

    def _delete_session_raw(self, session: SessionData, expected: bytes) -> int:
        record = self.keys.session(session.session_id)
        index = self.keys.user_sessions(session.user_id)

        def delete(c: Any) -> int:
            if not self.cluster:
                return int(DELETE_RECORD(c, [record, index], [expected, session.session_id]))
            status = int(DELETE_IF_EQUAL(c, [record], [expected]))
            if status != CHANGED:
                c.srem(index, session.session_id)
            return status

        return self.call(delete, write=True)

    def _remove_session_id(self, session_id: str) -> bool:
        for _ in range(MAX_CAS_ATTEMPTS):
            raw = self._get(self.keys.session(session_id))
            if raw is None:
                return False
            session = codec.decode_session(raw)
            status = self._delete_session_raw(session, raw)
            if status != CHANGED:
                return status == WRITTEN and not session.is_expired()
        raise self._contention("session", session_id)

    def _live_session(self, raw: bytes | None, now: datetime) -> SessionData | None:
        if raw is None:
            return None
        session = codec.decode_session(raw)
        return None if session.is_expired(now) else session

    def store_session(self, session: SessionData) -> None:
        self._put_session(session)

    def get_session(self, session_id: str) -> SessionData | None:
        return self._live_session(self._get(self.keys.session(session_id)), utcnow())

    def _get_sessions(self, session_ids: Iterable[str]) -> dict[str, SessionData]:
        ids = list(dict.fromkeys(session_ids))
        raws = self._mget([self.keys.session(i) for i in ids])
        now = utcnow()
        found = {}
        for session_id, raw in zip(ids, raws, strict=True):
            session = self._live_session(raw, now)
            if session is not None and session.session_id == session_id:
                found[session_id] = session
        return found

    def _import_session_batch(self, sessions: list[SessionData]) -> int:
        """Upsert a batch of sessions of distinct ids as ``_put_session`` would, one by one."""
        now = utcnow()
        pxs = [self._session_px(session, now) for session in sessions]
        over = [i for i, px in enumerate(pxs) if px is not None and px <= 0]
        if over:
            # Already over: not written, and what the id held goes (as _put_session does).
            held = self._mget([self.keys.session(sessions[i].session_id) for i in over])
            for i, raw in zip(over, held, strict=True):
                if raw is not None:
                    self._remove_session_id(sessions[i].session_id)
        skip = set(over)
        live = [session for i, session in enumerate(sessions) if i not in skip]
        puts = [
            _Put(
                record=self.keys.session(session.session_id),
                index=self.keys.user_sessions(session.user_id),
                member=session.session_id,
                pointers=[],
                raw=codec.encode_session(session),
                deadline=self._session_deadline(session, now),
            )
            for session in live
        ]
        written = 0
        for session, put, result in zip(live, puts, self._put_many(puts), strict=True):
            if int(result[0]) != WRITTEN:
                continue
            written += 1
            if len(result) > 1 and result[1] != put.raw:
                old = codec.decode_session(result[1])
                if old.user_id != session.user_id:
                    self.call(
                        lambda c, o=old: c.srem(self.keys.user_sessions(o.user_id), o.session_id),
                        write=True,
                    )
        return written

    def _session_deadline(self, session: SessionData, now: datetime) -> datetime | None:
        """The moment a session written ``now`` is over (``_session_px`` as an instant)."""
        if session.expires_at is not None:
            return session.expires_at
        return None if self.default_ttl is None else now + self.default_ttl

    def touch_session(
        self, session_id: str, *, at: datetime, expires_at: datetime | None = None
    ) -> bool:
        for _ in range(MAX_CAS_ATTEMPTS):
            raw = self._get(self.keys.session(session_id))
            session = self._live_session(raw, utcnow())
            if session is None:
                return False
            assert raw is not None
            touched = replace(
                session, last_accessed=at, expires_at=expires_at or session.expires_at
            )
            status = self._put_session(touched, expected=raw)
            if status != CHANGED:
                return status == WRITTEN
        raise self._contention("session", session_id)

    def delete_session(self, session_id: str) -> bool:
        return self._remove_session_id(session_id)

    def _user_sessions(self, user_id: str) -> list[tuple[bytes, SessionData]]:
        return self._user_records(
            self.keys.user_sessions(user_id),
            self.keys.session_prefix,
            user_id,
            lambda raw, _member: codec.decode_session(raw),
            lambda s, now: not s.is_expired(now),
            prune=True,
        )

    def list_user_sessions(self, user_id: str) -> list[SessionData]:
        return [session for _, session in self._user_sessions(user_id)]

    def delete_user_sessions(self, user_id: str) -> int:
        count = 0
        for raw, session in self._user_sessions(user_id):
            status = self._delete_session_raw(session, raw)
            if status == CHANGED:
                status = WRITTEN if self._remove_session_id(session.session_id) else GONE
            count += status == WRITTEN
        return count

    def count_active_sessions(self) -> int:
        # Expired sessions have no key any more (TTL), so counting keys is counting sessions.
        return sum(len(keys) for keys in self._scan(self.keys.pattern("session"), exact=True))

    # Key-value ----------------------------------------------------------------------------

    def kv_set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        name = self.keys.kv(key)
        if ttl is None:
            self.call(lambda c: c.set(name, value), write=True)
            return
        px = codec.ttl_ms(ttl)
        if px <= 0:
            self.call(
                lambda c: c.delete(name), write=True
            )  # already over: not written, old value gone
        else:
            self.call(lambda c: c.set(name, value, px=px), write=True)

    def kv_get(self, key: str) -> bytes | None:
        return self._get(self.keys.kv(key))

    def _kv_entries(self, keys: Iterable[str]) -> dict[str, KVEntry] | None:
        names = [self.keys.kv(key) for key in dict.fromkeys(keys)]
        found = {}
        for chunk in _chunks_of(names, MGET_BATCH):
            for entry in self._read_kv(chunk):
                found[entry.key] = entry
        return found

    def kv_delete(self, key: str) -> bool:
        return bool(self.call(lambda c: c.delete(self.keys.kv(key)), write=True))

    def kv_incr(self, key: str, ttl: timedelta | None = None) -> int:
        # A window that is already over counts 1 and vanishes at once (px 1).
        px = 0 if ttl is None else max(1, codec.ttl_ms(ttl))

        def incr(c: Any) -> int | None:
            try:
                return int(KV_INCR(c, [self.keys.kv(key)], [px]))
            except ResponseError as exc:
                if "not an integer" in str(exc):
                    return None
                raise

        # Not retried: had the increment been applied before a reply was lost, a retry would
        # count one failure twice.
        value = self.call(incr, idempotent=False, write=True)
        if value is None:
            raise validate.not_a_counter(key)
        return value

    # Audit log ----------------------------------------------------------------------------

    def _append(self, event: AuditEvent) -> bool:
        raw = codec.encode_event(event)
        keys = [self.keys.audit_order, self.keys.audit_events, self.keys.audit_seq]
        args = [event.event_id, _time_key(event.created_at), raw]
        # Safe to retry: a second append of the same event id is refused by the script.
        return int(self.call(lambda c: AUDIT_APPEND(c, keys, args), write=True)) == 1

    def append_audit(self, event: AuditEvent) -> None:
        self._append(event)

    @staticmethod
    def _bounds(since: datetime | None, until: datetime | None) -> tuple[str, str]:
        low = "-" if since is None else f"[{_time_key(since)}:"
        high = "+" if until is None else f"({_time_key(until)}:"
        return low, high

    def _events(self, members: list[bytes]) -> list[AuditEvent]:
        if not members:
            return []
        ids = [_text(m)[redis_scripts.AUDIT_ID_OFFSET :] for m in members]
        raws = self.call(lambda c: c.hmget(self.keys.audit_events, ids))
        return [codec.decode_event(raw) for raw in raws if raw is not None]

    def _walk_newest_first(self, low: str, high: str) -> Iterator[AuditEvent]:
        order = self.keys.audit_order
        while True:
            members = self.call(
                lambda c, high: c.zrevrangebylex(order, high, low, start=0, num=AUDIT_PAGE), high
            )
            yield from self._events(members)
            if len(members) < AUDIT_PAGE:
                return
            high = "(" + _text(members[-1])

    def query_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        outcome: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditEvent]:
        if limit == 0:
            return []
        low, high = self._bounds(since, until)
        if user_id is None and action is None and outcome is None:
            members = self.call(
                lambda c: c.zrevrangebylex(
                    self.keys.audit_order, high, low, start=offset, num=limit
                )
            )
            return self._events(members)
        found: list[AuditEvent] = []
        skipped = 0
        for event in self._walk_newest_first(low, high):
            if not _matches(event, user_id, action, outcome):
                continue
            if skipped < offset:
                skipped += 1
                continue
            found.append(event)
            if len(found) == limit:
                break
        return found

    def count_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        outcome: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        low, high = self._bounds(since, until)
        if user_id is None and action is None and outcome is None:
            return int(self.call(lambda c: c.zlexcount(self.keys.audit_order, low, high)))
        return sum(
            1
            for event in self._walk_newest_first(low, high)
            if _matches(event, user_id, action, outcome)
        )

    def delete_audit_before(self, cutoff: datetime) -> int:
        keys = [self.keys.audit_order, self.keys.audit_events]
        bound = f"({_time_key(cutoff)}:"
        total = 0
        while True:  # in batches, so Redis is never blocked by one huge deletion
            removed = int(self.call(lambda c: AUDIT_TRIM(c, keys, [bound, 1000]), write=True))
            total += removed
            if removed == 0:
                return total

    # Maintenance --------------------------------------------------------------------------

    def _prune_indexes(self, kind: str, record_prefix: str, dry_run: bool) -> int:
        """Prune stale members from every user index of ``kind``; return how many (would)."""
        suffix = ":tokens" if kind == "user_tokens" else ":sessions"
        user_prefix = self.keys.prefix + "user:"
        found: list[tuple[str, str, list[tuple[str, bytes]]]] = []
        for indexes in self._scan(self.keys.pattern(kind), exact=True):
            for index in indexes:
                user_id = index[len(user_prefix) : -len(suffix)]
                members = self._members(index)
                raws = self._mget([record_prefix + m for m in members])
                stale: list[tuple[str, bytes]] = []
                for member, raw in zip(members, raws, strict=True):
                    if raw is None:
                        stale.append((member, b""))
                    elif _owner(raw) != user_id:
                        stale.append((member, raw))
                found.append((index, record_prefix, stale))
        if dry_run:
            return sum(len(stale) for _, _, stale in found)
        return self._prune(found)

    def cleanup_expired_tokens(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        # Records expire by TTL, so none is left to remove; what is left is index entries of
        # tokens that expired, which are pruned here.
        pruned = self._prune_indexes("user_tokens", self.keys.token_prefix, dry_run)
        logger.debug("authfw cleanup: %d stale token index entries", pruned)
        return 0

    def cleanup_expired_sessions(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        pruned = self._prune_indexes("user_sessions", self.keys.session_prefix, dry_run)
        logger.debug("authfw cleanup: %d stale session index entries", pruned)
        return 0

    def cleanup_expired_kv(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        return 0  # key-value entries expire by TTL

    def statistics(self) -> StorageStatistics:
        now = utcnow()
        total = revoked = expired = 0
        start = len(self.keys.token_prefix)
        for keys in self._scan(self.keys.pattern("token"), exact=True):
            for key, raw in zip(keys, self._mget(keys), strict=True):
                token = self._live_token(raw, key[start:], now.timestamp())
                if token is None:
                    continue
                total += 1
                if token.revoked_at is not None:
                    revoked += 1
                elif token.is_expired(now):
                    expired += 1
        sessions = self.count_active_sessions()
        memory = 0
        for keys in self._scan(self.keys.pattern("all"), exact=True):
            memory += sum(int(size or 0) for size in self.call(self._memory_usage, keys))
        return {
            "backend": self.backend_name,
            "total_tokens": total,
            "active_tokens": total - revoked - expired,
            "expired_tokens": expired,
            "revoked_tokens": revoked,
            "active_sessions": sessions,
            "total_sessions": sessions,
            "kv_entries": sum(
                len(keys) for keys in self._scan(self.keys.pattern("kv"), exact=True)
            ),
            "audit_events": int(self.call(lambda c: c.zcard(self.keys.audit_order))),
            "database_size_mb": None,
            "memory_used_bytes": memory,
        }

    def _memory_usage(self, client: Any, keys: list[str]) -> list[int | None]:
        """MEMORY USAGE of each key: pipelined on one server, one by one in a Cluster."""
        if self.cluster:
            return [client.memory_usage(key) for key in keys]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key)
        sizes: list[int | None] = pipe.execute()
        return sizes

    def flush(self) -> None:
        # Only our prefix, by SCAN + UNLINK: the database may hold other applications' keys.
        for keys in self._scan(self.keys.pattern("all"), count=500):
            self.call(lambda c, keys: c.unlink(*keys), keys, write=True)

    def close(self) -> None:
        if self._owns_client:
            self.call.close()

    # Iteration and import -----------------------------------------------------------------

    def iter_tokens(self, *, batch_size: int = 1000) -> Iterator[list[AuthToken]]:
        start = len(self.keys.token_prefix)
        for keys in self._chunks(self.keys.pattern("token"), batch_size):
            now = now_ts()
            raws = self._mget(keys)
            live = (self._live_token(r, k[start:], now) for k, r in zip(keys, raws, strict=True))
            batch = [token for token in live if token is not None]
            if batch:
                yield batch

    def iter_sessions(self, *, batch_size: int = 1000) -> Iterator[list[SessionData]]:
        for keys in self._chunks(self.keys.pattern("session"), batch_size):
            now = utcnow()
            batch = [s for s in (self._live_session(r, now) for r in self._mget(keys)) if s]
            if batch:
                yield batch

    def _read_kv(self, keys: list[str]) -> list[KVEntry]:
        """The live entries under the full key names ``keys`` (GET and PTTL, pipelined)."""

        def read(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            replies: list[Any] = pipe.execute()
            return replies

        replies = self.call(read)
        now = utcnow()
        batch = []
        for key, value, pttl in zip(keys, replies[::2], replies[1::2], strict=True):
            if value is None:
                continue
            expires_at = now + timedelta(milliseconds=pttl) if pttl > 0 else None
            # Redis keeps no creation time: an entry read back is dated by the read.
            batch.append(
                KVEntry(
                    key=key[len(self.keys.kv_prefix) :],
                    value=value,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return batch

    def iter_kv(self, *, batch_size: int = 1000) -> Iterator[list[KVEntry]]:
        for keys in self._chunks(self.keys.pattern("kv"), batch_size):
            batch = self._read_kv(keys)
            if batch:
                yield batch

    def iter_audit(self, *, batch_size: int = 1000) -> Iterator[list[AuditEvent]]:
        low = "-"
        order = self.keys.audit_order
        while True:
            members = self.call(
                lambda c, low: c.zrangebylex(order, low, "+", start=0, num=batch_size), low
            )
            batch = self._events(members)
            if batch:
                yield batch
            if len(members) < batch_size:
                return
            low = "(" + _text(members[-1])

    # Imports write PIPELINE_BATCH records per round trip, with the scripts, keys and TTLs of
    # the single writes (store_token, store_session, kv_set, append_audit), in the order given.

    def import_tokens(self, tokens: Iterable[AuthToken]) -> int:
        return sum(
            self._import_token_batch(batch)
            for batch in _segments(
                tokens, lambda t: (t.token_id, self.record_id(t)), PIPELINE_BATCH
            )
        )

    def import_sessions(self, sessions: Iterable[SessionData]) -> int:
        return sum(
            self._import_session_batch(batch)
            for batch in _segments(sessions, lambda s: (s.session_id,), PIPELINE_BATCH)
        )

    def import_kv(self, entries: Iterable[KVEntry]) -> int:
        # One key's writes go to one server (one slot), where a pipeline keeps their order,
        # so duplicates end as they would one by one.
        count = 0
        for batch in _chunks_of(entries, PIPELINE_BATCH):

            def write(c: Any, batch: list[KVEntry] = batch) -> int:
                now = utcnow()
                written = 0
                pipe = c.pipeline(transaction=False) if not self.cluster else c.pipeline()
                for entry in batch:
                    name = self.keys.kv(entry.key)
                    if entry.expires_at is None:
                        pipe.set(name, entry.value)
                    elif (px := codec.ttl_ms(entry.expires_at - now)) <= 0:
                        pipe.delete(name)  # already over: not written, old value gone
                        continue
                    else:
                        pipe.set(name, entry.value, px=px)
                    written += 1
                if self.cluster:
                    pipe.execute()
                else:
                    self._execute(pipe)
                return written

            count += self.call(write, write=True)
        return count

    def import_audit(self, events: Iterable[AuditEvent]) -> int:
        # The audit keys share one slot ({log}), so a Cluster runs the batch on one node too;
        # a second append of an event id is refused by the script, in pipeline order.
        keys = [self.keys.audit_order, self.keys.audit_events, self.keys.audit_seq]
        count = 0
        for batch in _chunks_of(events, PIPELINE_BATCH):
            ids = list(dict.fromkeys(event.event_id for event in batch))
            # Which ids are there before: a pipeline sent again after its connection dropped
            # finds the events its lost attempt appended, and they are this call's own.
            there = self.call(lambda c, i=ids: c.hmget(self.keys.audit_events, i))
            new_ids = {event_id for event_id, raw in zip(ids, there, strict=True) if raw is None}
            attempts: list[int] = []

            def write(
                c: Any, batch: list[AuditEvent] = batch, attempts: list[int] = attempts
            ) -> list[Any]:
                attempts.append(1)
                pipe = c.pipeline(transaction=False) if not self.cluster else c.pipeline()
                for event in batch:
                    args = [event.event_id, _time_key(event.created_at), codec.encode_event(event)]
                    AUDIT_APPEND.queue(pipe, keys, args)
                replies: list[Any] = pipe.execute() if self.cluster else self._execute(pipe)
                return replies

            replies = self.call(write, write=True)
            if len(attempts) > 1:
                count += len(new_ids)  # each appended once, by one attempt or the other
            else:
                count += sum(1 for reply in replies if int(reply) == 1)
        return count


def member_id(record: Any) -> str:
    return str(getattr(record, "token_id", None) or getattr(record, "session_id", ""))


def _owner(raw: bytes) -> str | None:
    """The user id of a stored token or session, without decoding dates: ``user`` in a
    compact token, ``user_id`` in a session or a token of the earlier form."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    owner = value.get("user_id", value.get("user"))
    return owner if isinstance(owner, str) else None


def _matches(
    event: AuditEvent, user_id: str | None, action: str | None, outcome: bool | None
) -> bool:
    return (
        (user_id is None or event.user_id == user_id)
        and (action is None or event.action == action)
        and (outcome is None or event.outcome == outcome)
    )
