"""Copy every record from one storage to another: :class:`StorageMigration`.

::

    from django_authfw.migration import StorageMigration

    migration = StorageMigration("default", "redis", batch_size=1000, verify=True)
    summary = migration.migrate_all()          # or migrate_tokens(), migrate_sessions(), ...
    assert summary.ok, summary.mismatches

Everything goes through the :class:`~django_authfw.storage.AuthStorage` contract: records are
read with the source's ``iter_*`` batches and written with the target's ``import_*`` upserts. A
second run therefore adds nothing, and a run interrupted half-way (a crash, Ctrl-C, a storage
failure) finishes the job when it is simply run again. ``docs/operations.md`` describes how to
move a live site from one backend to another with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .conf import conf
from .exceptions import InvalidInput, StorageError
from .records import AuditEvent, AuthToken, KVEntry, SessionData, replace, utcnow
from .storage.base import AuthStorage
from .transfer import (
    AUDIT,
    BY_NAME,
    KINDS,
    KV,
    SESSIONS,
    TOKENS,
    RecordKind,
    storage_label,
    write_records,
)

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``on_progress(kind, records_read_so_far, total_or_None)``, called after every batch."""

MAX_LISTED_MISMATCHES = 1000
"""A report lists at most this many mismatches; ``mismatch_count`` counts all of them."""

KV_EXPIRY_TOLERANCE = timedelta(seconds=1)
"""How far a key-value entry's expiry read back may differ from the one written.

A storage that keeps key-value expiries as native TTLs (Redis) reports them back as "now +
remaining TTL", which moves by the round-trip time; every other field is compared exactly.
"""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One record that did not read back from the target as it was written.

    Only field names are kept, never values: session data and key-value values may be
    sensitive, and a report is printed.
    """

    kind: str
    record_id: str
    problem: str
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.kind} {self.record_id!r}: {self.problem}{detail}"


@dataclass(slots=True)
class MigrationReport:
    """What migrating one kind of record did.

    ``read`` records came from the source; ``skipped_expired`` of them were already past their
    life; ``skipped_orphans`` named a user the target's database does not have (a database
    storage keeps a foreign key to the user); ``copied`` is what the target reported writing
    (with ``dry_run``: what would be written). ``skipped_by_target`` is the rest: audit events
    the target already held, and anything else the target chose not to write. With ``verify``,
    ``verified`` records read back identical and ``mismatches`` lists the others;
    ``expired_before_verify`` ended their life between copy and read-back (not a mismatch).

    With ``missing_only``: ``skipped_present`` records the target already held were left as
    they are, except that ``revocations_carried`` of them were revoked in the target because
    they are revoked in the source; ``skipped_older`` missing records were created before
    ``since`` and not copied. ``started_at`` and ``finished_at`` bracket the run.
    """

    kind: str
    dry_run: bool = False
    read: int = 0
    copied: int = 0
    skipped_expired: int = 0
    skipped_orphans: int = 0
    skipped_by_target: int = 0
    verified: int = 0
    expired_before_verify: int = 0
    skipped_present: int = 0
    skipped_older: int = 0
    revocations_carried: int = 0
    mismatch_count: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when verification (if any) found no mismatch."""
        return self.mismatch_count == 0

    def add_mismatch(self, mismatch: Mismatch) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_LISTED_MISMATCHES:
            self.mismatches.append(mismatch)


@dataclass(slots=True)
class MigrationSummary:
    """The reports of :meth:`StorageMigration.migrate_all`, one per kind migrated."""

    reports: dict[str, MigrationReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.reports.values())

    @property
    def copied(self) -> int:
        return sum(report.copied for report in self.reports.values())

    @property
    def mismatch_count(self) -> int:
        return sum(report.mismatch_count for report in self.reports.values())

    @property
    def mismatches(self) -> list[Mismatch]:
        return [m for report in self.reports.values() for m in report.mismatches]

    def __getitem__(self, kind: str) -> MigrationReport:
        return self.reports[kind]


def _resolve(storage: AuthStorage | str, role: str) -> AuthStorage:
    if isinstance(storage, AuthStorage):
        return storage
    if isinstance(storage, str):
        from .storage import get_storage

        return get_storage(storage)
    raise InvalidInput(
        f"The migration {role} must be an AuthStorage or an alias of AUTHFW['STORAGES'], "
        f"not {type(storage).__name__}."
    )


def parse_kinds(only: str | Iterable[str] | None) -> list[str]:
    """Turn ``"tokens,kv"`` or ``["tokens", "kv"]`` into kind names in migration order."""
    if only is None:
        return [kind.name for kind in KINDS]
    names = only.split(",") if isinstance(only, str) else list(only)
    wanted = {name.strip() for name in names if name.strip()}
    unknown = sorted(wanted - BY_NAME.keys())
    if unknown or not wanted:
        raise InvalidInput(
            f"Unknown record kinds {unknown}; choose from tokens, sessions, kv, audit."
            if unknown
            else "Name at least one record kind: tokens, sessions, kv, audit."
        )
    return [kind.name for kind in KINDS if kind.name in wanted]


class StorageMigration:
    """Copies tokens, sessions, key-value entries and audit events between two storages.

    ``source`` and ``target`` are :class:`AuthStorage` instances or aliases of
    ``AUTHFW["STORAGES"]``. Records are read in batches of ``batch_size`` and upserted into the
    target, so a migration can be repeated and resumed. Records already past their life are
    not copied (they are counted as ``skipped_expired``).

    ``preserve_ttl=True`` (the default) keeps every expiry instant exactly. With
    ``preserve_ttl=False`` each record still alive gets the lifetime the ``AUTHFW`` settings
    give a new one, counted from the moment of the migration: a token's access expiry becomes
    now + ``ACCESS_TOKEN_TTL`` and its refresh expiry now + ``REFRESH_TOKEN_TTL``, a session's
    expiry now + ``SESSION_TTL``. An expiry already past stays as it is (a token whose access
    lifetime has ended is not revived; it is kept for refresh-reuse detection), a session or
    key-value entry without expiry stays without, and key-value entries keep their expiry (no
    setting governs them).

    ``verify=True`` reads every copied batch back from the target and compares it field by
    field (tokens and sessions by id with the target's batch reads, ``_get_tokens`` and
    ``_get_sessions``; key-value entries with ``_kv_entries``, or on a target without it by
    ``kv_get`` and their expiry in one pass over ``iter_kv`` at the end; audit events by
    ``event_id`` through ``query_audit``); differences are listed in the report's
    ``mismatches``. ``missing_only`` asks the target about a whole batch at once the same way.

    Memory: a migration holds one batch of records at a time. The one exception is verifying
    key-value entries into a target without ``_kv_entries`` (the database storage): their keys
    and expiries are kept until the final ``iter_kv`` pass (about 100 bytes each; key-value
    entries are counters and flags, few next to tokens).

    ``dry_run=True`` reads the source and counts what would be copied, writing nothing.

    ``missing_only=True`` is the catch-up pass after a live site has been switched to the
    target (see "Moving to another backend" in ``docs/operations.md``): a record the target
    already holds is never overwritten (it may have changed there since the switch: a
    rotated or revoked token, a touched session), except that a token revoked in the source
    is revoked in the target too (revocation only ever goes one way). A record missing from
    the target is copied only if it was created at or after ``since`` (when given): an older
    one missing from the target was copied by the first pass and deleted since, and must not
    come back.

    ``on_progress(kind, read_so_far, total)`` is called after every batch (``total`` from the
    source's :meth:`~AuthStorage.statistics`, or None when the source cannot tell); an
    exception it raises stops the migration, which can then be run again.
    """

    def __init__(
        self,
        source: AuthStorage | str,
        target: AuthStorage | str,
        *,
        batch_size: int = 1000,
        verify: bool = False,
        preserve_ttl: bool = True,
        dry_run: bool = False,
        missing_only: bool = False,
        since: datetime | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("batch_size must be a positive integer.")
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise InvalidInput("since must be a timezone-aware datetime.")
        if since is not None and not missing_only:
            raise InvalidInput(
                "since only applies with missing_only=True: a full pass copies every record."
            )
        self.source = _resolve(source, "source")
        self.target = _resolve(target, "target")
        if self.source is self.target or (
            self.source.alias is not None and self.source.alias == self.target.alias
        ):
            raise InvalidInput(
                f"The source and target are the same storage ({storage_label(self.source)!r}); "
                "migrate between two different storages."
            )
        self.batch_size = batch_size
        self.verify = verify
        self.preserve_ttl = preserve_ttl
        self.dry_run = dry_run
        self.missing_only = missing_only
        self.since = since
        self.on_progress = on_progress
        self.failed_storage: AuthStorage | None = None
        """After a :class:`StorageError` escaped a ``migrate_*`` call: the storage that raised."""
        self._cached_totals: dict[str, int] | None = None

    def __repr__(self) -> str:
        return (
            f"<StorageMigration {storage_label(self.source)!r} -> "
            f"{storage_label(self.target)!r} batch_size={self.batch_size}>"
        )

    # Public API -------------------------------------------------------------------------------

    def migrate_all(self, only: str | Iterable[str] | None = None) -> MigrationSummary:
        """Migrate every kind (or the kinds named in ``only``) in order; return their reports."""
        summary = MigrationSummary()
        for name in parse_kinds(only):
            kind = BY_NAME[name]
            summary.reports[name] = self._migrate(kind, self._total(kind))
        return summary

    def migrate_tokens(self) -> MigrationReport:
        """Copy every token (revoked and access-expired ones too, until ``retain_until``)."""
        return self._migrate(TOKENS, self._total(TOKENS))

    def migrate_sessions(self) -> MigrationReport:
        """Copy every unexpired session."""
        return self._migrate(SESSIONS, self._total(SESSIONS))

    def migrate_kv_data(self) -> MigrationReport:
        """Copy every unexpired key-value entry."""
        return self._migrate(KV, self._total(KV))

    def migrate_audit(self) -> MigrationReport:
        """Copy the audit log; events the target already holds (by ``event_id``) are kept once."""
        return self._migrate(AUDIT, self._total(AUDIT))

    # Progress totals --------------------------------------------------------------------------

    def _totals(self) -> dict[str, int]:
        # Only for the progress bar, so a source that cannot count simply gets no total. Asked
        # once per migration: counting a large table is not free.
        if self._cached_totals is None:
            try:
                stats = self.source.statistics()
            except NotImplementedError:
                self._cached_totals = {}
            else:
                self._cached_totals = {
                    "tokens": stats["total_tokens"],
                    "sessions": stats["total_sessions"],
                    "kv": stats["kv_entries"],
                    "audit": stats["audit_events"],
                }
        return self._cached_totals

    def _total(self, kind: RecordKind) -> int | None:
        if self.on_progress is None:
            return None
        return self._totals().get(kind.name)

    # The copy loop ----------------------------------------------------------------------------

    def _migrate(self, kind: RecordKind, total: int | None) -> MigrationReport:
        started = time.monotonic()
        report = MigrationReport(kind=kind.name, dry_run=self.dry_run, started_at=utcnow())
        kv_expiries: dict[str, datetime | None] = {}
        self.failed_storage = None
        at = self.source  # which storage the next call goes to, to name it if it fails
        try:
            for batch in kind.iterate(self.source, self.batch_size):
                at = self.target
                report.read += len(batch)
                now = utcnow()
                live = [record for record in batch if not kind.is_expired(record, now)]
                report.skipped_expired += len(batch) - len(live)
                if self.missing_only and live:
                    live = self._missing(kind, live, report)
                if not self.preserve_ttl:
                    live = [self._renew(record, now) for record in live]
                if self.dry_run:
                    report.copied += len(live)
                elif live:
                    result = write_records(kind, self.target, live)
                    report.copied += result.written
                    report.skipped_orphans += result.orphans
                    report.skipped_by_target += len(result.imported) - result.written
                    if self.verify:
                        self._verify_batch(kind, result.imported, report, kv_expiries)
                if self.on_progress is not None:
                    self.on_progress(kind.name, report.read, total)
                at = self.source
            at = self.target
            if self.verify and kv_expiries:
                self._verify_kv_expiries(kv_expiries, report)
        except StorageError:
            self.failed_storage = at
            raise
        report.finished_at = utcnow()
        report.seconds = time.monotonic() - started
        return report

    def _missing(self, kind: RecordKind, records: list[Any], report: MigrationReport) -> list[Any]:
        """The catch-up rules of ``missing_only``: which records to copy, and revocations."""
        if kind is AUDIT:
            # Importing audit events never overwrites: only the ``since`` filter applies.
            return [event for event in records if self._new_enough(event, report)]
        missing = []
        held = self._read_many(kind, [kind.record_id(record) for record in records])
        for record in records:
            present = held.get(kind.record_id(record))
            if present is None:
                if self._new_enough(record, report):
                    missing.append(record)
                continue
            report.skipped_present += 1
            if (
                kind is TOKENS
                and record.revoked_at is not None
                and present.revoked_at is None
                and (
                    self.dry_run
                    or self.target.revoke_token(
                        record.token_id, at=record.revoked_at, replaced_by=record.replaced_by
                    )
                )
            ):
                report.revocations_carried += 1
        return missing

    def _new_enough(self, record: Any, report: MigrationReport) -> bool:
        if self.since is None or record.created_at >= self.since:
            return True
        report.skipped_older += 1
        return False

    def _read_many(self, kind: RecordKind, record_ids: list[str]) -> dict[str, Any]:
        """The target's copies of a batch, by id (for key-value entries: the values), read in
        one go with the storage's batch reads."""
        if kind is TOKENS:
            return self.target._get_tokens(record_ids)
        if kind is SESSIONS:
            return self.target._get_sessions(record_ids)
        entries = self.target._kv_entries(record_ids)
        if entries is not None:
            return {key: entry.value for key, entry in entries.items()}
        values = {key: self.target.kv_get(key) for key in record_ids}
        return {key: value for key, value in values.items() if value is not None}

    def _renew(self, record: Any, now: datetime) -> Any:
        """Give a live record the lifetime a new one gets (``preserve_ttl=False``)."""
        if isinstance(record, AuthToken):
            changes: dict[str, Any] = {}
            if record.expires_at > now:
                changes["expires_at"] = now + conf.ACCESS_TOKEN_TTL
            if record.refresh_expires_at is not None and record.refresh_expires_at > now:
                changes["refresh_expires_at"] = now + conf.REFRESH_TOKEN_TTL
            return replace(record, **changes) if changes else record
        if isinstance(record, SessionData) and record.expires_at is not None:
            return replace(record, expires_at=now + conf.SESSION_TTL)
        return record

    # Verification -----------------------------------------------------------------------------

    def _verify_batch(
        self,
        kind: RecordKind,
        written: Sequence[Any],
        report: MigrationReport,
        kv_expiries: dict[str, datetime | None],
    ) -> None:
        if kind is AUDIT:
            self._verify_audit(written, report)
            return
        ids = [kind.record_id(record) for record in written]
        if kind is KV:
            entries = self.target._kv_entries(ids)
            if entries is not None:
                self._verify_kv_batch(written, entries, report)
                return
        held = self._read_many(kind, ids)
        for record, record_id in zip(written, ids, strict=True):
            found = held.get(record_id)
            if kind is KV:
                # The value now; the expiry in one pass over iter_kv at the end (a target
                # that cannot read expiries by key: see _kv_entries).
                found = None if found is None else replace(record, value=found)
                kv_expiries[record_id] = record.expires_at
            self._compare(kind, record, found, report, compare=("value",) if kind is KV else None)

    def _verify_kv_batch(
        self, written: Sequence[KVEntry], held: dict[str, KVEntry], report: MigrationReport
    ) -> None:
        """Compare key-value entries with the target's, value and expiry, batch by batch."""
        for record in written:
            found = held.get(record.key)
            if found is None:
                self._compare(KV, record, None, report)
                continue
            differing = tuple(
                name
                for name, same in (
                    ("value", found.value == record.value),
                    ("expires_at", _expiry_close(record.expires_at, found.expires_at)),
                )
                if not same
            )
            if differing:
                report.add_mismatch(Mismatch("kv", record.key, "differs in the target", differing))
            else:
                report.verified += 1

    def _verify_audit(self, written: Sequence[AuditEvent], report: MigrationReport) -> None:
        # query_audit has no event_id filter; the batch's time range (oldest first) holds all of
        # them, plus whatever else the target already had then, so ask for exactly that many.
        since = min(event.created_at for event in written)
        until = max(event.created_at for event in written) + timedelta(microseconds=1)
        present = self.target.count_audit(since=since, until=until)
        found = {
            event.event_id: event
            for event in self.target.query_audit(since=since, until=until, limit=max(present, 1))
        }
        for event in written:
            self._compare(AUDIT, event, found.get(event.event_id), report)

    def _verify_kv_expiries(
        self, expected: dict[str, datetime | None], report: MigrationReport
    ) -> None:
        for batch in self.target.iter_kv(batch_size=self.batch_size):
            for entry in batch:
                if entry.key not in expected:
                    continue
                want = expected.pop(entry.key)
                if not _expiry_close(want, entry.expires_at):
                    report.verified -= 1  # counted as verified when its value matched
                    report.add_mismatch(
                        Mismatch("kv", entry.key, "differs in the target", ("expires_at",))
                    )
        now = utcnow()
        for key, want in expected.items():
            # Its value read back, but iter_kv no longer lists it: it expired meanwhile, or
            # the target lost it.
            report.verified -= 1
            if want is not None and want <= now:
                report.expired_before_verify += 1
            else:
                report.add_mismatch(Mismatch("kv", key, "missing from the target's iter_kv"))

    def _compare(
        self,
        kind: RecordKind,
        expected: Any,
        found: Any,
        report: MigrationReport,
        compare: tuple[str, ...] | None = None,
    ) -> None:
        record_id = kind.record_id(expected)
        if found is None:
            if kind.is_expired(expected, utcnow()):
                report.expired_before_verify += 1
            else:
                report.add_mismatch(Mismatch(kind.name, record_id, "missing in the target"))
            return
        names = compare or _field_names(expected)
        differing = tuple(name for name in names if getattr(expected, name) != getattr(found, name))
        if differing:
            report.add_mismatch(Mismatch(kind.name, record_id, "differs in the target", differing))
        else:
            report.verified += 1


def _field_names(record: Any) -> tuple[str, ...]:
    return tuple(record.__dataclass_fields__)


def _expiry_close(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= KV_EXPIRY_TOLERANCE


__all__ = [
    "KV_EXPIRY_TOLERANCE",
    "MAX_LISTED_MISMATCHES",
    "MigrationReport",
    "MigrationSummary",
    "Mismatch",
    "ProgressCallback",
    "StorageMigration",
    "parse_kinds",
]
