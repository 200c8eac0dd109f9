"""An example third-party backend: every record in plain dicts, written only against the
engine methods of :class:`django_authfw.storage.AuthStorage` and the public records.

It is what docs/backends.md ("Write your own backend") walks through, and
tests/contract/test_example_backend.py runs the shipped suite, ``django_authfw.testing``, on it.
It is deliberately simple (one lock, linear scans); use :class:`InMemoryStorage` for real work.

It implements the ``_``-prefixed engine methods (``_store_token``, ``_kv_set``, ...), never the
public ones: ``AuthStorage`` checks every argument of every public call once, with
:mod:`django_authfw.validate`, and then calls the engine method, so this class checks no id,
value, TTL or address itself and refuses bad input exactly as every other backend does. Its
own rules, the contract's:

* time comes from ``records.utcnow`` (the suite's clock moves it), and a record past its expiry
  is invisible whether or not cleanup has run;
* every record is deep-copied on the way in and on the way out, so no caller shares a list or
  dict with the store;
* ``kv_incr`` reads the stored value with :func:`django_authfw.validate.counter`, so a value
  that is not a canonical integer is refused as on every backend (only the engine sees it).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django_authfw import records, validate
from django_authfw.records import AuditEvent, AuthToken, KVEntry, SessionData, StorageStatistics
from django_authfw.storage import AuthStorage

R = TypeVar("R")


def _now() -> datetime:
    return records.utcnow()  # looked up on each call, so the test suite's clock applies


def _batched(items: list[R], size: int) -> Iterator[list[R]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DictStorage(AuthStorage):
    """Tokens, sessions, key-value entries and audit events in four dicts.

    The engine methods are those named like a public method of ``AuthStorage`` with a leading
    underscore; ``_live_*``, ``_find_token``, ``_matching`` and ``_sweep`` are its own helpers.
    ``count_active_sessions``, ``statistics`` and ``flush`` take no input, so a backend
    provides them directly.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)  # refuses unknown OPTIONS
        self._lock = threading.RLock()
        self._tokens: dict[str, AuthToken] = {}
        self._sessions: dict[str, SessionData] = {}
        self._kv: dict[str, KVEntry] = {}
        self._events: dict[str, AuditEvent] = {}  # insertion order is append order

    # Tokens -------------------------------------------------------------------------------

    def _live_tokens(self) -> list[AuthToken]:
        now = _now()
        return [t for t in self._tokens.values() if now < t.retain_until]

    def _find_token(self, match: Callable[[AuthToken], bool]) -> AuthToken | None:
        with self._lock:
            found = next((t for t in self._live_tokens() if match(t)), None)
            return copy.deepcopy(found)

    def _store_token(self, token: AuthToken) -> None:
        with self._lock:
            self._tokens[token.token_id] = copy.deepcopy(token)

    def _get_token(self, token_id: str) -> AuthToken | None:
        return self._find_token(lambda t: t.token_id == token_id)

    def _get_token_by_access(self, access_digest: str) -> AuthToken | None:
        return self._find_token(lambda t: t.access_digest == access_digest)

    def _get_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        return self._find_token(lambda t: t.refresh_digest == refresh_digest)

    def _update_token(self, token: AuthToken) -> bool:
        with self._lock:
            if self._get_token(token.token_id) is None:
                return False
            self._store_token(token)
            return True

    def _revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None) -> bool:
        with self._lock:
            token = self._get_token(token_id)
            if token is None or token.revoked_at is not None:
                return False
            self._tokens[token_id] = records.replace(token, revoked_at=at, replaced_by=replaced_by)
            return True

    def _revoke_user_tokens(self, user_id: str, *, at: datetime, family_id: str | None) -> int:
        with self._lock:
            chosen = [
                t
                for t in self._list_user_tokens(user_id)
                if t.revoked_at is None and (family_id is None or t.family_id == family_id)
            ]
            return sum(self._revoke_token(t.token_id, at=at, replaced_by=None) for t in chosen)

    def _delete_token(self, token_id: str) -> bool:
        with self._lock:
            live = self._get_token(token_id) is not None
            self._tokens.pop(token_id, None)
            return live

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        with self._lock:
            mine = [t for t in self._live_tokens() if t.user_id == user_id]
            return copy.deepcopy(sorted(mine, key=lambda t: t.created_at))

    def _delete_user_tokens(self, user_id: str) -> int:
        with self._lock:
            return sum(self._delete_token(t.token_id) for t in self._list_user_tokens(user_id))

    # Sessions -----------------------------------------------------------------------------

    def _live_sessions(self) -> list[SessionData]:
        now = _now()
        return [s for s in self._sessions.values() if not s.is_expired(now)]

    def _store_session(self, session: SessionData) -> None:
        with self._lock:
            self._sessions[session.session_id] = copy.deepcopy(session)

    def _get_session(self, session_id: str) -> SessionData | None:
        with self._lock:
            found = self._sessions.get(session_id)
            if found is None or found.is_expired(_now()):
                return None
            return copy.deepcopy(found)

    def _touch_session(self, session_id: str, *, at: datetime, expires_at: datetime | None) -> bool:
        with self._lock:
            session = self._get_session(session_id)
            if session is None:
                return False
            session.last_accessed = at
            session.expires_at = expires_at or session.expires_at
            self._sessions[session_id] = session
            return True

    def _delete_session(self, session_id: str) -> bool:
        with self._lock:
            live = self._get_session(session_id) is not None
            self._sessions.pop(session_id, None)
            return live

    def _list_user_sessions(self, user_id: str) -> list[SessionData]:
        with self._lock:
            mine = [s for s in self._live_sessions() if s.user_id == user_id]
            return copy.deepcopy(sorted(mine, key=lambda s: s.created_at))

    def _delete_user_sessions(self, user_id: str) -> int:
        with self._lock:
            mine = self._list_user_sessions(user_id)
            return sum(self._delete_session(s.session_id) for s in mine)

    def count_active_sessions(self) -> int:
        with self._lock:
            return len(self._live_sessions())

    # Key-value ----------------------------------------------------------------------------

    def _kv_set(self, key: str, value: bytes, ttl: timedelta | None) -> None:
        now = _now()
        expires = None if ttl is None else now + ttl
        with self._lock:
            self._kv[key] = KVEntry(key=key, value=value, created_at=now, expires_at=expires)

    def _live_kv(self, key: str) -> KVEntry | None:
        entry = self._kv.get(key)
        return None if entry is None or entry.is_expired(_now()) else entry

    def _kv_get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._live_kv(key)
            return None if entry is None else entry.value

    def _kv_delete(self, key: str) -> bool:
        with self._lock:
            live = self._live_kv(key) is not None
            self._kv.pop(key, None)
            return live

    def _kv_incr(self, key: str, ttl: timedelta | None) -> int:
        with self._lock:
            entry = self._live_kv(key)
            if entry is None:
                self._kv_set(key, b"1", ttl)
                return 1
            # The stored value only the engine sees: the contract's one reading of a counter
            # (b"03" or b" 3" is refused on every backend). Incrementing keeps the expiry the
            # entry has: a fixed window.
            value = validate.counter(key, entry.value) + 1
            self._kv[key] = records.replace(entry, value=str(value).encode())
            return value

    # Audit log ----------------------------------------------------------------------------

    def _append_audit(self, event: AuditEvent) -> None:
        with self._lock:
            self._events.setdefault(event.event_id, copy.deepcopy(event))

    def _matching(
        self,
        user_id: str | None,
        action: str | None,
        outcome: bool | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[AuditEvent]:
        """Matching events, oldest first (ties in append order)."""
        found = [
            e
            for e in self._events.values()
            if (user_id is None or e.user_id == user_id)
            and (action is None or e.action == action)
            and (outcome is None or e.outcome == outcome)
            and (since is None or e.created_at >= since)
            and (until is None or e.created_at < until)
        ]
        return sorted(found, key=lambda e: e.created_at)  # stable: append order kept

    def _query_audit(
        self,
        *,
        user_id: str | None,
        action: str | None,
        outcome: bool | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> list[AuditEvent]:
        with self._lock:
            newest_first = self._matching(user_id, action, outcome, since, until)[::-1]
            return copy.deepcopy(newest_first[offset : offset + limit])

    def _count_audit(
        self,
        *,
        user_id: str | None,
        action: str | None,
        outcome: bool | None,
        since: datetime | None,
        until: datetime | None,
    ) -> int:
        with self._lock:
            return len(self._matching(user_id, action, outcome, since, until))

    def _delete_audit_before(self, cutoff: datetime) -> int:
        with self._lock:
            old = [e.event_id for e in self._events.values() if e.created_at < cutoff]
            for event_id in old:
                del self._events[event_id]
            return len(old)

    # Maintenance --------------------------------------------------------------------------

    @staticmethod
    def _sweep(store: dict[str, Any], expired: Callable[[Any], bool], dry_run: bool) -> int:
        gone = [key for key, record in store.items() if expired(record)]
        if not dry_run:
            for key in gone:
                del store[key]
        return len(gone)

    def _cleanup_expired_tokens(self, *, batch_size: int, dry_run: bool) -> int:
        now = _now()
        with self._lock:
            return self._sweep(self._tokens, lambda t: now >= t.retain_until, dry_run)

    def _cleanup_expired_sessions(self, *, batch_size: int, dry_run: bool) -> int:
        now = _now()
        with self._lock:
            return self._sweep(self._sessions, lambda s: s.is_expired(now), dry_run)

    def _cleanup_expired_kv(self, *, batch_size: int, dry_run: bool) -> int:
        now = _now()
        with self._lock:
            return self._sweep(self._kv, lambda e: e.is_expired(now), dry_run)

    def statistics(self) -> StorageStatistics:
        now = _now()
        with self._lock:
            live = self._live_tokens()
            return {
                "backend": "dict",
                "total_tokens": len(live),
                "active_tokens": sum(t.is_active(now) for t in live),
                "expired_tokens": sum(not t.is_revoked and t.is_expired(now) for t in live),
                "revoked_tokens": sum(t.is_revoked for t in live),
                "active_sessions": len(self._live_sessions()),
                "total_sessions": len(self._sessions),
                "kv_entries": sum(self._live_kv(k) is not None for k in self._kv),
                "audit_events": len(self._events),
                "database_size_mb": None,
                "memory_used_bytes": None,
            }

    def flush(self) -> None:
        with self._lock:
            for store in (self._tokens, self._sessions, self._kv, self._events):
                store.clear()

    # Batched iteration and bulk import ----------------------------------------------------

    def _iter_tokens(self, *, batch_size: int) -> Iterator[list[AuthToken]]:
        with self._lock:
            snapshot = copy.deepcopy(self._live_tokens())
        yield from _batched(snapshot, batch_size)

    def _iter_sessions(self, *, batch_size: int) -> Iterator[list[SessionData]]:
        with self._lock:
            snapshot = copy.deepcopy(self._live_sessions())
        yield from _batched(snapshot, batch_size)

    def _iter_kv(self, *, batch_size: int) -> Iterator[list[KVEntry]]:
        with self._lock:
            snapshot = [e for k in list(self._kv) if (e := self._live_kv(k)) is not None]
        yield from _batched(copy.deepcopy(snapshot), batch_size)

    def _iter_audit(self, *, batch_size: int) -> Iterator[list[AuditEvent]]:
        with self._lock:
            snapshot = copy.deepcopy(self._matching(None, None, None, None, None))
        yield from _batched(snapshot, batch_size)

    # The front has checked every record of an import before calling these: one bad record
    # writes none. Upserts by id, so a second import changes nothing.

    def _import_tokens(self, tokens: list[AuthToken]) -> int:
        for token in tokens:
            self._store_token(token)
        return len(tokens)

    def _import_sessions(self, sessions: list[SessionData]) -> int:
        for session in sessions:
            self._store_session(session)
        return len(sessions)

    def _import_kv(self, entries: list[KVEntry]) -> int:
        with self._lock:
            for entry in entries:
                self._kv[entry.key] = copy.deepcopy(entry)
        return len(entries)

    def _import_audit(self, events: list[AuditEvent]) -> int:
        count = 0
        with self._lock:
            for event in events:
                if event.event_id not in self._events:
                    self._events[event.event_id] = copy.deepcopy(event)
                    count += 1
        return count
