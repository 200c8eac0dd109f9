"""Backup files: every record of a storage in one versioned, compressed, checksummed file.

The format (version 1) is documented in ``docs/operations.md``. In short: a gzip-compressed
UTF-8 text of JSON lines,

* line 1, the header: ``{"format": "django-authfw-backup", "version": 1, "created_at": ...,
  "source_backend": ..., "source_alias": ..., "generator": ...}``;
* one line per record: ``{"kind": "token" | "session" | "kv" | "audit", "record": {...}}``,
  every field of the record present, datetimes as ISO 8601 with offset, bytes as base64;
* the last line, the trailer: ``{"kind": "end", "counts": {...}, "sha256": ...}``, the
  SHA-256 of every byte before the trailer line (header and records, uncompressed).

Records hold token digests only, as the storages do, so a backup never contains a usable
token. :func:`restore_backup` reads the whole file and checks every line, the counts and the
digest before it writes anything: a corrupt, truncated or foreign file restores nothing.
Everything goes through the :class:`~django_authfw.storage.AuthStorage` contract, so a backup of
one backend restores into any other.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from .exceptions import InvalidInput
from .records import AuditEvent, AuthToken, KVEntry, SessionData, utcnow
from .storage.base import AuthStorage
from .transfer import (
    BY_LINE_KIND,
    KINDS,
    RecordKind,
    storage_is_empty,
    storage_label,
    write_records,
)

FORMAT = "django-authfw-backup"
VERSION = 1

COUNT_KEYS = tuple(kind.name for kind in KINDS)
"""Keys of the counts: tokens, sessions, kv, audit (records are written in this order)."""

# One JSON line can hold a large session or key-value value, but a "line" of gigabytes is a
# broken or hostile file, refused before it fills memory.
MAX_LINE_BYTES = 64 * 1024 * 1024

IfNotEmpty = Literal["error", "merge", "replace"]


class BackupError(InvalidInput):
    """A backup file is corrupt, truncated, foreign or from a newer format version.

    Raised before anything is written to the target storage.
    """


class TargetNotEmpty(InvalidInput):
    """``restore_backup`` was asked to restore into a storage that already holds records
    without saying whether to merge into them or replace them."""


# Field codecs -----------------------------------------------------------------------------------
# Each field of each record kind has a codec: how it is written to JSON and how it is read back
# and checked. Reading is strict (exact field set, exact types) so that a file from elsewhere
# cannot slip odd values into a storage.


@dataclass(frozen=True, slots=True)
class _Codec:
    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _fail(what: str) -> BackupError:
    return BackupError(what)


def _same(value: Any) -> Any:
    return value


def _dec_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"expected a string, got {type(value).__name__}")
    return value


def _dec_opt_str(value: Any) -> str | None:
    return None if value is None else _dec_str(value)


def _dec_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"expected true or false, got {type(value).__name__}")
    return value


def _enc_datetime(value: datetime) -> str:
    return value.isoformat()


def _dec_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _fail(f"expected an ISO 8601 datetime string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"{value!r} is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _fail(f"datetime {value!r} has no UTC offset")
    return parsed


def _enc_opt_datetime(value: datetime | None) -> str | None:
    return None if value is None else _enc_datetime(value)


def _dec_opt_datetime(value: Any) -> datetime | None:
    return None if value is None else _dec_datetime(value)


def _enc_bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _dec_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _fail(f"expected base64 text, got {type(value).__name__}")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _fail("value is not valid base64") from None


def _dec_str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail("expected a list of strings")
    return value


def _dec_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"expected a JSON object, got {type(value).__name__}")
    return value


def _dec_digest(value: Any) -> str:
    # A stored token is a SHA-256 hex digest; anything else (a raw token, say) is refused, so a
    # backup can never plant a usable secret in a storage.
    text = _dec_str(value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise _fail("expected a SHA-256 hex digest (64 lowercase hex characters)")
    return text


def _dec_opt_digest(value: Any) -> str | None:
    return None if value is None else _dec_digest(value)


STR = (_same, _dec_str)
OPT_STR = (_same, _dec_opt_str)
BOOL = (_same, _dec_bool)
DATETIME = (_enc_datetime, _dec_datetime)
OPT_DATETIME = (_enc_opt_datetime, _dec_opt_datetime)
BYTES = (_enc_bytes, _dec_bytes)
STR_LIST = (_same, _dec_str_list)
DICT = (_same, _dec_dict)
DIGEST = (_same, _dec_digest)
OPT_DIGEST = (_same, _dec_opt_digest)


def _schema(**fields: tuple[Callable[[Any], Any], Callable[[Any], Any]]) -> tuple[_Codec, ...]:
    return tuple(_Codec(name, enc, dec) for name, (enc, dec) in fields.items())


SCHEMAS: dict[str, tuple[type[Any], tuple[_Codec, ...]]] = {
    "token": (
        AuthToken,
        _schema(
            token_id=STR,
            user_id=STR,
            access_digest=DIGEST,
            expires_at=DATETIME,
            refresh_digest=OPT_DIGEST,
            refresh_expires_at=OPT_DATETIME,
            token_type=STR,
            family_id=STR,
            created_at=DATETIME,
            updated_at=DATETIME,
            revoked_at=OPT_DATETIME,
            replaced_by=OPT_STR,
            permissions=STR_LIST,
            roles=STR_LIST,
            metadata=DICT,
        ),
    ),
    "session": (
        SessionData,
        _schema(
            session_id=STR,
            user_id=STR,
            data=DICT,
            created_at=DATETIME,
            last_accessed=DATETIME,
            expires_at=OPT_DATETIME,
            ip_address=OPT_STR,
            user_agent=STR,
        ),
    ),
    "kv": (
        KVEntry,
        _schema(key=STR, value=BYTES, created_at=DATETIME, expires_at=OPT_DATETIME),
    ),
    "audit": (
        AuditEvent,
        _schema(
            action=STR,
            outcome=BOOL,
            user_id=OPT_STR,
            resource=OPT_STR,
            ip_address=OPT_STR,
            user_agent=STR,
            created_at=DATETIME,
            metadata=DICT,
            event_id=STR,
        ),
    ),
}


def encode_record(kind: str, record: Any) -> dict[str, Any]:
    """Return the JSON-ready form of one record of ``kind`` (every field present)."""
    _cls, codecs = SCHEMAS[kind]
    return {codec.name: codec.encode(getattr(record, codec.name)) for codec in codecs}


def decode_record(kind: str, data: Any) -> Any:
    """Rebuild a record of ``kind`` from its JSON form, checking every field strictly."""
    cls, codecs = SCHEMAS[kind]
    if not isinstance(data, dict):
        raise _fail(f"a {kind} record must be a JSON object")
    expected = {codec.name for codec in codecs}
    missing, unknown = expected - data.keys(), data.keys() - expected
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing fields {sorted(missing)}")
        if unknown:
            parts.append(f"unknown fields {sorted(unknown)}")
        raise _fail(f"a {kind} record has " + " and ".join(parts))
    values = {}
    for codec in codecs:
        try:
            values[codec.name] = codec.decode(data[codec.name])
        except BackupError as exc:
            raise _fail(f"field {kind}.{codec.name}: {exc}") from None
    return cls(**values)


# Writing ----------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _backend_name(storage: AuthStorage) -> str:
    cls = type(storage)
    return f"{cls.__module__}.{cls.__qualname__}"


def write_backup(
    storage: AuthStorage,
    path: str | Path,
    *,
    batch_size: int = 1000,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Write every record of ``storage`` to a backup file at ``path``; return counts per kind.

    The file is written to a temporary file next to ``path`` with mode 0600 and renamed over
    ``path`` only once complete, so a crash or a full disk never leaves a half backup under
    the final name. Records are read with the storage's batched iterators while traffic may
    continue: the backup is consistent per record, not a point-in-time snapshot.
    ``on_progress(kind, records_written_of_that_kind)`` is called after every batch.
    """
    if batch_size < 1:
        raise InvalidInput("batch_size must be at least 1.")
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InvalidInput(f"{target} is a directory; give the path of a backup file to write.")
    if not directory.is_dir():
        raise InvalidInput(f"Directory {directory} does not exist; create it first.")

    counts = dict.fromkeys(COUNT_KEYS, 0)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)  # holds digests and session data: owner only
        with (
            open(fd, "wb") as raw,
            gzip.GzipFile(filename=target.name, mode="wb", fileobj=raw, compresslevel=6) as out,
        ):

            def emit(line: bytes) -> None:
                digest.update(line)
                out.write(line)

            from . import __version__

            emit(
                _dumps(
                    {
                        "format": FORMAT,
                        "version": VERSION,
                        "created_at": utcnow().isoformat(),
                        "source_backend": _backend_name(storage),
                        "source_alias": storage.alias,
                        "generator": f"django-authfw {__version__}",
                    }
                )
            )
            for kind in KINDS:
                for batch in kind.iterate(storage, batch_size):
                    for record in batch:
                        line = {
                            "kind": kind.line_kind,
                            "record": encode_record(kind.line_kind, record),
                        }
                        emit(_dumps(line))
                    counts[kind.name] += len(batch)
                    if on_progress is not None:
                        on_progress(kind.name, counts[kind.name])
            out.write(_dumps({"kind": "end", "counts": counts, "sha256": digest.hexdigest()}))
            out.flush()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(directory)
    return counts


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# Reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a fully checked backup file holds: its header and the record counts per kind."""

    path: Path
    version: int
    created_at: datetime
    source_backend: str
    source_alias: str | None
    generator: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _read_lines(stream: IO[bytes], name: str) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line) of the decompressed file, mapping gzip errors to ours."""
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            number = 0
            while True:
                line = unzipped.readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                number += 1
                if len(line) > MAX_LINE_BYTES:
                    raise BackupError(
                        f"{name}: line {number} is longer than {MAX_LINE_BYTES} bytes; "
                        "the file is corrupt."
                    )
                yield number, line
    except gzip.BadGzipFile:
        raise BackupError(
            f"{name} is not a django-authfw backup (it is not gzip-compressed). "
            "Give a file written by authfw_backup."
        ) from None
    except EOFError:
        raise BackupError(
            f"{name} is truncated (the compressed data ends early). "
            "Restore from a complete copy of the backup."
        ) from None
    except (zlib.error, OSError) as exc:
        raise BackupError(
            f"{name} is corrupt ({exc}). Restore from an intact copy of the backup."
        ) from None


def _parse_json(line: bytes, number: int, name: str) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BackupError(
            f"{name}: line {number} is not valid JSON; the file is corrupt."
        ) from None


def _check_header(obj: Any, name: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise BackupError(
            f"{name} is not a django-authfw backup (its header does not name the "
            f"{FORMAT!r} format). Give a file written by authfw_backup."
        )
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BackupError(f"{name}: the header has no valid format version; the file is corrupt.")
    if version > VERSION:
        raise BackupError(
            f"{name} uses backup format version {version}, newer than this django-authfw reads "
            f"(version {VERSION}). Upgrade django-authfw to restore it."
        )
    try:
        created_at = _dec_datetime(obj.get("created_at"))
        source_backend = _dec_str(obj.get("source_backend"))
        source_alias = _dec_opt_str(obj.get("source_alias"))
        generator = _dec_str(obj.get("generator", ""))
    except BackupError as exc:
        raise BackupError(f"{name}: the header is invalid ({exc}); the file is corrupt.") from None
    return {
        "version": version,
        "created_at": created_at,
        "source_backend": source_backend,
        "source_alias": source_alias,
        "generator": generator,
    }


def _scan(stream: IO[bytes], name: str) -> BackupInfo:
    """Read the whole file once, checking every line, the counts and the checksum.

    Raises :class:`BackupError` on anything wrong; the checksum and counts are only known to
    be right at the end, which is why a restore scans the whole file before writing.
    """
    digest = hashlib.sha256()
    counts = dict.fromkeys(COUNT_KEYS, 0)
    header: dict[str, Any] | None = None
    trailer: dict[str, Any] | None = None
    position = 0  # records come in KINDS order, as write_backup writes them
    for number, line in _read_lines(stream, name):
        if trailer is not None:
            raise BackupError(f"{name}: data after the end marker (line {number}); corrupt file.")
        obj = _parse_json(line, number, name)
        if header is None:
            header = _check_header(obj, name)
            digest.update(line)
            continue
        if isinstance(obj, dict) and obj.get("kind") == "end":
            trailer = obj
            continue
        kind, _record = _record_line(obj, number, name)
        order = KINDS.index(kind)
        if order < position:
            raise BackupError(
                f"{name}: line {number}: a {kind.line_kind} record out of order; corrupt file."
            )
        position = order
        digest.update(line)
        counts[kind.name] += 1
    if header is None:
        raise BackupError(f"{name} is empty; it is not a django-authfw backup.")
    if trailer is None:
        raise BackupError(
            f"{name} is truncated (no end marker after {sum(counts.values())} records). "
            "Restore from a complete copy of the backup."
        )
    if trailer.get("sha256") != digest.hexdigest():
        raise BackupError(
            f"{name} is corrupt: its SHA-256 checksum does not match its content. "
            "Restore from an intact copy of the backup."
        )
    if trailer.get("counts") != counts:
        raise BackupError(
            f"{name} is corrupt: its end marker announces {trailer.get('counts')!r} records "
            f"but it holds {counts!r}."
        )
    return BackupInfo(path=Path(name), counts=counts, **header)


def _record_line(obj: Any, number: int, name: str) -> tuple[RecordKind, Any]:
    if not isinstance(obj, dict) or set(obj) != {"kind", "record"}:
        raise BackupError(
            f"{name}: line {number} is not a record line ({{'kind', 'record'}}); corrupt file."
        )
    kind = BY_LINE_KIND.get(obj["kind"]) if isinstance(obj["kind"], str) else None
    if kind is None:
        raise BackupError(f"{name}: line {number} has unknown record kind {obj['kind']!r}.")
    try:
        return kind, decode_record(kind.line_kind, obj["record"])
    except BackupError as exc:
        raise BackupError(f"{name}: line {number}: {exc}.") from None


def _records(stream: IO[bytes], name: str) -> Iterator[tuple[RecordKind, Any]]:
    """Yield every record of a file :func:`_scan` accepted (checks again as it decodes)."""
    first = True
    for number, line in _read_lines(stream, name):
        obj = _parse_json(line, number, name)
        if first:
            _check_header(obj, name)
            first = False
            continue
        if isinstance(obj, dict) and obj.get("kind") == "end":
            return
        yield _record_line(obj, number, name)


def _open(path: str | Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise BackupError(f"Backup file {path} does not exist.") from None
    except IsADirectoryError:
        raise BackupError(f"{path} is a directory, not a backup file.") from None
    except PermissionError:
        raise BackupError(f"Backup file {path} cannot be read (permission denied).") from None


def read_backup(path: str | Path) -> BackupInfo:
    """Check a backup file completely (format, version, every record, counts, checksum).

    Returns its :class:`BackupInfo`; raises :class:`BackupError` with what is wrong otherwise.
    Nothing is written anywhere.
    """
    with _open(path) as stream:
        return _scan(stream, str(path))


def iter_backup(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(line_kind, record)`` for every record of a backup file, checking as it goes.

    This streams: a problem late in the file is raised only after the earlier records were
    yielded. Call :func:`read_backup` first to know the whole file is sound.
    """
    with _open(path) as stream:
        for kind, record in _records(stream, str(path)):
            yield kind.line_kind, record


# Restoring --------------------------------------------------------------------------------------


@dataclass(slots=True)
class RestoreReport:
    """What :func:`restore_backup` did, per kind (keys of :data:`COUNT_KEYS`).

    ``in_file`` counts the records in the backup and ``written`` what the target storage
    reported writing (an audit event it already held is not written twice).
    ``skipped_expired`` counts records whose life ended since the backup was taken: restoring
    them would bring back nothing a reader could see. ``skipped_orphans`` counts tokens and
    sessions of users that no longer exist, which a database storage cannot hold.
    """

    info: BackupInfo
    mode: IfNotEmpty
    flushed: bool = False
    in_file: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    skipped_expired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    skipped_orphans: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))


def restore_backup(
    storage: AuthStorage,
    path: str | Path,
    *,
    if_not_empty: IfNotEmpty = "error",
    batch_size: int = 1000,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> RestoreReport:
    """Restore a backup file into ``storage``.

    The whole file is checked first (as :func:`read_backup` does); a corrupt, truncated,
    foreign or newer-version file raises :class:`BackupError` and nothing is written. A
    storage that already holds records raises :class:`TargetNotEmpty` unless
    ``if_not_empty`` is ``"merge"`` (records are upserted over what is there; an audit event
    already present is kept once) or ``"replace"`` (the storage is flushed first, once the
    file has been checked). Records are imported in batches of ``batch_size`` with the
    storage's ``import_*`` upserts, so a restore cut short by a storage failure is finished by
    running it again with ``"merge"``. ``on_progress(kind, done, total_of_kind)`` is called
    after every batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput("batch_size must be a positive integer.")
    if if_not_empty not in ("error", "merge", "replace"):
        raise InvalidInput("if_not_empty must be 'error', 'merge' or 'replace'.")
    with _open(path) as stream:
        # Both passes read the same open file: a file renamed over ``path`` in between cannot
        # swap unchecked content into the import pass.
        info = _scan(stream, str(path))
        if if_not_empty == "error" and not storage_is_empty(storage):
            raise TargetNotEmpty(
                f"The storage {storage_label(storage)!r} already holds records; choose "
                "whether to merge the backup into them or to replace them."
            )
        stream.seek(0)
        report = RestoreReport(info=info, mode=if_not_empty)
        if if_not_empty == "replace":
            storage.flush()
            report.flushed = True
        _import_records(storage, _records(stream, str(path)), report, batch_size, on_progress)
    return report


def _import_records(
    storage: AuthStorage,
    records: Iterable[tuple[RecordKind, Any]],
    report: RestoreReport,
    batch_size: int,
    on_progress: Callable[[str, int, int], None] | None,
) -> None:
    pending: list[Any] = []
    pending_kind: RecordKind | None = None
    done = dict.fromkeys(COUNT_KEYS, 0)

    def write_pending() -> None:
        nonlocal pending
        if pending_kind is None or not pending:
            return
        kind = pending_kind
        now = utcnow()
        live = [record for record in pending if not kind.is_expired(record, now)]
        report.skipped_expired[kind.name] += len(pending) - len(live)
        if live:
            result = write_records(kind, storage, live)
            report.written[kind.name] += result.written
            report.skipped_orphans[kind.name] += result.orphans
        done[kind.name] += len(pending)
        pending = []
        if on_progress is not None:
            on_progress(kind.name, done[kind.name], report.info.counts[kind.name])

    for kind, record in records:
        if kind is not pending_kind:
            write_pending()
            pending_kind = kind
        pending.append(record)
        report.in_file[kind.name] += 1
        if len(pending) >= batch_size:
            write_pending()
    write_pending()


__all__ = [
    "COUNT_KEYS",
    "FORMAT",
    "VERSION",
    "BackupError",
    "BackupInfo",
    "IfNotEmpty",
    "RestoreReport",
    "TargetNotEmpty",
    "decode_record",
    "encode_record",
    "iter_backup",
    "read_backup",
    "restore_backup",
    "write_backup",
]
