"""The storage contract every backend implements.

A backend subclasses :class:`AuthStorage` and provides the sync methods; each has an async twin
named with an ``a`` prefix that defaults to running the sync method through ``sync_to_async``
(a backend with a native async client overrides them). Backends hold mechanics only: expiry
rules, rotation, lockout and audit policy live in :class:`django_authfw.AuthFramework`.

Shared rules, checked by the contract test suite on every backend:

* Records past their expiry are invisible: ``get_*``, ``list_*`` and ``count_*`` never return
  them, whether or not :meth:`cleanup_expired` has run. A token stays visible until
  :attr:`AuthToken.retain_until` (its refresh expiry) so that refresh-token reuse is detected.
* ``import_*`` upserts, so importing the same records twice changes nothing (migration and
  restore rely on it).
* Failures of the underlying service raise :class:`StorageUnavailable`; a method never reports
  success for a write that did not happen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from ..records import (
    AuditEvent,
    AuthToken,
    CleanupCounts,
    KVEntry,
    SessionData,
    StorageStatistics,
)

T = TypeVar("T")


def _abstract(name: str) -> NotImplementedError:
    return NotImplementedError(f"subclasses of AuthStorage must provide {name}()")


async def _in_thread(method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a sync storage method from async code.

    ``thread_sensitive=True`` keeps ORM calls on the thread that owns the request's database
    connection, as Django's own async ORM methods do.
    """
    return await sync_to_async(method, thread_sensitive=True)(*args, **kwargs)


_DONE = object()


async def _aiterate(batches: Iterator[list[T]]) -> AsyncIterator[list[T]]:
    """Drive a sync batch iterator from async code, one batch per thread hop."""
    while True:
        batch = await _in_thread(next, batches, _DONE)
        if batch is _DONE:
            return
        yield batch


class AuthStorage:
    """Base class of storage backends (tokens, sessions, key-value entries, audit log).

    ``alias`` is the name under ``AUTHFW["STORAGES"]`` the instance was built from, or None for
    one built directly in code.
    """

    alias: str | None = None

    def __init__(self, **options: Any) -> None:
        if options:
            unknown = ", ".join(sorted(options))
            raise TypeError(f"{type(self).__name__} got unknown OPTIONS: {unknown}")

    # Tokens -------------------------------------------------------------------------------

    def store_token(self, token: AuthToken) -> None:
        """Insert a newly issued token and add it to its user's index."""
        raise _abstract("store_token")

    def get_token(self, token_id: str) -> AuthToken | None:
        """Return the token with this id, or None if unknown or past ``retain_until``."""
        raise _abstract("get_token")

    def get_token_by_access(self, access_digest: str) -> AuthToken | None:
        """Return the token whose access-token digest is ``access_digest`` (the hot path).

        One indexed lookup, no write. Revoked and access-expired tokens are returned (the
        framework tells the caller why they fail); unknown ones give None.
        """
        raise _abstract("get_token_by_access")

    def get_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        """Return the token whose refresh-token digest is ``refresh_digest``, or None."""
        raise _abstract("get_token_by_refresh")

    def update_token(self, token: AuthToken) -> bool:
        """Replace a stored token's fields; return False if it no longer exists."""
        raise _abstract("update_token")

    def revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None = None) -> bool:
        """Atomically mark a token revoked if it is not already.

        Returns True only for the one call that revoked it, so two concurrent refreshes of the
        same refresh token cannot both succeed.
        """
        raise _abstract("revoke_token")

    def revoke_user_tokens(
        self, user_id: str, *, at: datetime, family_id: str | None = None
    ) -> int:
        """Revoke every unrevoked token of a user (or of one family); return how many."""
        raise _abstract("revoke_user_tokens")

    def delete_token(self, token_id: str) -> bool:
        """Delete a token and its index entries; return whether it existed."""
        raise _abstract("delete_token")

    def list_user_tokens(self, user_id: str) -> list[AuthToken]:
        """Return the user's tokens not past ``retain_until``, oldest first."""
        raise _abstract("list_user_tokens")

    def delete_user_tokens(self, user_id: str) -> int:
        """Delete every token of a user; return how many."""
        raise _abstract("delete_user_tokens")

    # Sessions -----------------------------------------------------------------------------

    def store_session(self, session: SessionData) -> None:
        """Insert or replace a session."""
        raise _abstract("store_session")

    def get_session(self, session_id: str) -> SessionData | None:
        """Return the session, or None if unknown or expired."""
        raise _abstract("get_session")

    def touch_session(
        self, session_id: str, *, at: datetime, expires_at: datetime | None = None
    ) -> bool:
        """Set ``last_accessed`` (and, if given, a new expiry); False if gone or expired."""
        raise _abstract("touch_session")

    def delete_session(self, session_id: str) -> bool:
        """Delete a session; return whether it existed."""
        raise _abstract("delete_session")

    def list_user_sessions(self, user_id: str) -> list[SessionData]:
        """Return the user's unexpired sessions, oldest first."""
        raise _abstract("list_user_sessions")

    def delete_user_sessions(self, user_id: str) -> int:
        """Delete every session of a user; return how many."""
        raise _abstract("delete_user_sessions")

    def count_active_sessions(self) -> int:
        """Return the number of unexpired sessions."""
        raise _abstract("count_active_sessions")

    # Key-value ----------------------------------------------------------------------------

    def kv_set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        """Store ``value`` under ``key``; without ``ttl`` it persists."""
        raise _abstract("kv_set")

    def kv_get(self, key: str) -> bytes | None:
        """Return the value, or None if unknown or expired."""
        raise _abstract("kv_get")

    def kv_delete(self, key: str) -> bool:
        """Delete a key; return whether it existed."""
        raise _abstract("kv_delete")

    def kv_incr(self, key: str, ttl: timedelta | None = None) -> int:
        """Atomically add one to an integer counter and return the new value.

        A missing or expired counter starts at 1 and gets ``ttl``; incrementing keeps the
        expiry it has (a fixed window, as lockout counting needs).
        """
        raise _abstract("kv_incr")

    # Audit log ----------------------------------------------------------------------------

    def append_audit(self, event: AuditEvent) -> None:
        """Append one audit event."""
        raise _abstract("append_audit")

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
        """Return matching events, newest first (``since`` inclusive, ``until`` exclusive)."""
        raise _abstract("query_audit")

    def count_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        outcome: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Return how many events match the same filters as :meth:`query_audit`."""
        raise _abstract("count_audit")

    def delete_audit_before(self, cutoff: datetime) -> int:
        """Delete events created before ``cutoff``; return how many."""
        raise _abstract("delete_audit_before")

    # Maintenance --------------------------------------------------------------------------

    def cleanup_expired_tokens(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        """Remove tokens past ``retain_until`` in batches; return how many (would be) removed."""
        raise _abstract("cleanup_expired_tokens")

    def cleanup_expired_sessions(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        """Remove expired sessions in batches; return how many (would be) removed."""
        raise _abstract("cleanup_expired_sessions")

    def cleanup_expired_kv(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        """Remove expired key-value entries in batches; return how many (would be) removed."""
        raise _abstract("cleanup_expired_kv")

    def cleanup_expired(self, *, batch_size: int = 1000, dry_run: bool = False) -> CleanupCounts:
        """Remove every expired record; return the counts per kind."""
        return {
            "tokens": self.cleanup_expired_tokens(batch_size=batch_size, dry_run=dry_run),
            "sessions": self.cleanup_expired_sessions(batch_size=batch_size, dry_run=dry_run),
            "kv": self.cleanup_expired_kv(batch_size=batch_size, dry_run=dry_run),
        }

    def statistics(self) -> StorageStatistics:
        """Counts and sizes, with the guide's key names (see :class:`StorageStatistics`)."""
        raise _abstract("statistics")

    def flush(self) -> None:
        """Delete every record this storage holds (tests, ``authfw_restore --replace``)."""
        raise _abstract("flush")

    def close(self) -> None:
        """Release connections and stop background work; the storage may not be used after."""

    # Batched iteration and bulk import (migration, backup) -------------------------------

    def iter_tokens(self, *, batch_size: int = 1000) -> Iterator[list[AuthToken]]:
        """Yield every stored token in batches, including revoked and expired ones."""
        raise _abstract("iter_tokens")

    def iter_sessions(self, *, batch_size: int = 1000) -> Iterator[list[SessionData]]:
        """Yield every stored session in batches."""
        raise _abstract("iter_sessions")

    def iter_kv(self, *, batch_size: int = 1000) -> Iterator[list[KVEntry]]:
        """Yield every stored key-value entry in batches."""
        raise _abstract("iter_kv")

    def iter_audit(self, *, batch_size: int = 1000) -> Iterator[list[AuditEvent]]:
        """Yield every audit event in batches, oldest first."""
        raise _abstract("iter_audit")

    def import_tokens(self, tokens: Iterable[AuthToken]) -> int:
        """Upsert tokens by ``token_id`` (indexes included); return how many were written."""
        raise _abstract("import_tokens")

    def import_sessions(self, sessions: Iterable[SessionData]) -> int:
        """Upsert sessions by ``session_id``; return how many were written."""
        raise _abstract("import_sessions")

    def import_kv(self, entries: Iterable[KVEntry]) -> int:
        """Upsert key-value entries by ``key``; return how many were written."""
        raise _abstract("import_kv")

    def import_audit(self, events: Iterable[AuditEvent]) -> int:
        """Insert audit events whose ``event_id`` is not stored yet; return how many."""
        raise _abstract("import_audit")

    def create_backup(self, path: str | Path) -> dict[str, int]:
        """Write every record to a backup file at ``path``; return counts per kind."""
        from ..backup import write_backup

        return write_backup(self, path)

    # Async twins (run the sync method in a worker thread, as Django's cache base does) ----
    async def astore_token(self, token: AuthToken) -> None:
        return await _in_thread(self.store_token, token)

    async def aget_token(self, token_id: str) -> AuthToken | None:
        return await _in_thread(self.get_token, token_id)

    async def aget_token_by_access(self, access_digest: str) -> AuthToken | None:
        return await _in_thread(self.get_token_by_access, access_digest)

    async def aget_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        return await _in_thread(self.get_token_by_refresh, refresh_digest)

    async def aupdate_token(self, token: AuthToken) -> bool:
        return await _in_thread(self.update_token, token)

    async def arevoke_token(
        self, token_id: str, *, at: datetime, replaced_by: str | None = None
    ) -> bool:
        return await _in_thread(self.revoke_token, token_id, at=at, replaced_by=replaced_by)

    async def arevoke_user_tokens(
        self, user_id: str, *, at: datetime, family_id: str | None = None
    ) -> int:
        return await _in_thread(self.revoke_user_tokens, user_id, at=at, family_id=family_id)

    async def adelete_token(self, token_id: str) -> bool:
        return await _in_thread(self.delete_token, token_id)

    async def alist_user_tokens(self, user_id: str) -> list[AuthToken]:
        return await _in_thread(self.list_user_tokens, user_id)

    async def adelete_user_tokens(self, user_id: str) -> int:
        return await _in_thread(self.delete_user_tokens, user_id)

    async def astore_session(self, session: SessionData) -> None:
        return await _in_thread(self.store_session, session)

    async def aget_session(self, session_id: str) -> SessionData | None:
        return await _in_thread(self.get_session, session_id)

    async def atouch_session(
        self, session_id: str, *, at: datetime, expires_at: datetime | None = None
    ) -> bool:
        return await _in_thread(self.touch_session, session_id, at=at, expires_at=expires_at)

    async def adelete_session(self, session_id: str) -> bool:
        return await _in_thread(self.delete_session, session_id)

    async def alist_user_sessions(self, user_id: str) -> list[SessionData]:
        return await _in_thread(self.list_user_sessions, user_id)

    async def adelete_user_sessions(self, user_id: str) -> int:
        return await _in_thread(self.delete_user_sessions, user_id)

    async def acount_active_sessions(self) -> int:
        return await _in_thread(self.count_active_sessions)

    async def akv_set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        return await _in_thread(self.kv_set, key, value, ttl)

    async def akv_get(self, key: str) -> bytes | None:
        return await _in_thread(self.kv_get, key)

    async def akv_delete(self, key: str) -> bool:
        return await _in_thread(self.kv_delete, key)

    async def akv_incr(self, key: str, ttl: timedelta | None = None) -> int:
        return await _in_thread(self.kv_incr, key, ttl)

    async def aappend_audit(self, event: AuditEvent) -> None:
        return await _in_thread(self.append_audit, event)

    async def aquery_audit(
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
        return await _in_thread(
            self.query_audit,
            user_id=user_id,
            action=action,
            outcome=outcome,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )

    async def acount_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        outcome: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        return await _in_thread(
            self.count_audit,
            user_id=user_id,
            action=action,
            outcome=outcome,
            since=since,
            until=until,
        )

    async def adelete_audit_before(self, cutoff: datetime) -> int:
        return await _in_thread(self.delete_audit_before, cutoff)

    async def acleanup_expired_tokens(
        self, *, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        return await _in_thread(self.cleanup_expired_tokens, batch_size=batch_size, dry_run=dry_run)

    async def acleanup_expired_sessions(
        self, *, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        return await _in_thread(
            self.cleanup_expired_sessions, batch_size=batch_size, dry_run=dry_run
        )

    async def acleanup_expired_kv(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        return await _in_thread(self.cleanup_expired_kv, batch_size=batch_size, dry_run=dry_run)

    async def acleanup_expired(
        self, *, batch_size: int = 1000, dry_run: bool = False
    ) -> CleanupCounts:
        return await _in_thread(self.cleanup_expired, batch_size=batch_size, dry_run=dry_run)

    async def astatistics(self) -> StorageStatistics:
        return await _in_thread(self.statistics)

    async def aflush(self) -> None:
        return await _in_thread(self.flush)

    async def aimport_tokens(self, tokens: Iterable[AuthToken]) -> int:
        return await _in_thread(self.import_tokens, tokens)

    async def aimport_sessions(self, sessions: Iterable[SessionData]) -> int:
        return await _in_thread(self.import_sessions, sessions)

    async def aimport_kv(self, entries: Iterable[KVEntry]) -> int:
        return await _in_thread(self.import_kv, entries)

    async def aimport_audit(self, events: Iterable[AuditEvent]) -> int:
        return await _in_thread(self.import_audit, events)

    async def acreate_backup(self, path: str | Path) -> dict[str, int]:
        return await _in_thread(self.create_backup, path)

    async def aiter_tokens(self, *, batch_size: int = 1000) -> AsyncIterator[list[AuthToken]]:
        async for batch in _aiterate(self.iter_tokens(batch_size=batch_size)):
            yield batch

    async def aiter_sessions(self, *, batch_size: int = 1000) -> AsyncIterator[list[SessionData]]:
        async for batch in _aiterate(self.iter_sessions(batch_size=batch_size)):
            yield batch

    async def aiter_kv(self, *, batch_size: int = 1000) -> AsyncIterator[list[KVEntry]]:
        async for batch in _aiterate(self.iter_kv(batch_size=batch_size)):
            yield batch

    async def aiter_audit(self, *, batch_size: int = 1000) -> AsyncIterator[list[AuditEvent]]:
        async for batch in _aiterate(self.iter_audit(batch_size=batch_size)):
            yield batch

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r}>"
