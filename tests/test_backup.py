"""Backup files and restores: the format, round trips on every backend, refused files."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_authfw.backup import (
    FORMAT,
    SCHEMAS,
    VERSION,
    BackupError,
    TargetNotEmpty,
    decode_record,
    read_backup,
    restore_backup,
    write_backup,
)
from django_authfw.exceptions import StorageUnavailable
from django_authfw.records import AuditEvent, KVEntry, SessionData
from django_authfw.storage import AuthStorage

from . import ops_support
from .backends import built_storage, selected_backends
from .factories import AuthTokenFactory
from .ops_support import (
    Delegating,
    assert_same_records,
    is_empty,
    keeps_kv_created_at,
    populate,
    raw_token_pair,
    snapshot,
)

aliases = ops_support.aliases  # the fixture, shared by the operations tests


def lines_of(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def raw_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines(keepends=True)


def write_raw(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(gzip.compress(b"".join(lines)))


def edit_line(source: Path, target: Path, index: int, edit: Callable[[Any], None]) -> None:
    """Copy a backup, changing only line ``index`` (as JSON): every other byte stays."""
    lines = raw_lines(source)
    obj = json.loads(lines[index])
    edit(obj)
    lines[index] = (json.dumps(obj) + "\n").encode()
    write_raw(target, lines)


# The format -----------------------------------------------------------------------------------


def test_schemas_cover_every_record_field() -> None:
    for kind, (cls, codecs) in SCHEMAS.items():
        assert set(cls.__dataclass_fields__) == {c.name for c in codecs}, kind


def test_file_layout_header_records_trailer(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path
) -> None:
    data = populate(storage, make_user)
    path = tmp_path / "authfw.backup.gz"
    counts = storage.create_backup(path)
    assert counts == data.counts()

    lines = lines_of(path)
    header, records, trailer = lines[0], lines[1:-1], lines[-1]
    assert header["format"] == FORMAT
    assert header["version"] == VERSION
    # The path settings use for a shipped backend, not the module it is defined in.
    assert header["source_backend"] == f"django_authfw.storage.{type(storage).__name__}"
    assert {"created_at", "source_alias", "generator"} <= header.keys()
    assert [line["kind"] for line in records] == sorted(
        (line["kind"] for line in records), key=["token", "session", "kv", "audit"].index
    )
    assert trailer["kind"] == "end"
    assert trailer["counts"] == counts
    assert len(trailer["sha256"]) == 64
    # Every field is present, None stays null, bytes are base64.
    kv = {line["record"]["key"]: line["record"] for line in records if line["kind"] == "kv"}
    assert kv["empty"]["value"] == ""
    assert kv["plain"]["value"] == "aGVsbG8="
    assert kv["plain"]["expires_at"] is None
    no_refresh = [
        line["record"]
        for line in records
        if line["kind"] == "token" and line["record"]["refresh_digest"] is None
    ]
    assert no_refresh
    assert no_refresh[0]["refresh_expires_at"] is None
    info = read_backup(path)
    assert info.counts == counts
    assert info.version == VERSION


def test_database_rows_encode_as_their_records_do(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    # A DatabaseStorage backup encodes rows straight to JSON, without records; the lines must
    # be the ones the records give, byte for byte (a Delegating wrapper takes the record path).
    storage = aliases(main="database")["main"]
    populate(storage, make_user, orphan_user_id=None, scale=3)
    storage.append_audit(
        AuditEvent(action="login", outcome=True, user_id=None, metadata={"ünï": [1.5, None]})
    )
    fast, slow = tmp_path / "rows.backup", tmp_path / "records.backup"
    assert write_backup(storage, fast, batch_size=2) == write_backup(
        Delegating(storage), slow, batch_size=2
    )
    # Header (its creation time) and trailer (its hashes) aside, the same lines: byte for byte
    # where Python encodes the rows; on PostgreSQL the server writes the tokens' JSON
    # (row_to_json leaves out trailing zeros of microseconds, for one) in the table's physical
    # order, so there the same decoded records and usernames, by id.
    fast_lines, slow_lines = raw_lines(fast)[1:-1], raw_lines(slow)[1:-1]
    assert len(fast_lines) == len(slow_lines) > 20

    def tokens_of(lines: list[bytes]) -> dict[str, tuple[str | None, Any]]:
        decoded = [json.loads(line) for line in lines if line.startswith(b'{"kind":"token"')]
        return {
            d["record"]["token_id"]: (d["username"], decode_record("token", d["record"]))
            for d in decoded
        }

    assert tokens_of(fast_lines) == tokens_of(slow_lines)
    assert len(tokens_of(fast_lines)) == read_backup(fast).counts["tokens"]
    others = [line for line in fast_lines if not line.startswith(b'{"kind":"token"')]
    assert others == [line for line in slow_lines if not line.startswith(b'{"kind":"token"')]
    assert read_backup(fast).counts == read_backup(slow).counts
    restore_target = aliases(other="memory")["other"]
    restore_backup(restore_target, fast)
    assert_same_records(snapshot(restore_target), snapshot(storage))


def test_backup_file_is_private_and_written_atomically(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path
) -> None:
    populate(storage, make_user)
    path = tmp_path / "b.gz"
    path.write_bytes(b"previous backup")
    storage.create_backup(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gz"]  # no temp file left

    class Failing(Delegating):
        def iter_sessions(self, *, batch_size: int = 1000) -> Any:
            raise StorageUnavailable("sessions are down")

    with pytest.raises(StorageUnavailable):
        write_backup(Failing(storage), path)
    # The previous complete backup is untouched, and no partial file is left behind.
    assert read_backup(path).counts["sessions"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gz"]


def test_backup_holds_digests_never_raw_tokens(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path
) -> None:
    raw, digest = raw_token_pair()
    storage.store_token(AuthTokenFactory.build(user_id=make_user(), access_digest=digest))
    path = tmp_path / "b.gz"
    storage.create_backup(path)
    content = gzip.decompress(path.read_bytes()).decode()
    assert digest in content
    assert raw not in content
    assert raw[len("afw_at_") :] not in content


# Round trips ----------------------------------------------------------------------------------


def test_round_trip_into_every_backend(
    backend: str,
    storage: AuthStorage,
    make_user: Callable[..., str],
    settings: Any,
    tmp_path: Path,
) -> None:
    populate(storage, make_user)
    before = snapshot(storage)
    path = tmp_path / "b.gz"
    storage.create_backup(path)

    # Restore into the same storage after losing everything: the disaster-recovery case.
    storage.flush()
    assert is_empty(storage)
    report = restore_backup(storage, path)
    assert report.written == {
        k: len(getattr(before, k)) for k in ("tokens", "sessions", "kv", "audit")
    }
    assert_same_records(
        snapshot(storage), before, ignore_kv_created_at=not keeps_kv_created_at(backend)
    )

    # And into every other backend (the database one holds its tables once per test run).
    for name in selected_backends():
        if name == backend or (name == "database" and backend == "database"):
            continue
        with built_storage(name, settings) as other:
            restore_backup(other, path)
            assert_same_records(
                snapshot(other),
                before,
                ignore_kv_created_at=not keeps_kv_created_at(backend, name),
            )


def test_restore_skips_records_that_expired_since_the_backup(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path
) -> None:
    from .ops_support import add_expiring, wait_past

    user = make_user()
    add_expiring(storage, user, count=2)
    kept = AuthTokenFactory.build(user_id=user)
    storage.store_token(kept)
    path = tmp_path / "b.gz"
    counts = storage.create_backup(path)
    assert counts["tokens"] == 3
    wait_past()
    storage.flush()
    report = restore_backup(storage, path)
    assert report.skipped_expired == {"tokens": 2, "sessions": 2, "kv": 2, "audit": 0}
    assert report.written["tokens"] == 1
    assert [t for b in storage.iter_tokens() for t in b] == [kept]


# Refused files: nothing is restored -----------------------------------------------------------


@pytest.fixture
def good_backup(storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path) -> Path:
    populate(storage, make_user, scale=30)
    path = tmp_path / "good.gz"
    storage.create_backup(path)
    storage.flush()
    assert is_empty(storage)
    return path


def refuse(storage: AuthStorage, path: Path, message: str) -> None:
    with pytest.raises(BackupError, match=message):
        restore_backup(storage, path)
    assert is_empty(storage), "a refused restore wrote something"


def test_truncated_file_is_refused(good_backup: Path, storage: AuthStorage) -> None:
    raw = good_backup.read_bytes()
    cut = good_backup.with_name("cut.gz")
    for size in (len(raw) // 2, len(raw) - 9, 20):
        cut.write_bytes(raw[:size])
        refuse(storage, cut, "truncated|corrupt")


def test_file_cut_at_a_line_boundary_is_refused(good_backup: Path, storage: AuthStorage) -> None:
    # A well-formed gzip that simply stops before the end marker: the per-line checks all pass,
    # only the missing trailer tells.
    lines = raw_lines(good_backup)
    cut = good_backup.with_name("cut.gz")
    write_raw(cut, lines[: len(lines) // 2])
    refuse(storage, cut, "truncated")
    write_raw(cut, lines[:-1])  # every record, only the end marker missing
    refuse(storage, cut, "truncated")


def test_corrupted_bytes_are_refused(good_backup: Path, storage: AuthStorage) -> None:
    raw = bytearray(good_backup.read_bytes())
    bad = good_backup.with_name("bad.gz")
    for offset in (len(raw) // 3, len(raw) // 2, len(raw) - 12):
        flipped = bytearray(raw)
        flipped[offset] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        refuse(storage, bad, "corrupt|truncated|not valid JSON|checksum")


def test_edited_record_fails_the_checksum(good_backup: Path, storage: AuthStorage) -> None:
    # The last record is edited: every earlier record is valid, so only checking the whole
    # file before writing keeps them out of the storage.
    edited = good_backup.with_name("edited.gz")
    write_raw(edited, raw_lines(good_backup))
    assert read_backup(edited).total > 0  # recompressing alone changes nothing that counts

    def tamper(line: Any) -> None:
        line["record"]["action"] = "tampered"

    edit_line(good_backup, edited, -2, tamper)
    refuse(storage, edited, "checksum")


def test_wrong_counts_are_refused(good_backup: Path, storage: AuthStorage) -> None:
    def miscount(line: Any) -> None:
        line["counts"]["tokens"] += 1

    edited = good_backup.with_name("edited.gz")
    edit_line(good_backup, edited, -1, miscount)
    refuse(storage, edited, "announces")


def test_invalid_record_is_refused(good_backup: Path, storage: AuthStorage) -> None:
    # A raw token where a digest belongs would plant a usable secret: refused.
    bad = good_backup.with_name("bad.gz")

    def plant_raw_token(line: Any) -> None:
        line["record"]["access_digest"] = raw_token_pair()[0]

    def drop_field(line: Any) -> None:
        del line["record"]["roles"]

    def naive_datetime(line: Any) -> None:
        line["record"]["expires_at"] = "2030-01-01T00:00:00"

    for edit, message in [
        (plant_raw_token, "SHA-256 hex digest"),
        (drop_field, "missing fields"),
        (naive_datetime, "no UTC offset"),
    ]:
        edit_line(good_backup, bad, 1, edit)  # line 1: the first token
        refuse(storage, bad, message)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not gzip|empty"),
        (b"token_id,user_id\n1,2\n", "not gzip"),
        (gzip.compress(b""), "empty"),
        (gzip.compress(b'{"format": "something-else", "version": 1}\n'), "not a django-authfw"),
        (gzip.compress(b"SQLite format 3\x00"), "not valid JSON"),
        (gzip.compress(json.dumps({"format": FORMAT, "version": VERSION + 1}).encode()), "newer"),
        # What Python's json module fails on with other exceptions than JSONDecodeError.
        (gzip.compress(b"[" * 100_000 + b"]" * 100_000 + b"\n"), "not valid JSON"),
        (
            gzip.compress(b'{"format": "%s", "version": %s}\n' % (FORMAT.encode(), b"9" * 5000)),
            "not valid JSON",
        ),
    ],
    ids=[
        "empty-file",
        "csv",
        "empty-gzip",
        "other-format",
        "binary",
        "newer-version",
        "deep-nesting",
        "huge-integer",
    ],
)
def test_foreign_files_are_refused(
    storage: AuthStorage, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "foreign"
    path.write_bytes(content)
    refuse(storage, path, message)


def test_missing_file(storage: AuthStorage, tmp_path: Path) -> None:
    refuse(storage, tmp_path / "nope.gz", "does not exist")


# Restoring into a storage that holds data ------------------------------------------------------


def test_non_empty_target_needs_merge_or_replace(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path
) -> None:
    data = populate(storage, make_user)
    path = tmp_path / "b.gz"
    storage.create_backup(path)
    storage.flush()
    extra = SessionData(session_id="extra", user_id=make_user())
    storage.store_session(extra)
    storage.kv_set("plain", b"newer value")

    with pytest.raises(TargetNotEmpty):
        restore_backup(storage, path)
    assert storage.kv_get("binary") is None  # nothing restored

    report = restore_backup(storage, path, if_not_empty="merge")
    assert report.flushed is False
    assert storage.get_session("extra") == extra  # kept
    assert storage.kv_get("plain") == b"hello"  # the backup's value wins
    assert len(snapshot(storage).tokens) == len(data.tokens)

    report = restore_backup(storage, path, if_not_empty="merge")  # again: nothing duplicated
    assert report.written["audit"] == 0
    assert snapshot(storage).audit_count == len(data.audit)

    restore_backup(storage, path, if_not_empty="replace")
    assert storage.get_session("extra") is None
    assert snapshot(storage).sessions == data.sessions


# The commands ---------------------------------------------------------------------------------


def test_backup_and_restore_commands(
    backend: str, aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    storages = aliases(main=backend, spare="memory" if backend != "memory" else "locmem")
    main = storages["main"]
    populate(main, make_user)
    before = snapshot(main)
    path = tmp_path / "cmd.gz"
    out = io.StringIO()
    call_command("authfw_backup", str(path), "--storage", "main", stdout=out)
    assert f"to {path}" in out.getvalue()
    assert "\r" not in out.getvalue()  # no progress bar off a terminal
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    with pytest.raises(CommandError, match=r"--merge.*--replace"):
        call_command("authfw_restore", str(path), "--storage", "main", stdout=io.StringIO())

    out = io.StringIO()
    call_command("authfw_restore", str(path), "--storage", "spare", stdout=out)
    assert "Checked" in out.getvalue()
    assert "restored" in out.getvalue()
    # Sessions ended since the backup come back, even with --merge: the command says so.
    assert before.sessions
    assert "session ended since" in out.getvalue()
    skip_created = not keeps_kv_created_at(backend)
    assert_same_records(snapshot(storages["spare"]), before, ignore_kv_created_at=skip_created)

    main.flush()
    main.kv_set("leftover", b"1")
    call_command(
        "authfw_restore", str(path), "--storage", "main", "--replace", stdout=io.StringIO()
    )
    assert_same_records(snapshot(main), before, ignore_kv_created_at=skip_created)
    out = io.StringIO()
    call_command("authfw_restore", str(path), "--storage", "main", "--merge", stdout=out)
    assert "already present" in out.getvalue()
    assert_same_records(snapshot(main), before, ignore_kv_created_at=skip_created)


def test_restore_command_refuses_corrupt_file(
    backend: str, aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    storages = aliases(main=backend)
    populate(storages["main"], make_user, scale=5)
    path = tmp_path / "cmd.gz"
    call_command("authfw_backup", str(path), "--storage", "main", stdout=io.StringIO())
    storages["main"].flush()
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CommandError, match=r"truncated.*Nothing was restored"):
        call_command("authfw_restore", str(path), "--storage", "main", stdout=io.StringIO())
    assert is_empty(storages["main"])


def test_commands_report_bad_arguments(aliases: Any, tmp_path: Path) -> None:
    aliases(main="memory")
    with pytest.raises(CommandError, match="Unknown storage alias 'nope'"):
        call_command("authfw_backup", str(tmp_path / "x.gz"), "--storage", "nope")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("authfw_backup", str(tmp_path / "no-dir" / "x.gz"), "--storage", "main")
    with pytest.raises(CommandError, match=r"does not exist.*Nothing was restored"):
        call_command("authfw_restore", str(tmp_path / "x.gz"), "--storage", "main")
    with pytest.raises(CommandError):
        call_command("authfw_restore", str(tmp_path / "x.gz"), "--merge", "--replace")


def test_progress_bar_only_on_a_terminal(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    storages = aliases(main="memory")
    populate(storages["main"], make_user, scale=20)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    call_command(
        "authfw_backup",
        str(tmp_path / "b.gz"),
        "--storage",
        "main",
        "--batch-size",
        "5",
        stdout=out,
    )
    assert "\r" in out.getvalue()
    assert "tokens" in out.getvalue()


def test_kv_entry_round_trip_keeps_bytes_and_none(tmp_path: Path) -> None:
    from django_authfw.backup import decode_record, encode_record

    entry = KVEntry(key="k", value=b"\x00\xff", expires_at=None)
    assert decode_record("kv", json.loads(json.dumps(encode_record("kv", entry)))) == entry


def test_restore_dry_run_checks_and_writes_nothing(
    aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    storages = aliases(main="memory", empty="locmem")
    data = populate(storages["main"], make_user)
    path = tmp_path / "b.gz"
    storages["main"].create_backup(path)

    out = io.StringIO()
    call_command("authfw_restore", str(path), "--storage", "empty", "--dry-run", stdout=out)
    assert f"{len(data.tokens)} in the file" in out.getvalue()
    assert "would be restored into the empty storage 'empty'" in out.getvalue()
    assert is_empty(storages["empty"])

    with pytest.raises(CommandError, match="--merge"):
        call_command("authfw_restore", str(path), "--storage", "main", "--dry-run")
    out = io.StringIO()
    call_command(
        "authfw_restore", str(path), "--storage", "main", "--replace", "--dry-run", stdout=out
    )
    assert "after deleting every record" in out.getvalue()
    assert len(snapshot(storages["main"]).tokens) == len(data.tokens)  # nothing deleted

    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CommandError, match="Nothing was restored"):
        call_command("authfw_restore", str(path), "--storage", "empty", "--dry-run")
