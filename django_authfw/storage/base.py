"""The storage contract every backend implements.

:class:`AuthStorage` is a validating front: each public method checks its arguments once, with
:mod:`django_authfw.validate`, and then calls the engine method of the same name with a leading
underscore (``store_token`` calls ``_store_token``). A backend subclasses it and provides the
engine methods, which trust their arguments; so bad input raises ``InvalidInput`` and changes
nothing on every backend alike, and a record one backend accepts every backend accepts. Methods
without arguments (``statistics``, ``flush``, ``close``, ``count_active_sessions``) are provided
directly. Each public method has an async twin named with an ``a`` prefix that defaults to
running the sync method through ``sync_to_async`` (a backend with a native async client
overrides them). Backends hold mechanics only: expiry
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
from django.core.exceptions import ImproperlyConfigured

from .. import validate
from ..records import (
    NOT_LOADED,
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

# The writer behind AuthStorage.create_backup. The storage layer owns the method (it is public
# contract) but not the file format: django_authfw.backup, an operation above this layer,
# registers its writer when it is imported, so nothing here imports it.
BackupWriter = Callable[["AuthStorage", "str | Path"], dict[str, int]]
_backup_writer: BackupWriter | None = None


def register_backup_writer(writer: BackupWriter | None) -> BackupWriter | None:
    """Make ``writer(storage, path)`` the one :meth:`AuthStorage.create_backup` calls.

    Returns the writer it replaces (None for none), so a caller can put it back.
    """
    global _backup_writer
    previous, _backup_writer = _backup_writer, writer
    return previous


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
        self._store_token(validate.token(token))

    def get_token(self, token_id: str) -> AuthToken | None:
        """Return the token with this id, or None if unknown or past ``retain_until``."""
        return self._get_token(validate.identifier(token_id, "token_id"))

    def get_token_by_access(self, access_digest: str) -> AuthToken | None:
        """Return the token whose access-token digest is ``access_digest`` (the hot path).

        One indexed lookup, no write. Revoked and access-expired tokens are returned (the
        framework tells the caller why they fail); unknown ones give None, and so does a string
        that cannot be a digest, without asking the backend.
        """
        if not validate.is_digest(access_digest):
            return None
        return self._get_token_by_access(access_digest)

    def lookup_access(self, access_digest: str) -> AuthToken | None:
        """:meth:`get_token_by_access` for a caller that computed ``access_digest`` itself, so
        that it is a well-formed digest (``AuthFramework.verify_token``).

        A shipped storage points it straight at its engine, skipping the front's check; this
        default runs the public method, so a backend written against either level works.
        """
        return self.get_token_by_access(access_digest)

    def lookup_access_with_user(self, access_digest: str) -> tuple[AuthToken | None, Any]:
        """:meth:`lookup_access`, and the token's user where the store reads it in the same
        query: ``(token, user)``, ``user`` a user instance or None if the row has none.

        Where it cannot (this default; a cache storage; a database storage whose tokens and
        users are in different databases) the user is :data:`~django_authfw.records.NOT_LOADED`
        and the caller loads it if it needs it.
        """
        return self.lookup_access(access_digest), NOT_LOADED

    def get_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        """Return the token whose refresh-token digest is ``refresh_digest``, or None."""
        if not validate.is_digest(refresh_digest):
            return None
        return self._get_token_by_refresh(refresh_digest)

    def update_token(self, token: AuthToken) -> bool:
        """Replace a stored token's fields; return False if it no longer exists."""
        return self._update_token(validate.token(token))

    def revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None = None) -> bool:
        """Atomically mark a token revoked if it is not already.

        Returns True only for the one call that revoked it, so two concurrent refreshes of the
        same refresh token cannot both succeed.
        """
        return self._revoke_token(
            validate.identifier(token_id, "token_id"),
            at=validate.aware(at, "at"),
            replaced_by=validate.optional_identifier(replaced_by, "replaced_by"),
        )

    def revoke_user_tokens(
        self, user_id: str, *, at: datetime, family_id: str | None = None
    ) -> int:
        """Revoke every unrevoked token of a user (or of one family); return how many."""
        return self._revoke_user_tokens(
            validate.identifier(user_id, "user_id"),
            at=validate.aware(at, "at"),
            family_id=validate.optional_identifier(family_id, "family_id"),
        )

    def delete_token(self, token_id: str) -> bool:
        """Delete a token and its index entries; return whether it existed."""
        return self._delete_token(validate.identifier(token_id, "token_id"))

    def list_user_tokens(self, user_id: str) -> list[AuthToken]:
        """Return the user's tokens not past ``retain_until``, oldest first."""
        return self._list_user_tokens(validate.identifier(user_id, "user_id"))

    def delete_user_tokens(self, user_id: str) -> int:
        """Delete every token of a user; return how many."""
        return self._delete_user_tokens(validate.identifier(user_id, "user_id"))

    # Sessions -----------------------------------------------------------------------------

    def store_session(self, session: SessionData) -> None:
        """Insert or replace a session."""
        self._store_session(validate.session(session))

    def get_session(self, session_id: str) -> SessionData | None:
        """Return the session, or None if unknown or expired."""
        return self._get_session(validate.identifier(session_id, "session_id"))

    def touch_session(
        self, session_id: str, *, at: datetime, expires_at: datetime | None = None
    ) -> bool:
        """Set ``last_accessed`` (and, if given, a new expiry); False if gone or expired."""
        return self._touch_session(
            validate.identifier(session_id, "session_id"),
            at=validate.aware(at, "at"),
            expires_at=validate.optional_aware(expires_at, "expires_at"),
        )

    def delete_session(self, session_id: str) -> bool:
        """Delete a session; return whether it existed."""
        return self._delete_session(validate.identifier(session_id, "session_id"))

    def list_user_sessions(self, user_id: str) -> list[SessionData]:
        """Return the user's unexpired sessions, oldest first."""
        return self._list_user_sessions(validate.identifier(user_id, "user_id"))

    def delete_user_sessions(self, user_id: str) -> int:
        """Delete every session of a user; return how many."""
        return self._delete_user_sessions(validate.identifier(user_id, "user_id"))

    def count_active_sessions(self) -> int:
        """Return the number of unexpired sessions."""
        raise _abstract("count_active_sessions")

    # Key-value ----------------------------------------------------------------------------

    def kv_set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        """Store ``value`` (bytes) under ``key``; without ``ttl`` (a positive timedelta) it
        persists."""
        self._kv_set(validate.identifier(key, "key"), validate.kv_value(value), validate.ttl(ttl))

    def kv_get(self, key: str) -> bytes | None:
        """Return the value, or None if unknown or expired."""
        return self._kv_get(validate.identifier(key, "key"))

    def kv_delete(self, key: str) -> bool:
        """Delete a key; return whether it existed."""
        return self._kv_delete(validate.identifier(key, "key"))

    def kv_incr(self, key: str, ttl: timedelta | None = None) -> int:
        """Atomically add one to an integer counter and return the new value.

        A missing or expired counter starts at 1 and gets ``ttl``; incrementing keeps the
        expiry it has (a fixed window, as lockout counting needs). A stored value that is not
        an integer in canonical form (see :func:`django_authfw.validate.counter`) raises
        :class:`InvalidInput` and is left as it is.
        """
        return self._kv_incr(validate.identifier(key, "key"), validate.ttl(ttl))

    # Audit log ----------------------------------------------------------------------------

    def append_audit(self, event: AuditEvent) -> None:
        """Append one audit event."""
        self._append_audit(validate.event(event))

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
        filters = validate.audit_filters(user_id, action, outcome, since, until)
        return self._query_audit(
            **filters,
            limit=validate.count(limit, "limit"),
            offset=validate.count(offset, "offset"),
        )

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
        return self._count_audit(**validate.audit_filters(user_id, action, outcome, since, until))

    def delete_audit_before(self, cutoff: datetime) -> int:
        """Delete events created before ``cutoff``; return how many."""
        return self._delete_audit_before(validate.aware(cutoff, "cutoff"))

    # Maintenance --------------------------------------------------------------------------

    def cleanup_expired_tokens(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        """Remove tokens past ``retain_until`` in batches; return how many (would be) removed."""
        return self._cleanup_expired_tokens(
            batch_size=validate.count(batch_size, "batch_size", minimum=1), dry_run=bool(dry_run)
        )

    def cleanup_expired_sessions(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        """Remove expired sessions in batches; return how many (would be) removed."""
        return self._cleanup_expired_sessions(
            batch_size=validate.count(batch_size, "batch_size", minimum=1), dry_run=bool(dry_run)
        )

    def cleanup_expired_kv(self, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        """Remove expired key-value entries in batches; return how many (would be) removed."""
        return self._cleanup_expired_kv(
            batch_size=validate.count(batch_size, "batch_size", minimum=1), dry_run=bool(dry_run)
        )

    def cleanup_expired(self, *, batch_size: int = 1000, dry_run: bool = False) -> CleanupCounts:
        """Remove every expired record; return the counts per kind."""
        return {
            "tokens": self.cleanup_expired_tokens(batch_size=batch_size, dry_run=dry_run),
            "sessions": self.cleanup_expired_sessions(batch_size=batch_size, dry_run=dry_run),
            "kv": self.cleanup_expired_kv(batch_size=batch_size, dry_run=dry_run),
        }

    def statistics(self) -> StorageStatistics:
        """Counts and sizes, under the documented key names (see :class:`StorageStatistics`)."""
        raise _abstract("statistics")

    def flush(self) -> None:
        """Delete every record this storage holds (tests, ``authfw_restore --replace``)."""
        raise _abstract("flush")

    def close(self) -> None:
        """Release connections and stop background work; the storage may not be used after."""

    # Batched iteration and bulk import (migration, backup) -------------------------------

    def iter_tokens(self, *, batch_size: int = 1000) -> Iterator[list[AuthToken]]:
        """Yield every stored token in batches, including revoked and expired ones."""
        return self._iter_tokens(batch_size=validate.count(batch_size, "batch_size", minimum=1))

    def iter_sessions(self, *, batch_size: int = 1000) -> Iterator[list[SessionData]]:
        """Yield every stored session in batches."""
        return self._iter_sessions(batch_size=validate.count(batch_size, "batch_size", minimum=1))

    def iter_kv(self, *, batch_size: int = 1000) -> Iterator[list[KVEntry]]:
        """Yield every stored key-value entry in batches."""
        return self._iter_kv(batch_size=validate.count(batch_size, "batch_size", minimum=1))

    def iter_audit(self, *, batch_size: int = 1000) -> Iterator[list[AuditEvent]]:
        """Yield every audit event in batches, oldest first."""
        return self._iter_audit(batch_size=validate.count(batch_size, "batch_size", minimum=1))

    def import_tokens(self, tokens: Iterable[AuthToken]) -> int:
        """Upsert tokens by ``token_id`` (indexes included); return how many were written.

        Every record is checked before any is written: one bad record writes none.
        """
        return self._import_tokens([validate.token(token) for token in tokens])

    def import_sessions(self, sessions: Iterable[SessionData]) -> int:
        """Upsert sessions by ``session_id``; return how many were written."""
        return self._import_sessions([validate.session(session) for session in sessions])

    def import_kv(self, entries: Iterable[KVEntry]) -> int:
        """Upsert key-value entries by ``key``; return how many were written."""
        return self._import_kv([validate.kv_entry(entry) for entry in entries])

    def import_audit(self, events: Iterable[AuditEvent]) -> int:
        """Insert audit events whose ``event_id`` is not stored yet; return how many."""
        return self._import_audit([validate.event(event) for event in events])

    def create_backup(self, path: str | Path) -> dict[str, int]:
        """Write every record to a backup file at ``path``; return counts per kind.

        The file format belongs to :mod:`django_authfw.backup`, which registers its writer
        here when imported (the app's ``AppConfig.ready()`` imports it); see
        :func:`register_backup_writer`.
        """
        if _backup_writer is None:
            raise ImproperlyConfigured(
                "create_backup() has no backup writer: add 'django_authfw' to INSTALLED_APPS "
                "(its AppConfig.ready() imports django_authfw.backup, which registers one), or "
                "import django_authfw.backup first."
            )
        return _backup_writer(self, path)

    # Engine methods: what a backend writes -------------------------------------------------
    #
    # Each public method above checks its arguments with django_authfw.validate and calls the
    # method of the same name with a leading underscore, which a backend provides and which
    # trusts its arguments (as Django's Storage.save() calls _save()). The docstrings of the
    # public methods say what each must do.

    def _store_token(self, token: AuthToken) -> None:
        raise _abstract("_store_token")

    def _get_token(self, token_id: str) -> AuthToken | None:
        raise _abstract("_get_token")

    def _get_token_by_access(self, access_digest: str) -> AuthToken | None:
        raise _abstract("_get_token_by_access")

    def _get_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        raise _abstract("_get_token_by_refresh")

    def _update_token(self, token: AuthToken) -> bool:
        raise _abstract("_update_token")

    def _revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None) -> bool:
        raise _abstract("_revoke_token")

    def _revoke_user_tokens(self, user_id: str, *, at: datetime, family_id: str | None) -> int:
        raise _abstract("_revoke_user_tokens")

    def _delete_token(self, token_id: str) -> bool:
        raise _abstract("_delete_token")

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        raise _abstract("_list_user_tokens")

    def _delete_user_tokens(self, user_id: str) -> int:
        raise _abstract("_delete_user_tokens")

    def _store_session(self, session: SessionData) -> None:
        raise _abstract("_store_session")

    def _get_session(self, session_id: str) -> SessionData | None:
        raise _abstract("_get_session")

    def _touch_session(self, session_id: str, *, at: datetime, expires_at: datetime | None) -> bool:
        raise _abstract("_touch_session")

    def _delete_session(self, session_id: str) -> bool:
        raise _abstract("_delete_session")

    def _list_user_sessions(self, user_id: str) -> list[SessionData]:
        raise _abstract("_list_user_sessions")

    def _delete_user_sessions(self, user_id: str) -> int:
        raise _abstract("_delete_user_sessions")

    def _kv_set(self, key: str, value: bytes, ttl: timedelta | None) -> None:
        raise _abstract("_kv_set")

    def _kv_get(self, key: str) -> bytes | None:
        raise _abstract("_kv_get")

    def _kv_delete(self, key: str) -> bool:
        raise _abstract("_kv_delete")

    def _kv_incr(self, key: str, ttl: timedelta | None) -> int:
        raise _abstract("_kv_incr")

    def _append_audit(self, event: AuditEvent) -> None:
        raise _abstract("_append_audit")

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
        raise _abstract("_query_audit")

    def _count_audit(
        self,
        *,
        user_id: str | None,
        action: str | None,
        outcome: bool | None,
        since: datetime | None,
        until: datetime | None,
    ) -> int:
        raise _abstract("_count_audit")

    def _delete_audit_before(self, cutoff: datetime) -> int:
        raise _abstract("_delete_audit_before")

    def _cleanup_expired_tokens(self, *, batch_size: int, dry_run: bool) -> int:
        raise _abstract("_cleanup_expired_tokens")

    def _cleanup_expired_sessions(self, *, batch_size: int, dry_run: bool) -> int:
        raise _abstract("_cleanup_expired_sessions")

    def _cleanup_expired_kv(self, *, batch_size: int, dry_run: bool) -> int:
        raise _abstract("_cleanup_expired_kv")

    def _iter_tokens(self, *, batch_size: int) -> Iterator[list[AuthToken]]:
        raise _abstract("_iter_tokens")

    def _iter_sessions(self, *, batch_size: int) -> Iterator[list[SessionData]]:
        raise _abstract("_iter_sessions")

    def _iter_kv(self, *, batch_size: int) -> Iterator[list[KVEntry]]:
        raise _abstract("_iter_kv")

    def _iter_audit(self, *, batch_size: int) -> Iterator[list[AuditEvent]]:
        raise _abstract("_iter_audit")

    def _import_tokens(self, tokens: list[AuthToken]) -> int:
        raise _abstract("_import_tokens")

    def _import_sessions(self, sessions: list[SessionData]) -> int:
        raise _abstract("_import_sessions")

    def _import_kv(self, entries: list[KVEntry]) -> int:
        raise _abstract("_import_kv")

    def _import_audit(self, events: list[AuditEvent]) -> int:
        raise _abstract("_import_audit")

    # Batch reads (migration's ``missing_only`` and ``verify``) --------------------------
    #
    # Internal, with defaults that loop over the public single-record reads (so a backend
    # written against either level works); the shipped backends answer a whole batch in one
    # or a few round trips. The ids are trusted (they come from records the contract already
    # checked). Each returns only what the single read would: live records, by id.

    def _get_tokens(self, token_ids: Iterable[str]) -> dict[str, AuthToken]:
        """The live tokens of ``token_ids``, by id (missing ids left out)."""
        found = {}
        for token_id in token_ids:
            token = self.get_token(token_id)
            if token is not None:
                found[token_id] = token
        return found

    def _get_sessions(self, session_ids: Iterable[str]) -> dict[str, SessionData]:
        """The live sessions of ``session_ids``, by id (missing ids left out)."""
        found = {}
        for session_id in session_ids:
            session = self.get_session(session_id)
            if session is not None:
                found[session_id] = session
        return found

    def _kv_entries(self, keys: Iterable[str]) -> dict[str, KVEntry] | None:
        """The live key-value entries of ``keys`` (value and expiry), by key; or None when the
        backend cannot read expiries by key (the caller then reads values with ``kv_get`` and
        expiries through ``iter_kv``). ``created_at`` may be the time of the read."""
        return None

    # Async twins (run the sync method in a worker thread, as Django's cache base does) ----
    async def astore_token(self, token: AuthToken) -> None:
        return await _in_thread(self.store_token, token)

    async def aget_token(self, token_id: str) -> AuthToken | None:
        return await _in_thread(self.get_token, token_id)

    async def aget_token_by_access(self, access_digest: str) -> AuthToken | None:
        return await _in_thread(self.get_token_by_access, access_digest)

    async def alookup_access_with_user(self, access_digest: str) -> tuple[AuthToken | None, Any]:
        """Async twin of :meth:`lookup_access_with_user`."""
        return await self.aget_token_by_access(access_digest), NOT_LOADED

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
