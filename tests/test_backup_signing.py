"""Backups are signed: a file nobody holding SECRET_KEY wrote or altered restores nothing.

The attacker here can write the backup file (a shared backup volume, an object store bucket)
but does not know SECRET_KEY. They can recompute the plain SHA-256 and the counts; the tests
check that the signature still refuses their file, with nothing written.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_authfw import tokens
from django_authfw.backup import BackupError, read_backup, restore_backup
from django_authfw.records import utcnow
from django_authfw.storage import AuthStorage

from . import ops_support
from .backup_files import (
    dumps,
    raw_lines,
    rewrite,
    to_version_1,
    token_line_indexes,
    write_raw,
)
from .ops_support import is_empty, populate, raw_token_pair, snapshot

aliases = ops_support.aliases

FORGED = "signature does not match"


@pytest.fixture
def good_backup(storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path) -> Path:
    populate(storage, make_user, scale=3)
    path = tmp_path / "good.gz"
    storage.create_backup(path)
    storage.flush()
    assert is_empty(storage)
    return path


def plant_token(source: Path, target: Path) -> str:
    """Add a token whose raw secret the attacker knows (everything else recomputed); return
    the raw token."""
    raw, digest = raw_token_pair()

    def edit(body: list[bytes]) -> None:
        last = token_line_indexes(body)[-1]
        line = json.loads(body[last])  # a real user's token line, username and all
        line["record"].update(
            token_id=tokens.new_id(),
            access_digest=digest,
            refresh_digest=None,
            refresh_expires_at=None,
            expires_at=(utcnow() + timedelta(days=365)).isoformat(),
            revoked_at=None,
            replaced_by=None,
            permissions=["*"],
            roles=["superuser"],
        )
        body.insert(last + 1, dumps(line))

    rewrite(source, target, edit)
    return raw


def refuse(storage: AuthStorage, path: Path, message: str, **kwargs: Any) -> None:
    with pytest.raises(BackupError, match=message):
        restore_backup(storage, path, **kwargs)
    assert is_empty(storage), "a refused restore wrote something"


def test_an_unchanged_rewrite_keeps_the_signature(good_backup: Path, storage: AuthStorage) -> None:
    # The control for every test below: the helpers alone break nothing.
    copy = good_backup.with_name("copy.gz")
    rewrite(good_backup, copy, lambda body: None)
    assert read_backup(copy).signed_with == "SECRET_KEY"
    restore_backup(storage, copy)
    assert not is_empty(storage)


def test_planted_token_with_recomputed_checksum_is_refused(
    good_backup: Path, storage: AuthStorage
) -> None:
    planted = good_backup.with_name("planted.gz")
    raw = plant_token(good_backup, planted)
    refuse(storage, planted, FORGED)
    assert storage.get_token_by_access(tokens.digest(raw)) is None


@pytest.mark.parametrize(
    "edit",
    [
        "header-created-at",
        "header-source",
        "drop-a-record",
        "swap-two-records",
        "edit-a-record",
    ],
)
def test_the_signature_covers_header_every_line_and_the_counts(
    good_backup: Path, storage: AuthStorage, edit: str
) -> None:
    def change(body: list[bytes]) -> None:
        if edit.startswith("header"):
            header = json.loads(body[0])
            if edit == "header-created-at":  # make an old backup look fresh
                header["created_at"] = utcnow().isoformat()
            else:
                header["source_alias"] = "elsewhere"
            body[0] = dumps(header)
        elif edit == "drop-a-record":  # e.g. a revocation or an audit event
            del body[-1]
        elif edit == "swap-two-records":
            first, second = token_line_indexes(body)[:2]
            body[first], body[second] = body[second], body[first]
        else:
            line = json.loads(body[1])
            line["record"]["permissions"] = ["*"]
            body[1] = dumps(line)

    edited = good_backup.with_name("edited.gz")
    rewrite(good_backup, edited, change)
    refuse(storage, edited, FORGED)


@pytest.mark.parametrize(
    "claimed", ["é" * 64, "0" * 63 + "\u0661", "lone-surrogate", "", 12, None, ["a"]]
)
def test_a_signature_of_any_shape_is_refused_cleanly(
    good_backup: Path, storage: AuthStorage, claimed: Any
) -> None:
    # The trailer is not covered by the signature: whatever it holds is a clear refusal, never
    # a traceback (hmac.compare_digest raises TypeError on non-ASCII text).
    edited = good_backup.with_name("edited.gz")
    rewrite(good_backup, edited, lambda body: None, trailer_edit=lambda t: t.update(hmac=claimed))
    if claimed == "lone-surrogate":  # JSON can say "\ud800"; Python cannot encode it
        lines = raw_lines(edited)
        lines[-1] = lines[-1].replace(b'"lone-surrogate"', b'"\\ud800"')
        write_raw(edited, lines)
    refuse(storage, edited, "signature does not match|not signed")


def test_unsigned_file_is_refused(good_backup: Path, storage: AuthStorage) -> None:
    # The current format without its signature: refused always, there is no opt-in for it.
    unsigned = good_backup.with_name("unsigned.gz")
    rewrite(good_backup, unsigned, lambda body: None, trailer_edit=lambda t: t.pop("hmac"))
    refuse(storage, unsigned, "is not signed")
    refuse(storage, unsigned, "is not signed", allow_unsigned=True)


def test_legacy_unsigned_file_needs_the_unsafe_opt_in(
    good_backup: Path, storage: AuthStorage
) -> None:
    legacy = good_backup.with_name("legacy.gz")
    to_version_1(good_backup, legacy)
    refuse(storage, legacy, "unsigned backup .*--unsafe-allow-unsigned")
    with pytest.raises(BackupError, match="unsigned backup"):
        read_backup(legacy)

    info = read_backup(legacy, allow_unsigned=True)
    assert info.version == 1
    assert info.signed_with is None
    assert not info.signed
    report = restore_backup(storage, legacy, allow_unsigned=True)
    assert report.user_ids_unchecked
    assert sum(report.written.values()) == info.total

    # A planted token in a legacy file is exactly what the opt-in lets in: that is why it is
    # called unsafe. (Shown, not endorsed: the default refused it above.)
    storage.flush()
    planted = good_backup.with_name("planted-legacy.gz")
    raw = plant_token(legacy, planted)
    refuse(storage, planted, "unsigned backup")
    restore_backup(storage, planted, allow_unsigned=True)
    assert storage.get_token_by_access(tokens.digest(raw)) is not None


def test_key_rotation_old_key_in_fallbacks_is_accepted(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path, settings: Any
) -> None:
    settings.SECRET_KEY = "the-key-of-last-year-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = []
    data = populate(storage, make_user)
    path = tmp_path / "old-key.gz"
    storage.create_backup(path)
    storage.flush()

    settings.SECRET_KEY = "the-key-of-this-year-" + "y" * 40
    settings.SECRET_KEY_FALLBACKS = [
        "an-unrelated-key-" + "z" * 40,
        "the-key-of-last-year-" + "x" * 40,
    ]
    restore_backup(storage, path)
    assert snapshot(storage).tokens == data.tokens

    storage.flush()
    fallbacks = settings.SECRET_KEY_FALLBACKS
    settings.SECRET_KEY_FALLBACKS = []  # the old key retired: its backups are foreign now
    refuse(storage, path, FORGED)
    settings.SECRET_KEY_FALLBACKS = fallbacks
    assert read_backup(path).signed_with == "SECRET_KEY_FALLBACKS[1]"


def test_backup_of_another_project_is_refused(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path, settings: Any
) -> None:
    original = settings.SECRET_KEY
    settings.SECRET_KEY = "another-project-" + "q" * 40
    populate(storage, make_user)
    path = tmp_path / "foreign.gz"
    storage.create_backup(path)
    storage.flush()
    settings.SECRET_KEY = original
    refuse(storage, path, FORGED)


def test_restore_command_refuses_forged_and_unsigned_files(
    backend: str, aliases: Any, make_user: Callable[..., str], tmp_path: Path
) -> None:
    main = aliases(main=backend)["main"]
    populate(main, make_user, scale=2)
    path = tmp_path / "cmd.gz"
    call_command("authfw_backup", str(path), "--storage", "main", stdout=io.StringIO())
    main.flush()

    planted = tmp_path / "planted.gz"
    raw = plant_token(path, planted)
    for extra in ([], ["--merge"], ["--dry-run"], ["--unsafe-allow-unsigned"]):
        with pytest.raises(CommandError, match=rf"{FORGED}.*Nothing was restored"):
            call_command("authfw_restore", str(planted), "--storage", "main", *extra)
    assert is_empty(main)
    assert main.get_token_by_access(tokens.digest(raw)) is None

    legacy = tmp_path / "legacy.gz"
    to_version_1(path, legacy)
    with pytest.raises(CommandError, match=r"unsigned backup.*Nothing was restored"):
        call_command("authfw_restore", str(legacy), "--storage", "main")
    assert is_empty(main)
    out = io.StringIO()
    call_command(
        "authfw_restore", str(legacy), "--storage", "main", "--unsafe-allow-unsigned", stdout=out
    )
    assert "UNSIGNED" in out.getvalue()
    assert "not signed" in out.getvalue()
    assert not is_empty(main)

    main.flush()
    out = io.StringIO()
    call_command("authfw_restore", str(path), "--storage", "main", stdout=out)
    assert "signed with SECRET_KEY," in out.getvalue()
    assert "revoked" in out.getvalue()  # the replay caveat


def test_merge_of_an_older_backup_never_unrevokes(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path
) -> None:
    data = populate(storage, make_user)
    live = [t for t in data.tokens.values() if t.revoked_at is None]
    path = tmp_path / "before-logout.gz"
    storage.create_backup(path)
    # After the backup, the user logs out everywhere (or changes their password).
    at = utcnow()
    for token in live:
        assert storage.revoke_token(token.token_id, at=at)

    report = restore_backup(storage, path, if_not_empty="merge")
    for token in live:
        held = storage.get_token(token.token_id)
        assert held is not None, token.token_id
        assert held.revoked_at is not None, token.token_id
    assert report.kept_revoked == len(live)


def test_file_rewritten_in_place_during_the_restore_plants_nothing(
    storage: AuthStorage, make_user: Callable[..., str], tmp_path: Path
) -> None:
    # The attacker can write the file, so they can also rewrite it in place (same inode, no
    # rename) once the check has read it and while the import reads it again. The genuine file
    # is two gzip members (its decompressed bytes, hence its signature, unchanged); the first
    # is large, so the import has not reached the second when the first batch is written.
    # After that batch the attacker replaces the second member with a planted token line.
    populate(storage, make_user)
    storage.kv_set("bulk", os.urandom(1024 * 1024))  # keeps the import inside member one
    path = tmp_path / "good.gz"
    storage.create_backup(path)
    storage.flush()
    lines = raw_lines(path)
    split = len(lines) - 2  # member two: the last record line and the trailer
    first = gzip.compress(b"".join(lines[:split]), compresslevel=0)
    path.write_bytes(first + gzip.compress(b"".join(lines[split:])))
    assert read_backup(path).signed_with == "SECRET_KEY"  # still the genuine, signed file

    _raw, digest = raw_token_pair()
    template = json.loads(lines[token_line_indexes(lines)[0]])
    template["record"].update(
        token_id=tokens.new_id(),
        access_digest=digest,
        refresh_digest=None,
        refresh_expires_at=None,
        expires_at=(utcnow() + timedelta(days=365)).isoformat(),
        revoked_at=None,
        replaced_by=None,
        permissions=["*"],
    )
    forged = gzip.compress(dumps(template) + dumps({"kind": "end"}))
    rewritten: list[bool] = []

    def attacker(kind: str, done: int, total: int) -> None:
        if not rewritten:
            with open(path, "r+b") as f:
                f.seek(len(first))
                f.write(forged)
                f.truncate()
            rewritten.append(True)

    report = restore_backup(storage, path, batch_size=1, on_progress=attacker)
    assert rewritten, "the import never reported progress"
    assert storage.get_token_by_access(digest) is None, "a token nobody signed was restored"
    assert report.in_file == report.info.counts  # the import read the checked file
    assert storage.kv_get("bulk") is not None
