"""The in-process keyspace: plain dicts behind one lock.

Used by :class:`~django_authfw.storage.InMemoryStorage` and by
:class:`~django_authfw.storage.CacheStorage` over a ``LocMemCache`` alias (one keyspace per
cache location and key prefix, shared by every storage of this process that names them).

Records are kept as Python objects, never pickled. Token records are immutable and shared
without copying: a verification is one dict lookup. Sessions and audit events are mutable, so
the store keeps and hands out copies of them: a caller that mutates what it got cannot change
what is stored.
Expired records are invisible at once and removed by :meth:`MemoryEngine.cleanup_expired`
(run by the sweep thread of ``InMemoryStorage`` or by ``authfw_cleanup``).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .. import validate
from ..records import (
    AuditEvent,
    AuthToken,
    KVEntry,
    SessionData,
    StorageStatistics,
    now_ts,
    utcnow,
)
from . import codec
from .engine import CacheEngine

T = TypeVar("T")


def _copier(kind: type[_Record]) -> Callable[[_Record], _Record]:
    """A copy of a record that shares no container with it, derived from the schema
    (dataclasses.fields(): lists and JSON objects are copied, the rest is immutable)."""
    copies: list[tuple[str, Callable[[Any], Any] | None]] = []
    for field in dataclasses.fields(kind):
        spec_kind = field.metadata["kind"]
        copy = (
            list if spec_kind == "strings" else codec.clone_json if spec_kind == "object" else None
        )
        copies.append((field.name, copy))

    def copy_record(record: _Record) -> _Record:
        # Positional construction, not dataclasses.replace: this runs on every verification.
        return kind(
            *[
                getattr(record, name) if copy is None else copy(getattr(record, name))
                for name, copy in copies
            ]
        )

    return copy_record


_Record = TypeVar("_Record", SessionData, AuditEvent)
_copy_session = _copier(SessionData)
_copy_event = _copier(AuditEvent)


REVOKE_BATCH = 1000
"""Tokens revoked per hold of the lock by ``revoke_user_tokens``."""


def _batched(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MemoryEngine(CacheEngine):
    """Tokens, sessions, key-value entries and the audit log in dicts of this process."""

    backend_name = "memory"
    in_process = True
    native_expiry = False

    def __init__(self, *, default_ttl: timedelta | None) -> None:
        super().__init__()
        self.default_ttl = default_ttl
        # One re-entrant lock for everything: each operation holds it for microseconds, and a
        # single lock makes multi-dict updates (record + pointers + user index) atomic.
        self._lock = threading.RLock()
        self._tokens: dict[str, AuthToken] = {}
        self._by_access: dict[str, AuthToken] = {}
        self._by_refresh: dict[str, str] = {}
        self._user_tokens: dict[str, set[str]] = {}
        # session_id -> (record, deadline); the deadline is expires_at, or default_ttl after
        # the last write for a session stored without one (None: it persists).
        self._sessions: dict[str, tuple[SessionData, datetime | None]] = {}
        self._user_sessions: dict[str, set[str]] = {}
        self._kv: dict[str, KVEntry] = {}
        self._events: dict[str, AuditEvent] = {}
        # (created_at in µs, insertion number, event_id), sorted: oldest first, ties in the
        # order they were appended, as the database orders by (created_at, id).
        self._event_order: list[tuple[int, int, str]] = []
        self._event_seq = itertools.count()

    # Tokens -------------------------------------------------------------------------------
    #
    # Token records are immutable (AuthToken), so the dicts hold the very objects stored and
    # readers get them without a copy. ``_by_access`` leads from the access digest straight to
    # the record: verification is one dict read, taken without the lock (a dict read is atomic;
    # writers replace whole records under the lock, so a reader sees the old record or the new
    # one, never half of a change). Deadlines are compared as numbers (``retain_ts``).

    def _live_token(self, token_id: str | None, now: float) -> AuthToken | None:
        if token_id is None:
            return None
        token = self._tokens.get(token_id)
        if token is None or now >= token.retain_ts:
            return None
        return token

    def _unlink_token(self, token: AuthToken) -> None:
        self._tokens.pop(token.token_id, None)
        found = self._by_access.get(token.access_digest)
        if found is not None and found.token_id == token.token_id:
            del self._by_access[token.access_digest]
        if token.refresh_digest and self._by_refresh.get(token.refresh_digest) == token.token_id:
            del self._by_refresh[token.refresh_digest]
        ids = self._user_tokens.get(token.user_id)
        if ids is not None:
            ids.discard(token.token_id)
            if not ids:
                del self._user_tokens[token.user_id]

    def _put_token(self, token: AuthToken, now: float) -> bool:
        old = self._tokens.get(token.token_id)
        if now >= token.retain_ts:
            if old is not None:
                self._unlink_token(old)
            return False  # already over: not written, and what the id held is gone
        if old is not None and (
            old.access_digest != token.access_digest
            or old.refresh_digest != token.refresh_digest
            or old.user_id != token.user_id
        ):
            self._unlink_token(old)
        # Same keys: overwritten in place, so a lock-free reader never finds the record missing.
        self._tokens[token.token_id] = token
        self._by_access[token.access_digest] = token
        if token.refresh_digest:
            self._by_refresh[token.refresh_digest] = token.token_id
        self._user_tokens.setdefault(token.user_id, set()).add(token.token_id)
        return True

    def store_token(self, token: AuthToken) -> None:
        with self._lock:
            self._put_token(token, now_ts())

    def get_token(self, token_id: str) -> AuthToken | None:
        return self._live_token(token_id, now_ts())

    def _get_tokens(self, token_ids: Iterable[str]) -> dict[str, AuthToken]:
        now = now_ts()
        found = {}
        for token_id in token_ids:
            token = self._live_token(token_id, now)
            if token is not None:
                found[token_id] = token
        return found

    def get_token_by_access(self, access_digest: str) -> AuthToken | None:
        # The hot path: one dict read, no lock, no copy.
        token = self._by_access.get(access_digest)
        if token is None or now_ts() >= token.retain_ts:
            return None
        return token

    def get_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        return self._live_token(self._by_refresh.get(refresh_digest), now_ts())

    def update_token(self, token: AuthToken) -> bool:
        with self._lock:
            now = now_ts()
            if self._live_token(token.token_id, now) is None:
                return False
            self._put_token(token, now)
            return True

    def revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None = None) -> bool:
        with self._lock:
            now = now_ts()
            token = self._live_token(token_id, now)
            if token is None or token.revoked_at is not None:
                return False
            self._put_token(
                replace(token, revoked_at=at, replaced_by=replaced_by, updated_at=at), now
            )
            return True

    def _user_token_records(self, user_id: str, now: float) -> list[AuthToken]:
        tokens = []
        for token_id in self._user_tokens.get(user_id, ()):
            token = self._live_token(token_id, now)
            if token is not None:
                tokens.append(token)
        tokens.sort(key=lambda t: (t.created_at, t.token_id))
        return tokens

    def revoke_user_tokens(
        self, user_id: str, *, at: datetime, family_id: str | None = None
    ) -> int:
        # In batches, each under the lock: a service account with 100,000 tokens must not
        # hold every other caller (verification takes no lock, but stores do) for the whole
        # revocation. No sorting: the order of revocation does not matter.
        with self._lock:
            ids = list(self._user_tokens.get(user_id, ()))
        count = 0
        for chunk in _batched(ids, REVOKE_BATCH):
            with self._lock:
                now = now_ts()
                for token_id in chunk:
                    token = self._live_token(token_id, now)
                    if (
                        token is not None
                        and token.user_id == user_id
                        and token.revoked_at is None
                        and (family_id is None or token.family_id == family_id)
                    ):
                        self._put_token(replace(token, revoked_at=at, updated_at=at), now)
                        count += 1
        return count

    def delete_token(self, token_id: str) -> bool:
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None:
                return False
            self._unlink_token(token)
            return now_ts() < token.retain_ts

    def list_user_tokens(self, user_id: str) -> list[AuthToken]:
        with self._lock:
            return self._user_token_records(user_id, now_ts())

    def delete_user_tokens(self, user_id: str) -> int:
        with self._lock:
            tokens = self._user_token_records(user_id, now_ts())
            for token_id in list(self._user_tokens.get(user_id, ())):
                self._unlink_token(self._tokens[token_id])
            return len(tokens)

    # Sessions -----------------------------------------------------------------------------

    def _deadline(self, session: SessionData, now: datetime) -> datetime | None:
        if session.expires_at is not None:
            return session.expires_at
        return None if self.default_ttl is None else now + self.default_ttl

    def _live_session(self, session_id: str, now: datetime) -> SessionData | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        session, deadline = entry
        if deadline is not None and now >= deadline:
            return None
        return session

    def _unlink_session(self, session: SessionData) -> None:
        self._sessions.pop(session.session_id, None)
        ids = self._user_sessions.get(session.user_id)
        if ids is not None:
            ids.discard(session.session_id)
            if not ids:
                del self._user_sessions[session.user_id]

    def _put_session(self, session: SessionData, now: datetime) -> bool:
        old = self._sessions.get(session.session_id)
        if old is not None:
            self._unlink_session(old[0])
        deadline = self._deadline(session, now)
        if deadline is not None and now >= deadline:
            return False
        self._sessions[session.session_id] = (_copy_session(session), deadline)
        self._user_sessions.setdefault(session.user_id, set()).add(session.session_id)
        return True

    def store_session(self, session: SessionData) -> None:
        with self._lock:
            self._put_session(session, utcnow())

    def get_session(self, session_id: str) -> SessionData | None:
        with self._lock:
            session = self._live_session(session_id, utcnow())
            return None if session is None else _copy_session(session)

    def _get_sessions(self, session_ids: Iterable[str]) -> dict[str, SessionData]:
        with self._lock:
            now = utcnow()
            found = {}
            for session_id in session_ids:
                session = self._live_session(session_id, now)
                if session is not None:
                    found[session_id] = _copy_session(session)
            return found

    def touch_session(
        self, session_id: str, *, at: datetime, expires_at: datetime | None = None
    ) -> bool:
        with self._lock:
            now = utcnow()
            session = self._live_session(session_id, now)
            if session is None:
                return False
            touched = replace(
                session, last_accessed=at, expires_at=expires_at or session.expires_at
            )
            self._put_session(touched, now)
            return True

    def delete_session(self, session_id: str) -> bool:
        with self._lock:
            session = self._live_session(session_id, utcnow())
            entry = self._sessions.get(session_id)
            if entry is not None:
                self._unlink_session(entry[0])
            return session is not None

    def _user_session_records(self, user_id: str, now: datetime) -> list[SessionData]:
        sessions = []
        for session_id in self._user_sessions.get(user_id, ()):
            session = self._live_session(session_id, now)
            if session is not None:
                sessions.append(session)
        sessions.sort(key=lambda s: (s.created_at, s.session_id))
        return sessions

    def list_user_sessions(self, user_id: str) -> list[SessionData]:
        with self._lock:
            return [_copy_session(s) for s in self._user_session_records(user_id, utcnow())]

    def delete_user_sessions(self, user_id: str) -> int:
        with self._lock:
            live = self._user_session_records(user_id, utcnow())
            for session_id in list(self._user_sessions.get(user_id, ())):
                self._unlink_session(self._sessions[session_id][0])
            return len(live)

    def count_active_sessions(self) -> int:
        with self._lock:
            now = utcnow()
            return sum(1 for sid in self._sessions if self._live_session(sid, now) is not None)

    # Key-value ----------------------------------------------------------------------------

    def _live_kv(self, key: str, now: datetime) -> KVEntry | None:
        entry = self._kv.get(key)
        if entry is None or entry.is_expired(now):
            return None
        return entry

    def kv_set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        with self._lock:
            now = utcnow()
            expires_at = None if ttl is None else now + ttl
            if expires_at is not None and expires_at <= now:
                self._kv.pop(key, None)  # already over: not written, and the old value is gone
                return
            self._kv[key] = KVEntry(key=key, value=value, created_at=now, expires_at=expires_at)

    def kv_get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._live_kv(key, utcnow())
            return None if entry is None else entry.value

    def _kv_entries(self, keys: Iterable[str]) -> dict[str, KVEntry] | None:
        with self._lock:
            now = utcnow()
            found = {}
            for key in keys:
                entry = self._live_kv(key, now)
                if entry is not None:
                    found[key] = replace(entry)
            return found

    def kv_delete(self, key: str) -> bool:
        with self._lock:
            live = self._live_kv(key, utcnow()) is not None
            self._kv.pop(key, None)
            return live

    def kv_incr(self, key: str, ttl: timedelta | None = None) -> int:
        with self._lock:
            now = utcnow()
            entry = self._live_kv(key, now)
            if entry is None:
                expires_at = None if ttl is None else now + ttl
                if expires_at is None or expires_at > now:
                    self._kv[key] = KVEntry(key, b"1", created_at=now, expires_at=expires_at)
                else:
                    self._kv.pop(key, None)
                return 1
            value = validate.counter(key, entry.value) + 1
            entry.value = str(value).encode()
            return value

    # Audit log ----------------------------------------------------------------------------

    def _append(self, event: AuditEvent) -> bool:
        if event.event_id in self._events:
            return False
        self._events[event.event_id] = _copy_event(event)
        bisect.insort(
            self._event_order,
            (codec.epoch_us(event.created_at), next(self._event_seq), event.event_id),
        )
        return True

    def append_audit(self, event: AuditEvent) -> None:
        with self._lock:
            self._append(event)

    def _matching(
        self,
        user_id: str | None,
        action: str | None,
        outcome: bool | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Iterator[AuditEvent]:
        """Matching events, newest first; the caller holds the lock."""
        low = (
            0 if since is None else bisect.bisect_left(self._event_order, (codec.epoch_us(since),))
        )
        high = (
            len(self._event_order)
            if until is None
            else bisect.bisect_left(self._event_order, (codec.epoch_us(until),))
        )
        for index in range(high - 1, low - 1, -1):
            event = self._events[self._event_order[index][2]]
            if user_id is not None and event.user_id != user_id:
                continue
            if action is not None and event.action != action:
                continue
            if outcome is not None and event.outcome != outcome:
                continue
            yield event

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
        with self._lock:
            found = self._matching(user_id, action, outcome, since, until)
            return [_copy_event(e) for e in itertools.islice(found, offset, offset + limit)]

    def count_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        outcome: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        with self._lock:
            if (user_id, action, outcome, since, until) == (None,) * 5:
                return len(self._event_order)
            return sum(1 for _ in self._matching(user_id, action, outcome, since, until))

    def delete_audit_before(self, cutoff: datetime) -> int:
        with self._lock:
            end = bisect.bisect_left(self._event_order, (codec.epoch_us(cutoff),))
            for _, _, event_id in self._event_order[:end]:
                del self._events[event_id]
            del self._event_order[:end]
            return end

    # Maintenance --------------------------------------------------------------------------

    def cleanup_expired_tokens(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        def expired(token_id: str, now: datetime) -> bool:
            token = self._tokens.get(token_id)
            return token is not None and now.timestamp() >= token.retain_ts

        def remove(token_id: str, now: datetime) -> bool:
            if not expired(token_id, now):
                return False
            self._unlink_token(self._tokens[token_id])
            return True

        return self._sweep(lambda: list(self._tokens), expired, remove, batch_size, dry_run)

    def cleanup_expired_sessions(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        def expired(session_id: str, now: datetime) -> bool:
            return session_id in self._sessions and self._live_session(session_id, now) is None

        def remove(session_id: str, now: datetime) -> bool:
            if not expired(session_id, now):
                return False
            self._unlink_session(self._sessions[session_id][0])
            return True

        return self._sweep(lambda: list(self._sessions), expired, remove, batch_size, dry_run)

    def cleanup_expired_kv(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        def expired(key: str, now: datetime) -> bool:
            return key in self._kv and self._live_kv(key, now) is None

        def remove(key: str, now: datetime) -> bool:
            if not expired(key, now):
                return False
            del self._kv[key]
            return True

        return self._sweep(lambda: list(self._kv), expired, remove, batch_size, dry_run)

    def _sweep(
        self,
        ids: Callable[[], list[str]],
        expired: Callable[[str, datetime], bool],
        remove: Callable[[str, datetime], bool],
        batch_size: int,
        dry_run: bool,
    ) -> int:
        with self._lock:
            candidates = ids()
        action = expired if dry_run else remove
        count = 0
        for batch in _batched(candidates, batch_size):
            # The lock is taken per batch, so sweeping a large store never stalls
            # verifications for long.
            with self._lock:
                now = utcnow()
                count += sum(1 for item in batch if action(item, now))
        return count

    def statistics(self) -> StorageStatistics:
        with self._lock:
            now = utcnow()
            now_ts = now.timestamp()
            tokens = [t for t in self._tokens.values() if now_ts < t.retain_ts]
            revoked = sum(1 for t in tokens if t.revoked_at is not None)
            expired = sum(1 for t in tokens if t.revoked_at is None and t.is_expired(now))
            sessions = sum(1 for sid in self._sessions if self._live_session(sid, now))
            return {
                "backend": self.backend_name,
                "total_tokens": len(tokens),
                "active_tokens": len(tokens) - revoked - expired,
                "expired_tokens": expired,
                "revoked_tokens": revoked,
                "active_sessions": sessions,
                "total_sessions": len(self._sessions),
                "kv_entries": sum(1 for key in self._kv if self._live_kv(key, now)),
                "audit_events": len(self._event_order),
                "database_size_mb": None,
                "memory_used_bytes": None,
            }

    def flush(self) -> None:
        with self._lock:
            for table in (
                self._tokens,
                self._by_access,
                self._by_refresh,
                self._user_tokens,
                self._sessions,
                self._user_sessions,
                self._kv,
                self._events,
            ):
                table.clear()
            self._event_order.clear()

    # Iteration and import -----------------------------------------------------------------

    def _iterate(
        self, ids: Callable[[], list[str]], fetch: Callable[[str, datetime], T | None], size: int
    ) -> Iterator[list[T]]:
        with self._lock:
            candidates = ids()
        for chunk in _batched(candidates, size):
            with self._lock:
                now = utcnow()
                batch = [item for item in (fetch(key, now) for key in chunk) if item is not None]
            if batch:
                yield batch

    def iter_tokens(self, *, batch_size: int = 1000) -> Iterator[list[AuthToken]]:
        def fetch(token_id: str, now: datetime) -> AuthToken | None:
            return self._live_token(token_id, now.timestamp())

        return self._iterate(lambda: list(self._tokens), fetch, batch_size)

    def iter_sessions(self, *, batch_size: int = 1000) -> Iterator[list[SessionData]]:
        def fetch(session_id: str, now: datetime) -> SessionData | None:
            session = self._live_session(session_id, now)
            return None if session is None else _copy_session(session)

        return self._iterate(lambda: list(self._sessions), fetch, batch_size)

    def iter_kv(self, *, batch_size: int = 1000) -> Iterator[list[KVEntry]]:
        def fetch(key: str, now: datetime) -> KVEntry | None:
            entry = self._live_kv(key, now)
            return None if entry is None else replace(entry)

        return self._iterate(lambda: list(self._kv), fetch, batch_size)

    def iter_audit(self, *, batch_size: int = 1000) -> Iterator[list[AuditEvent]]:
        def fetch(event_id: str, now: datetime) -> AuditEvent | None:
            event = self._events.get(event_id)
            return None if event is None else _copy_event(event)

        return self._iterate(lambda: [k[2] for k in self._event_order], fetch, batch_size)

    def import_tokens(self, tokens: Iterable[AuthToken]) -> int:
        with self._lock:
            now = now_ts()
            return sum(1 for token in tokens if self._put_token(token, now))

    def import_sessions(self, sessions: Iterable[SessionData]) -> int:
        with self._lock:
            now = utcnow()
            return sum(1 for session in sessions if self._put_session(session, now))

    def import_kv(self, entries: Iterable[KVEntry]) -> int:
        with self._lock:
            now = utcnow()
            count = 0
            for entry in entries:
                if entry.is_expired(now):
                    self._kv.pop(entry.key, None)
                    continue
                self._kv[entry.key] = replace(entry)
                count += 1
            return count

    def import_audit(self, events: Iterable[AuditEvent]) -> int:
        with self._lock:
            return sum(1 for event in events if self._append(event))


# One keyspace per (cache location, key prefix) for the life of the process, like
# LocMemCache's own registry: a CacheStorage built again (per request, after a settings
# change) finds the tokens the previous one stored.
_shared: dict[tuple[str, str], MemoryEngine] = {}
_shared_lock = threading.Lock()


def shared_engine(location: str, key_prefix: str, default_ttl: timedelta | None) -> MemoryEngine:
    """The process-wide keyspace for a LocMemCache location and key prefix."""
    with _shared_lock:
        engine = _shared.get((location, key_prefix))
        if engine is None:
            engine = _shared[(location, key_prefix)] = MemoryEngine(default_ttl=default_ttl)
        return engine
