"""The four record kinds as migration and backup see them, through the storage contract only.

Each :class:`RecordKind` knows how to read its records from any
:class:`~django_authfw.storage.AuthStorage` in batches, how to write them back with the upserting
``import_*`` methods, how to name one record, and when one is past its life. Keeping that in one
table means migration and backup cannot disagree about what "every record" is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .exceptions import StorageError
from .records import AuditEvent, AuthToken, KVEntry, SessionData
from .storage import backend_path
from .storage.base import AuthStorage
from .wording import counted


def _token_expired(record: AuthToken, now: datetime) -> bool:
    # A token stays readable until its refresh expiry (reuse detection), so that is its end.
    return record.retain_until <= now


def _never(record: Any, now: datetime) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class RecordKind:
    """One kind of record: tokens, sessions, key-value entries or audit events."""

    name: str
    """Plural name, used by ``--only``, counts and reports: tokens, sessions, kv, audit."""
    record_type: type[Any]
    line_kind: str
    """The ``kind`` of its lines in a backup file: token, session, kv, audit."""
    label: str
    """Human name for output: "tokens", "sessions", "key-value entries", "audit events"."""
    singular: str
    """The same for one record: "token", "session", "key-value entry", "audit event"."""
    iterate: Callable[[AuthStorage, int], Iterator[list[Any]]]
    write: Callable[[AuthStorage, list[Any]], int]
    record_id: Callable[[Any], str]
    is_expired: Callable[[Any, datetime], bool]
    has_user: bool
    """Whether its records name a user (``user_id``) that a database storage must know."""


TOKENS = RecordKind(
    name="tokens",
    record_type=AuthToken,
    line_kind="token",
    label="tokens",
    singular="token",
    iterate=lambda storage, size: storage.iter_tokens(batch_size=size),
    write=lambda storage, records: storage.import_tokens(records),
    record_id=lambda record: record.token_id,
    is_expired=_token_expired,
    has_user=True,
)
SESSIONS = RecordKind(
    name="sessions",
    record_type=SessionData,
    line_kind="session",
    label="sessions",
    singular="session",
    iterate=lambda storage, size: storage.iter_sessions(batch_size=size),
    write=lambda storage, records: storage.import_sessions(records),
    record_id=lambda record: record.session_id,
    is_expired=lambda record, now: record.is_expired(now),
    has_user=True,
)
KV = RecordKind(
    name="kv",
    record_type=KVEntry,
    line_kind="kv",
    label="key-value entries",
    singular="key-value entry",
    iterate=lambda storage, size: storage.iter_kv(batch_size=size),
    write=lambda storage, records: storage.import_kv(records),
    record_id=lambda record: record.key,
    is_expired=lambda record, now: record.is_expired(now),
    has_user=False,
)
AUDIT = RecordKind(
    name="audit",
    record_type=AuditEvent,
    line_kind="audit",
    label="audit events",
    singular="audit event",
    iterate=lambda storage, size: storage.iter_audit(batch_size=size),
    write=lambda storage, records: storage.import_audit(records),
    record_id=lambda record: record.event_id,
    is_expired=_never,
    has_user=False,
)

KINDS: tuple[RecordKind, ...] = (TOKENS, SESSIONS, KV, AUDIT)
"""Every kind, in the order migration and backup handle them."""

BY_NAME: dict[str, RecordKind] = {kind.name: kind for kind in KINDS}


def counted_records(name: str, count: int) -> str:
    """``"1 session"``, ``"2 key-value entries"``: ``count`` records of the kind ``name``."""
    kind = BY_NAME[name]
    return counted(count, kind.singular, kind.label)


BY_LINE_KIND: dict[str, RecordKind] = {kind.line_kind: kind for kind in KINDS}


@dataclass(slots=True)
class WriteResult:
    """What :func:`write_records` did with one batch."""

    written: int = 0
    """What the storage's ``import_*`` reported writing."""
    orphans: int = 0
    """Records left out because they name users the storage does not know."""
    imported: list[Any] = field(default_factory=list)
    """The records handed to the storage's ``import_*`` (all of them but the orphans)."""


def write_records(kind: RecordKind, storage: AuthStorage, records: list[Any]) -> WriteResult:
    """Import ``records`` into ``storage``, leaving out those of users it does not know.

    A storage that keeps a foreign key to the user model (``DatabaseStorage``) refuses a whole
    import naming a missing user with a :class:`StorageError` carrying ``missing_user_ids`` and
    writes nothing of it; such records cannot be held there, so they are dropped and the rest
    imported again. Any other error propagates.
    """
    result = WriteResult()
    pending = records
    while pending:
        try:
            result.written += kind.write(storage, pending)
            result.imported = pending
            return result
        except StorageError as exc:
            missing = getattr(exc, "missing_user_ids", None)
            if not kind.has_user or not missing:
                raise
            gone = set(missing)
            kept = [record for record in pending if record.user_id not in gone]
            if len(kept) == len(pending):
                raise  # it names users this batch does not hold: not ours to fix
            result.orphans += len(pending) - len(kept)
            pending = kept
    return result


def close_iterator(batches: Iterator[Any]) -> None:
    """Close a batch generator left early (it may hold a server-side cursor)."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def storage_is_empty(storage: AuthStorage) -> bool:
    """Whether ``storage`` holds no record of any kind (reads at most one batch of each)."""
    for kind in KINDS:
        # Batches of 1,000: on Redis a batch of 1 is SCAN COUNT 1, a round trip per key or so
        # of the whole (maybe shared) keyspace until the first record of ours turns up.
        batches = kind.iterate(storage, 1000)
        try:
            if any(batch for batch in batches):
                return False
        finally:
            close_iterator(batches)
    return True


def storage_label(storage: AuthStorage) -> str:
    """How output names a storage: its alias, or its class for one built in code."""
    if storage.alias is not None:
        return storage.alias
    return backend_path(storage)
