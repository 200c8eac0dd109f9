"""Backup files: every record of a storage in one versioned, compressed, signed file.

The format (version 2) is documented in ``docs/operations.md``. In short: a gzip-compressed
UTF-8 text of JSON lines,

* line 1, the header: ``{"format": "django-authfw-backup", "version": 2, "created_at": ...,
  "source_backend": ..., "source_alias": ..., "generator": ..., "user_model": ...,
  "username_field": ...}``;
* one line per record: ``{"kind": "token" | "session" | "kv" | "audit", "username": ...,
  "record": {...}}``, every field of the record present, datetimes as ISO 8601 with offset,
  bytes as base64; ``username`` (the user's ``USERNAME_FIELD`` value, on every line but
  key-value ones) lets a restore find the user in another database;
* the last line, the trailer: ``{"kind": "end", "counts": {...}, "sha256": ..., "hmac": ...}``:
  the SHA-256 of every byte before the trailer line (header and records, uncompressed), which
  tells accidental damage apart, and an HMAC-SHA256 with a key derived from ``SECRET_KEY``
  over the same bytes followed by the canonical end line (the counts), which authenticates
  the file: without the key nobody can write or alter a file that a restore accepts.

Records hold token digests only, as the storages do, so a backup never contains a usable token.
:func:`restore_backup` copies the file to a private temporary file, reads the whole copy and
checks every line, the counts, the checksum and the signature (with ``SECRET_KEY``, then each of
``SECRET_KEY_FALLBACKS``) before it writes anything, then imports that same copy: a corrupt,
truncated, unsigned, forged or foreign file restores nothing. Everything goes through the
:class:`~django_authfw.storage.AuthStorage` contract, so a backup of one backend restores into
any other; users are matched by natural key (:mod:`django_authfw.backup_users`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import gzip
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from django.conf import settings
from django.utils.crypto import salted_hmac

from .backup_users import (
    Mapping,
    UserMap,
    user_database,
    user_model_label,
    username_field,
    usernames_by_id,
)
from .exceptions import InvalidInput
from .records import AuditEvent, AuthToken, KVEntry, SessionData, utcnow
from .storage import backend_path
from .storage.base import AuthStorage, register_backup_writer
from .transfer import (
    AUDIT,
    BY_LINE_KIND,
    KINDS,
    TOKENS,
    RecordKind,
    close_iterator,
    storage_is_empty,
    storage_label,
    write_records,
)
from .validate import count
from .wording import sentence

FORMAT = "django-authfw-backup"
VERSION = 2
UNSIGNED_VERSION = 1
"""Version 1 files (written before backups were signed) carry no signature and no usernames:
refused unless the caller opts in with ``allow_unsigned=True`` (``--unsafe-allow-unsigned``)."""

SIGNATURE_SALT = "django_authfw.backup.signature"
"""The ``key_salt`` of Django's ``salted_hmac``: the signing key is
``SHA-256(SIGNATURE_SALT + SECRET_KEY)``, used for nothing else (a signature made for
sessions, password resets or ``django.core.signing`` is never a valid backup signature)."""

USER_LINE_KINDS = frozenset({"token", "session", "audit"})
"""Record kinds whose lines carry ``username`` (their records name a user)."""

COUNT_KEYS = tuple(kind.name for kind in KINDS)
"""Keys of the counts: tokens, sessions, kv, audit (records are written in this order)."""

# One JSON line can hold a large session or key-value value, but a "line" of gigabytes is a
# broken or hostile file, refused before it fills memory.
MAX_LINE_BYTES = 64 * 1024 * 1024

IfNotEmpty = Literal["error", "merge", "replace"]

BACKUP_COMPRESSLEVEL = 1
"""gzip level of the files written: 1, the fastest, compresses digests and JSON about as well as
the default 6 at a third of its cost (measured in docs/operations.md); any level reads back."""


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


_DIGEST = re.compile("[0-9a-f]{64}")


def _dec_digest(value: Any) -> str:
    # A stored token is a SHA-256 hex digest; anything else (a raw token, say) is refused, so a
    # backup can never plant a usable secret in a storage.
    text = _dec_str(value)
    if _DIGEST.fullmatch(text) is None:
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


# Each kind's codec pair, by what its schema says the field holds (django_authfw.records.spec);
# a line lists the fields in declaration order, so it is derived from dataclasses.fields().
_BY_KIND: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "id": STR,
    "text": STR,
    "ip": STR,
    "digest": DIGEST,
    "time": DATETIME,
    "strings": STR_LIST,
    "object": DICT,
    "bool": BOOL,
    "bytes": BYTES,
}
_NULLABLE: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "id": OPT_STR,
    "text": OPT_STR,
    "ip": OPT_STR,
    "digest": OPT_DIGEST,
    "time": OPT_DATETIME,
}


def _schema(record_class: type[Any]) -> tuple[type[Any], tuple[_Codec, ...]]:
    codecs = []
    for schema_field in dataclasses.fields(record_class):
        spec = schema_field.metadata
        encode, decode = (_NULLABLE if spec["null"] else _BY_KIND)[spec["kind"]]
        codecs.append(_Codec(schema_field.name, encode, decode))
    return record_class, tuple(codecs)


SCHEMAS: dict[str, tuple[type[Any], tuple[_Codec, ...]]] = {
    "token": _schema(AuthToken),
    "session": _schema(SessionData),
    "kv": _schema(KVEntry),
    "audit": _schema(AuditEvent),
}


_FIELD_NAMES = {kind: frozenset(c.name for c in codecs) for kind, (_cls, codecs) in SCHEMAS.items()}


def encode_record(kind: str, record: Any) -> dict[str, Any]:
    """Return the JSON-ready form of one record of ``kind`` (every field present)."""
    _cls, codecs = SCHEMAS[kind]
    return {codec.name: codec.encode(getattr(record, codec.name)) for codec in codecs}


def decode_record(kind: str, data: Any) -> Any:
    """Rebuild a record of ``kind`` from its JSON form, checking every field strictly."""
    cls, codecs = SCHEMAS[kind]
    if not isinstance(data, dict):
        raise _fail(f"a {kind} record must be a JSON object")
    expected = _FIELD_NAMES[kind]
    if len(data) == len(expected) and data.keys() == expected:
        # The usual case, checked at once: exactly the fields of the kind.
        try:
            return cls(**{codec.name: codec.decode(data[codec.name]) for codec in codecs})
        except BackupError:
            pass  # reported below, with the field's name
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


# One encoder, built once: json.dumps with options builds a new one per call.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dumps(obj: Any) -> bytes:
    return (_encode_json(obj) + "\n").encode("utf-8")


def _row_encoder(kind: str) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
    """A function from a database row of ``kind`` (:meth:`DatabaseStorage.iter_rows`) to what
    :func:`encode_record` gives for the record built from that row."""
    from .storage.database.rows import column_readers

    record_class, codecs = SCHEMAS[kind]
    steps: list[Callable[[Any], Any] | None] = []
    for codec, read in zip(codecs, column_readers(record_class), strict=True):
        encode = None if codec.encode is _same else codec.encode
        if encode is None or read is None:
            steps.append(read or encode)
        else:
            steps.append(_then(read, encode))
    names = tuple(codec.name for codec in codecs)
    pairs = tuple(zip(names, steps, strict=True))

    def encode_row(row: tuple[Any, ...]) -> dict[str, Any]:
        return {
            name: value if step is None or value is None else step(value)
            for (name, step), value in zip(pairs, row, strict=True)
        }

    return encode_row


class _Usernames:
    """Usernames by user id, read a batch at a time and remembered (up to :attr:`LIMIT` ids),
    so that the users of a large backup are read about once each, not once per batch."""

    LIMIT = 100_000

    def __init__(self, db: str) -> None:
        self.db = db
        self.known: dict[str, str | None] = {}

    def lookup(self, user_ids: Iterable[str]) -> dict[str, str | None]:
        ids = set(user_ids)
        wanted = ids - self.known.keys()
        if wanted:
            if len(self.known) + len(wanted) > self.LIMIT:
                self.known.clear()  # bounded memory; this batch's users are all read again
                wanted = ids
            found = usernames_by_id(self.db, wanted)
            for user_id in wanted:
                self.known[user_id] = found.get(user_id)
        return self.known


def _server_json(
    storage: AuthStorage, kind: RecordKind, batch_size: int
) -> Iterator[list[tuple[str, str]]] | None:
    """Pages of ``(user_id, record JSON)`` built by the database, for the tokens of a
    :class:`~django_authfw.storage.DatabaseStorage` on PostgreSQL; otherwise None."""
    from .storage.database import DatabaseStorage

    if kind is not TOKENS or type(storage) is not DatabaseStorage:
        return None
    return storage.iter_token_json(batch_size=batch_size)


def _then(first: Callable[[Any], Any], second: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``second(first(value))``."""
    if second is _enc_datetime:
        return lambda value: first(value).isoformat()  # the common case, one call fewer
    return lambda value: second(first(value))


def _encoded_batches(
    storage: AuthStorage, kind: RecordKind, batch_size: int
) -> Iterator[list[dict[str, Any]]]:
    """The JSON-ready records of ``kind`` in ``storage``, a batch at a time.

    A :class:`~django_authfw.storage.DatabaseStorage` (exactly that class: a subclass may
    change how records are read) gives rows, encoded without building a record per row;
    any other storage gives records through its ``iter_*`` methods.
    """
    from .storage.database import DatabaseStorage

    if type(storage) is DatabaseStorage:
        encode_row = _row_encoder(kind.line_kind)
        pages = storage.iter_rows(kind.line_kind, batch_size=batch_size)
        try:
            for rows in pages:
                yield [encode_row(row) for row in rows]
        finally:
            close_iterator(pages)
        return
    batches = kind.iterate(storage, batch_size)
    try:
        for batch in batches:
            yield [encode_record(kind.line_kind, record) for record in batch]
    finally:
        close_iterator(batches)


def _mac(secret: str | bytes) -> hmac.HMAC:
    """A fresh HMAC-SHA256 keyed from ``secret`` and :data:`SIGNATURE_SALT`, fed line by line."""
    return salted_hmac(SIGNATURE_SALT, b"", secret=secret, algorithm="sha256")


def _verification_keys() -> list[tuple[str, str | bytes]]:
    """``SECRET_KEY`` first, then each of ``SECRET_KEY_FALLBACKS``, named for reports."""
    keys: list[tuple[str, str | bytes]] = [("SECRET_KEY", settings.SECRET_KEY)]
    fallbacks = getattr(settings, "SECRET_KEY_FALLBACKS", None) or []
    keys += [(f"SECRET_KEY_FALLBACKS[{i}]", key) for i, key in enumerate(fallbacks)]
    return keys


def _end_line(counts: dict[str, int]) -> bytes:
    # What the signature covers after the header and records: the number of records of each
    # kind, so that neither dropping lines nor announcing other counts goes unnoticed.
    return _dumps({"kind": "end", "counts": counts})


def write_backup(
    storage: AuthStorage,
    path: str | Path,
    *,
    batch_size: int = 1000,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Write every record of ``storage`` to a signed backup file at ``path``; return counts.

    The file is signed with ``SECRET_KEY`` (see :data:`SIGNATURE_SALT`), and every token,
    session and audit event line carries its user's ``USERNAME_FIELD`` value, read from the
    storage's user database in one query per batch. The file is written to a temporary file
    next to ``path`` with mode 0600 and renamed over ``path`` only once complete, so a crash or
    a full disk never leaves a half backup under the final name. Records are read with the
    storage's batched iterators while traffic may continue: the backup is consistent per
    record, not a point-in-time snapshot. ``on_progress(kind, records_written_of_that_kind)``
    is called after every batch.
    """
    # An int in the range every storage's reader takes (PostgreSQL's FETCH FORWARD takes a
    # bigint), refused here with what is wrong rather than as a storage error mid-backup.
    count(batch_size, "batch_size", minimum=1)
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InvalidInput(f"{target} is a directory; give the path of a backup file to write.")
    if not directory.is_dir():
        raise InvalidInput(f"Directory {directory} does not exist; create it first.")

    counts = dict.fromkeys(COUNT_KEYS, 0)
    digest = hashlib.sha256()
    signature = _mac(settings.SECRET_KEY)
    usernames = _Usernames(user_database(storage))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)  # holds digests and session data: owner only
        with (
            open(fd, "wb") as raw,
            gzip.GzipFile(
                filename=target.name, mode="wb", fileobj=raw, compresslevel=BACKUP_COMPRESSLEVEL
            ) as out,
            contextlib.ExitStack() as stack,
        ):

            def emit(line: bytes) -> None:
                digest.update(line)
                signature.update(line)
                out.write(line)

            from . import __version__

            emit(
                _dumps(
                    {
                        "format": FORMAT,
                        "version": VERSION,
                        "created_at": utcnow().isoformat(),
                        "source_backend": backend_path(storage),
                        "source_alias": storage.alias,
                        "generator": f"django-authfw {__version__}",
                        "user_model": user_model_label(),
                        "username_field": username_field(),
                    }
                )
            )
            for kind in KINDS:
                named = kind.line_kind in USER_LINE_KINDS
                server_json = _server_json(storage, kind, batch_size)
                if server_json is not None:
                    # Closed as soon as the backup stops, whatever stops it: it holds a
                    # transaction open until then (a traceback would keep it alive).
                    stack.callback(close_iterator, server_json)
                    for page in server_json:
                        names = usernames.lookup(user_id for user_id, _text in page)
                        lines = [
                            f'{{"kind":"token","username":{_encode_json(names.get(user_id))},'
                            f'"record":{text}}}'
                            for user_id, text in page
                        ]
                        lines.append("")
                        emit("\n".join(lines).encode("utf-8"))
                        counts[kind.name] += len(page)
                        if on_progress is not None:
                            on_progress(kind.name, counts[kind.name])
                    continue
                batches = _encoded_batches(storage, kind, batch_size)
                stack.callback(close_iterator, batches)
                for data in batches:
                    names = (
                        usernames.lookup(r["user_id"] for r in data if r["user_id"] is not None)
                        if named
                        else {}
                    )
                    lines = []
                    for record in data:
                        line: dict[str, Any] = {"kind": kind.line_kind}
                        if named:
                            user_id = record["user_id"]
                            line["username"] = None if user_id is None else names.get(user_id)
                        line["record"] = record
                        lines.append(_encode_json(line))
                    # One write (and hash update) per batch: the bytes are the same as line by
                    # line, without a call per line.
                    lines.append("")
                    emit("\n".join(lines).encode("utf-8"))
                    counts[kind.name] += len(data)
                    if on_progress is not None:
                        on_progress(kind.name, counts[kind.name])
            signature.update(_end_line(counts))
            trailer = {
                "kind": "end",
                "counts": counts,
                "sha256": digest.hexdigest(),
                "hmac": signature.hexdigest(),
            }
            out.write(_dumps(trailer))
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
    user_model: str | None = None
    """``app_label.model`` of the user model of the source (None in a version 1 file)."""
    username_field: str | None = None
    """The source user model's ``USERNAME_FIELD`` (None in a version 1 file)."""
    signed_with: str | None = None
    """Which key the signature matched: ``"SECRET_KEY"`` or ``"SECRET_KEY_FALLBACKS[i]"``;
    None for an unsigned version 1 file read with ``allow_unsigned=True``."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def signed(self) -> bool:
        return self.signed_with is not None


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
    # ValueError covers the decode errors and the integers too long to convert; nesting deeper
    # than the interpreter's stack gives RecursionError.
    except (ValueError, RecursionError):
        raise BackupError(
            f"{name}: line {number} is not valid JSON; the file is corrupt."
        ) from None


def _unsigned(name: str) -> BackupError:
    return BackupError(
        f"{name} is an unsigned backup (format version {UNSIGNED_VERSION}, written before "
        "django-authfw signed its backups): nothing proves who wrote it or that it was not "
        "altered, and it does not name users in a way another database can match. Take a new "
        "backup. Only if you are sure this file is genuine and you restore it into the "
        "database it was taken from, pass --unsafe-allow-unsigned (allow_unsigned=True)."
    )


def _check_header(obj: Any, name: str, allow_unsigned: bool) -> dict[str, Any]:
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
    if version == UNSIGNED_VERSION and not allow_unsigned:
        raise _unsigned(name)
    try:
        header: dict[str, Any] = {
            "version": version,
            "created_at": _dec_datetime(obj.get("created_at")),
            "source_backend": _dec_str(obj.get("source_backend")),
            "source_alias": _dec_opt_str(obj.get("source_alias")),
            "generator": _dec_str(obj.get("generator", "")),
        }
        if version >= 2:
            header["user_model"] = _dec_str(obj.get("user_model"))
            header["username_field"] = _dec_str(obj.get("username_field"))
    except BackupError as exc:
        raise BackupError(f"{name}: the header is invalid ({exc}); the file is corrupt.") from None
    return header


def _scan(stream: IO[bytes], name: str, allow_unsigned: bool = False) -> BackupInfo:
    """Read the whole file once, checking every line, the counts, checksum and signature.

    Raises :class:`BackupError` on anything wrong; the checksum, counts and signature are only
    known to be right at the end, which is why a restore scans the whole file before writing.
    """
    digest = hashlib.sha256()
    # One HMAC per key that may have signed the file (key rotation); a handful at most.
    macs: list[tuple[str, hmac.HMAC]] = []
    counts = dict.fromkeys(COUNT_KEYS, 0)
    header: dict[str, Any] | None = None
    trailer: dict[str, Any] | None = None
    position = 0  # records come in KINDS order, as write_backup writes them
    for number, line in _read_lines(stream, name):
        if trailer is not None:
            raise BackupError(f"{name}: data after the end marker (line {number}); corrupt file.")
        obj = _parse_json(line, number, name)
        if header is None:
            header = _check_header(obj, name, allow_unsigned)
            if header["version"] >= 2:
                macs = [(label, _mac(key)) for label, key in _verification_keys()]
        elif isinstance(obj, dict) and obj.get("kind") == "end":
            trailer = obj
            continue
        else:
            kind, _record, _username = _record_line(obj, number, name, header["version"])
            order = KINDS.index(kind)
            if order < position:
                raise BackupError(
                    f"{name}: line {number}: a {kind.line_kind} record out of order; corrupt file."
                )
            position = order
            counts[kind.name] += 1
        digest.update(line)
        for _label, mac in macs:
            mac.update(line)
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
    signed_with = _verify_signature(trailer, macs, counts, name) if macs else None
    return BackupInfo(path=Path(name), counts=counts, signed_with=signed_with, **header)


def _verify_signature(
    trailer: dict[str, Any], macs: list[tuple[str, hmac.HMAC]], counts: dict[str, int], name: str
) -> str:
    """The name of the key whose HMAC matches the trailer's; BackupError if none does."""
    claimed = trailer.get("hmac")
    if not isinstance(claimed, str) or not claimed:
        raise BackupError(
            f"{name} is not signed (its end marker has no signature). A backup written by "
            "authfw_backup is always signed: this file was made or altered by something else."
        )
    end = _end_line(counts)
    matched = None
    for label, mac in macs:
        mac.update(end)
        # Every key is tried, each in constant time, whatever matches first.
        # Bytes: compare_digest refuses str with non-ASCII characters (TypeError), and the
        # trailer, which nothing signs, may hold any text, lone surrogates included.
        given = claimed.encode("utf-8", "surrogatepass")
        if hmac.compare_digest(mac.hexdigest().encode(), given) and matched is None:
            matched = label
    if matched is None:
        raise BackupError(
            f"{name} is refused: its signature does not match. It was not written with this "
            "project's SECRET_KEY (nor any of SECRET_KEY_FALLBACKS), or it was altered after it "
            "was written. A backup restores only into a project holding the key that signed it."
        )
    return matched


def _record_line(
    obj: Any, number: int, name: str, version: int
) -> tuple[RecordKind, Any, str | None]:
    """The kind, record and username (None when the line names no user) of one record line."""
    if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
        raise BackupError(
            f"{name}: line {number} is not a record line ({{'kind', 'record'}}); corrupt file."
        )
    kind = BY_LINE_KIND.get(obj["kind"])
    if kind is None:
        raise BackupError(f"{name}: line {number} has unknown record kind {obj['kind']!r}.")
    named = version >= 2 and kind.line_kind in USER_LINE_KINDS
    expected = {"kind", "record", "username"} if named else {"kind", "record"}
    if set(obj) != expected:
        raise BackupError(
            f"{name}: line {number} is not a {kind.line_kind} record line "
            f"({sorted(expected)}); corrupt file."
        )
    try:
        record = decode_record(kind.line_kind, obj["record"])
        username = _dec_opt_str(obj["username"]) if named else None
    except BackupError as exc:
        raise BackupError(f"{name}: line {number}: {sentence(exc)}") from None
    if named and record.user_id is None and username is not None:
        raise BackupError(f"{name}: line {number}: a username without a user_id; corrupt file.")
    return kind, record, username


def _records(
    stream: IO[bytes], name: str, allow_unsigned: bool
) -> Iterator[tuple[RecordKind, Any, str | None]]:
    """Yield every record of a file :func:`_scan` accepted (checks again as it decodes)."""
    version = 0
    for number, line in _read_lines(stream, name):
        obj = _parse_json(line, number, name)
        if not version:
            version = _check_header(obj, name, allow_unsigned)["version"]
            continue
        if isinstance(obj, dict) and obj.get("kind") == "end":
            return
        yield _record_line(obj, number, name, version)


def _open(path: str | Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise BackupError(f"Backup file {path} does not exist.") from None
    except IsADirectoryError:
        raise BackupError(f"{path} is a directory, not a backup file.") from None
    except PermissionError:
        raise BackupError(f"Backup file {path} cannot be read (permission denied).") from None


@contextlib.contextmanager
def _private_copy(path: str | Path) -> Iterator[IO[bytes]]:
    """An anonymous temporary copy of the file at ``path`` (as compressed: the file's size),
    which no other process can open or change; removed on exit."""
    with _open(path) as source, tempfile.TemporaryFile(prefix=".authfw-restore-") as copy:
        try:
            shutil.copyfileobj(source, copy, 1024 * 1024)
        except OSError as exc:
            raise BackupError(
                f"{path} could not be copied to a private temporary file ({exc}); the restore "
                "needs free space for one copy of the backup in the temporary directory "
                "(TMPDIR)."
            ) from None
        copy.seek(0)
        yield copy


def read_backup(path: str | Path, *, allow_unsigned: bool = False) -> BackupInfo:
    """Check a backup file completely (format, version, every record, counts, checksum and
    signature).

    Returns its :class:`BackupInfo`; raises :class:`BackupError` with what is wrong otherwise.
    An unsigned (version 1) file is refused unless ``allow_unsigned`` is true (unsafe: anyone
    who could write the file chose its content). Nothing is written anywhere.
    """
    with _open(path) as stream:
        return _scan(stream, str(path), allow_unsigned)


def iter_backup(path: str | Path, *, allow_unsigned: bool = False) -> Iterator[tuple[str, Any]]:
    """Yield ``(line_kind, record)`` for every record of a backup file, checking as it goes.

    This streams and checks each line, but not the checksum, the counts or the signature, which
    are only known at the end: nothing it yields is authenticated. Call :func:`read_backup`
    first to know the whole file is sound and genuine.
    """
    with _open(path) as stream:
        for kind, record, _username in _records(stream, str(path), allow_unsigned):
            yield kind.line_kind, record


# Restoring --------------------------------------------------------------------------------------

MAX_REPORTED_USERS = 100
"""How many users a :class:`RestoreReport` describes one by one (the counts cover them all)."""


@dataclass(slots=True)
class UserChange:
    """One backed-up user whose records could not be restored under the backup's ``user_id``."""

    username: str | None
    backup_user_id: str
    outcome: str
    """``remapped``, ``missing``, ``id_taken`` or ``no_username``
    (:data:`~django_authfw.backup_users.Outcome`)."""
    target_user_id: str | None
    """The id the records moved to (``remapped``), else None."""
    holder_of_id: str | None
    """For ``id_taken``: the username that holds ``backup_user_id`` in the target."""
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))


def _per_kind() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


@dataclass(slots=True)
class RestoreReport:
    """What :func:`restore_backup` did, per kind (keys of :data:`COUNT_KEYS`).

    ``in_file`` counts the records in the backup and ``written`` what the target storage
    reported writing (an audit event it already held is not written twice).
    ``skipped_expired`` counts records whose life ended since the backup was taken: restoring
    them would bring back nothing a reader could see.

    Users are matched by natural key (``USERNAME_FIELD``), never by id alone:
    ``remapped`` counts records moved to the target's id of their username; tokens and sessions
    whose username the target does not have are skipped, in ``skipped_missing_user`` (nobody
    there has that username, or the backup did not know it) or ``skipped_user_id_taken`` (nobody
    has that username, and the backup's id is somebody else's there); audit events of such
    users are kept without a user (``unattributed``, the backup's id and username in their
    metadata under ``"backup_user"``). ``skipped_orphans`` counts records a database storage
    refused for a user missing all the same (a user deleted during the restore).
    ``user_changes`` describes the first :data:`MAX_REPORTED_USERS` such users;
    ``user_changes_truncated`` says there were more. ``kept_revoked`` counts tokens a merge
    left revoked because the target had revoked them (an older backup never un-revokes).
    ``user_ids_unchecked`` is true for an unsigned version 1 file read with
    ``allow_unsigned``: it names no usernames, so its ids were taken as they are.
    """

    info: BackupInfo
    mode: IfNotEmpty
    flushed: bool = False
    in_file: dict[str, int] = field(default_factory=_per_kind)
    written: dict[str, int] = field(default_factory=_per_kind)
    skipped_expired: dict[str, int] = field(default_factory=_per_kind)
    skipped_orphans: dict[str, int] = field(default_factory=_per_kind)
    remapped: dict[str, int] = field(default_factory=_per_kind)
    skipped_missing_user: dict[str, int] = field(default_factory=_per_kind)
    skipped_user_id_taken: dict[str, int] = field(default_factory=_per_kind)
    unattributed: dict[str, int] = field(default_factory=_per_kind)
    kept_revoked: int = 0
    user_changes: list[UserChange] = field(default_factory=list)
    user_changes_truncated: bool = False
    user_ids_unchecked: bool = False

    def not_written(self, kind: str) -> int:
        """Records of ``kind`` in the file the storage already held (merge), not skipped."""
        skipped = (
            self.skipped_expired[kind]
            + self.skipped_orphans[kind]
            + self.skipped_missing_user[kind]
            + self.skipped_user_id_taken[kind]
        )
        return self.in_file[kind] - self.written[kind] - skipped


def restore_backup(
    storage: AuthStorage,
    path: str | Path,
    *,
    if_not_empty: IfNotEmpty = "error",
    batch_size: int = 1000,
    on_progress: Callable[[str, int, int], None] | None = None,
    allow_unsigned: bool = False,
) -> RestoreReport:
    """Restore a backup file into ``storage``.

    The file is first copied to an anonymous temporary file (its compressed size, in the
    temporary directory), and both the check and the import read that copy, so the file cannot
    be changed between them. The whole file is checked first (as :func:`read_backup` does,
    signature included); a corrupt, truncated, unsigned, forged, foreign or newer-version file
    raises :class:`BackupError` and nothing is written. A storage that already holds records
    raises :class:`TargetNotEmpty` unless ``if_not_empty`` is ``"merge"`` (records are upserted
    over what is there, except that a token the storage holds revoked stays revoked; an audit
    event already present is kept once) or ``"replace"`` (the storage is flushed first, once the
    file has been checked). Each record's user is found by the username the backup carries, in
    the storage's user database (see :class:`RestoreReport` for what happens when it is missing
    or has another id). Records are imported in batches of ``batch_size`` with the storage's
    ``import_*`` upserts, so a restore cut short by a storage failure is finished by running it
    again with ``"merge"``. ``on_progress(kind, done, total_of_kind)`` is called after every
    batch. ``allow_unsigned=True`` accepts an unsigned version 1 file: unsafe, see
    ``docs/operations.md``.
    """
    count(batch_size, "batch_size", minimum=1)
    if if_not_empty not in ("error", "merge", "replace"):
        raise InvalidInput("if_not_empty must be 'error', 'merge' or 'replace'.")
    with _private_copy(path) as stream:
        # Both passes read one private copy: whoever can write ``path`` could otherwise
        # rewrite it in place (same inode, no rename) after the check and while the import
        # reads it again, and have records nobody signed imported.
        info = _scan(stream, str(path), allow_unsigned)
        check_user_model(info, str(path))
        if if_not_empty == "error" and not storage_is_empty(storage):
            raise TargetNotEmpty(
                f"The storage {storage_label(storage)!r} already holds records; choose "
                "whether to merge the backup into them or to replace them."
            )
        stream.seek(0)
        report = RestoreReport(info=info, mode=if_not_empty)
        report.user_ids_unchecked = info.username_field is None
        if if_not_empty == "replace":
            storage.flush()
            report.flushed = True
        importer = _Importer(storage, report, batch_size, on_progress)
        importer.run(_records(stream, str(path), allow_unsigned))
    return report


def check_user_model(info: BackupInfo, name: str) -> None:
    """Raise :class:`BackupError` if the backup names users by another field than this
    project's ``USERNAME_FIELD`` (its users could not be matched)."""
    here = username_field()
    if info.username_field is not None and info.username_field != here:
        raise BackupError(
            f"{name} names users by {info.username_field!r} (of {info.user_model}), but this "
            f"project's user model names them by {here!r} (of {user_model_label()}): its "
            "records cannot be matched to users here."
        )


class _Importer:
    """Writes the records of a checked file in batches, matching users by username."""

    def __init__(
        self,
        storage: AuthStorage,
        report: RestoreReport,
        batch_size: int,
        on_progress: Callable[[str, int, int], None] | None,
    ) -> None:
        self.storage = storage
        self.report = report
        self.batch_size = batch_size
        self.on_progress = on_progress
        self.users = UserMap(user_database(storage))
        self.done = _per_kind()
        # Only the users reported one by one are kept, so memory stays bounded.
        self.changes: dict[tuple[str, str | None], UserChange] = {}

    def run(self, records: Iterable[tuple[RecordKind, Any, str | None]]) -> None:
        pending: list[tuple[Any, str | None]] = []
        pending_kind: RecordKind | None = None
        for kind, record, username in records:
            if kind is not pending_kind:
                self._write(pending_kind, pending)
                pending, pending_kind = [], kind
            pending.append((record, username))
            self.report.in_file[kind.name] += 1
            if len(pending) >= self.batch_size:
                self._write(pending_kind, pending)
                pending = []
        self._write(pending_kind, pending)
        self.report.user_changes = list(self.changes.values())

    def _write(self, kind: RecordKind | None, pending: list[tuple[Any, str | None]]) -> None:
        if kind is None or not pending:
            return
        report = self.report
        now = utcnow()
        live = [(r, name) for r, name in pending if not kind.is_expired(r, now)]
        report.skipped_expired[kind.name] += len(pending) - len(live)
        records = self._match_users(kind, live)
        if kind is TOKENS and report.mode == "merge":
            records = self._keep_revocations(records)
        if records:
            result = write_records(kind, self.storage, records)
            report.written[kind.name] += result.written
            report.skipped_orphans[kind.name] += result.orphans
        self.done[kind.name] += len(pending)
        if self.on_progress is not None:
            self.on_progress(kind.name, self.done[kind.name], report.info.counts[kind.name])

    def _match_users(self, kind: RecordKind, batch: list[tuple[Any, str | None]]) -> list[Any]:
        """The records of ``batch`` with their target user ids; the unmatched left out."""
        if kind.line_kind not in USER_LINE_KINDS or self.report.user_ids_unchecked:
            return [record for record, _name in batch]
        pairs = [(r.user_id, name) for r, name in batch if r.user_id is not None]
        mappings = self.users.resolve(pairs)
        report, out = self.report, []
        for record, name in batch:
            if record.user_id is None:
                out.append(record)
                continue
            mapping = mappings[(record.user_id, name)]
            if mapping.outcome != "same":
                self._note(kind, record.user_id, name, mapping)
            if mapping.target_user_id is not None:
                if mapping.outcome == "remapped":
                    report.remapped[kind.name] += 1
                    record = replace(record, user_id=mapping.target_user_id)
                out.append(record)
            elif kind is AUDIT:
                # History is kept, but never attributed to whoever holds that id here.
                report.unattributed[kind.name] += 1
                metadata = {
                    **record.metadata,
                    "backup_user": {"user_id": record.user_id, "username": name},
                }
                out.append(replace(record, user_id=None, metadata=metadata))
            elif mapping.outcome == "id_taken":
                report.skipped_user_id_taken[kind.name] += 1
            else:
                report.skipped_missing_user[kind.name] += 1
        return out

    def _note(self, kind: RecordKind, user_id: str, name: str | None, mapping: Mapping) -> None:
        key = (user_id, name)
        change = self.changes.get(key)
        if change is None:
            if len(self.changes) >= MAX_REPORTED_USERS:
                self.report.user_changes_truncated = True
                return
            change = UserChange(
                username=name,
                backup_user_id=user_id,
                outcome=mapping.outcome,
                target_user_id=mapping.target_user_id,
                holder_of_id=mapping.holder_of_id,
            )
            self.changes[key] = change
        change.records[kind.name] += 1

    def _keep_revocations(self, tokens: list[AuthToken]) -> list[AuthToken]:
        # A merge of an older backup must not bring back a token revoked since: the target's
        # revocation wins (one read per token; merges are rare, correctness is not).
        out = []
        for token in tokens:
            if token.revoked_at is None:
                held = self.storage.get_token(token.token_id)
                if held is not None and held.revoked_at is not None:
                    self.report.kept_revoked += 1
                    token = replace(token, revoked_at=held.revoked_at, replaced_by=held.replaced_by)
            out.append(token)
        return out


__all__ = [
    "COUNT_KEYS",
    "FORMAT",
    "VERSION",
    "BackupError",
    "BackupInfo",
    "IfNotEmpty",
    "RestoreReport",
    "TargetNotEmpty",
    "UserChange",
    "check_user_model",
    "decode_record",
    "encode_record",
    "iter_backup",
    "read_backup",
    "restore_backup",
    "write_backup",
]

# AuthStorage.create_backup calls this writer; the storage layer never imports this module.
register_backup_writer(write_backup)
