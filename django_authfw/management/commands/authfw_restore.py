"""``manage.py authfw_restore FILE``: restore a backup file into a storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from ...backup import (
    BackupError,
    BackupInfo,
    IfNotEmpty,
    RestoreReport,
    TargetNotEmpty,
    UserChange,
    check_user_model,
    read_backup,
    restore_backup,
)
from ...exceptions import StorageError
from ...storage import AuthStorage
from ...transfer import BY_NAME, counted_records, storage_is_empty
from ..progress import ProgressBar, add_batch_size, open_storage, plural, storage_failure


class Command(BaseCommand):
    help = (
        "Restores a backup written by authfw_backup into a storage, of any backend. The whole "
        "file is checked before anything is written, its signature included (SECRET_KEY or "
        "SECRET_KEY_FALLBACKS); users are matched by username; a storage that already holds "
        "records needs --merge or --replace."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help="Backup file written by authfw_backup.")
        parser.add_argument(
            "--storage",
            default="default",
            metavar="ALIAS",
            help="Storage alias to restore into (default: 'default').",
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--merge",
            action="store_true",
            help="Upsert the backup's records into a storage that already holds records.",
        )
        mode.add_argument(
            "--replace",
            action="store_true",
            help="Delete every record of the storage first (after the file has been checked).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check the file completely and whether the storage would take it; restore "
            "nothing.",
        )
        parser.add_argument(
            "--unsafe-allow-unsigned",
            action="store_true",
            dest="allow_unsigned",
            help="UNSAFE: accept an unsigned backup of format version 1 (written before "
            "backups were signed). Nothing proves who wrote such a file, and its user ids are "
            "taken as they are: use it only for a file you know is genuine, restored into the "
            "database it was taken from.",
        )
        add_batch_size(parser)

    def handle(
        self,
        *args: Any,
        file: str,
        storage: str,
        merge: bool,
        replace: bool,
        batch_size: int,
        dry_run: bool,
        allow_unsigned: bool = False,
        **options: Any,
    ) -> None:
        target = open_storage(storage)
        bar = ProgressBar(self.stdout, enabled=self.stdout.isatty())
        mode: IfNotEmpty = "merge" if merge else "replace" if replace else "error"
        if dry_run:
            self._dry_run(target, file, storage, mode, allow_unsigned)
            return
        try:
            with bar:
                report = restore_backup(
                    target,
                    Path(file),
                    if_not_empty=mode,
                    batch_size=batch_size,
                    on_progress=lambda kind, done, total: bar.update(
                        BY_NAME[kind].label, done, total
                    ),
                    allow_unsigned=allow_unsigned,
                )
        except BackupError as exc:
            raise CommandError(f"{exc} Nothing was restored.") from exc
        except TargetNotEmpty as exc:
            raise _not_empty(exc) from exc
        except StorageError as exc:
            raise CommandError(
                f"{storage_failure(storage, exc)} The restore may have stopped part-way; once "
                f"the storage is back, run authfw_restore {file} --storage {storage} --merge "
                "to finish it (records are upserted, nothing is duplicated)."
            ) from exc

        self._describe(report.info, file)
        if report.flushed:
            self.stdout.write(f"Deleted every record of {storage!r} first (--replace).")
        for name in report.in_file:
            self.stdout.write(f"  {BY_NAME[name].label + ':':<19} {_kind_line(report, name)}")
        if report.kept_revoked:
            self.stdout.write(
                f"Kept {plural(report.kept_revoked, 'token')} revoked: {storage!r} revoked them "
                "after the backup was written (--merge never un-revokes)."
            )
        self._describe_users(report)
        if report.written["tokens"] and report.mode != "merge":
            self.stdout.write(
                "Note: the restored tokens are as they were when the backup was written: a "
                "token revoked (logout, password change) after that works again until it "
                "expires. Revoke the tokens of any user concerned (revoke_user_tokens)."
            )
        if report.written["sessions"]:
            # A deleted session leaves nothing to compare with, so even --merge restores it.
            self.stdout.write(
                "Note: the restored sessions are as they were when the backup was written: a "
                "session ended since (logout, password change) is open again until it expires. "
                "End the sessions of any user concerned (end_user_sessions)."
            )

    def _describe(self, info: BackupInfo, file: str) -> None:
        written_at = info.created_at.strftime("%Y-%m-%d %H:%M:%S %Z")
        signed = f"signed with {info.signed_with}" if info.signed else "UNSIGNED (legacy)"
        self.stdout.write(
            f"Checked {file}: format version {info.version}, {signed}, written {written_at} "
            f"from {info.source_alias or '-'} ({info.source_backend})."
        )
        if info.signed_with not in (None, "SECRET_KEY"):
            self.stdout.write(
                f"Note: signed with an old key ({info.signed_with}); take a new backup so that "
                "it stays restorable once that key leaves SECRET_KEY_FALLBACKS."
            )
        if not info.signed:
            self.stdout.write(
                self.style.WARNING(
                    "Warning: this file is not signed (--unsafe-allow-unsigned): nothing proves "
                    "who wrote it. Its user ids are taken as they are, unchecked."
                )
            )

    def _describe_users(self, report: RestoreReport) -> None:
        if not report.user_changes:
            return
        self.stdout.write("Users matched by username, not by id:")
        for change in report.user_changes:
            self.stdout.write(f"  {_user_line(change)}")
        if report.user_changes_truncated:
            self.stdout.write(
                "  ... and more users (the counts above include them all; "
                "restore_backup() reports them in Python)."
            )

    def _dry_run(
        self, target: AuthStorage, file: str, storage: str, mode: IfNotEmpty, allow_unsigned: bool
    ) -> None:
        try:
            info = read_backup(Path(file), allow_unsigned=allow_unsigned)
            check_user_model(info, file)
        except BackupError as exc:
            raise CommandError(f"{exc} Nothing was restored.") from exc
        self._describe(info, file)
        for name, count in info.counts.items():
            self.stdout.write(f"  {BY_NAME[name].label + ':':<19} {count:,} in the file")
        try:
            empty = storage_is_empty(target)
        except StorageError as exc:
            raise storage_failure(storage, exc) from exc
        if not empty and mode == "error":
            raise _not_empty(
                TargetNotEmpty(
                    f"The storage {storage!r} already holds records; choose whether "
                    "to merge the backup into them or to replace them."
                )
            )
        how = {
            "error": f"into the empty storage {storage!r}",
            "merge": f"by merging it into {storage!r}",
            "replace": f"into {storage!r} after deleting every record it holds",
        }[mode]
        self.stdout.write(
            f"The file is sound and would be restored {how}. Nothing was restored (--dry-run)."
        )


def _kind_line(report: RestoreReport, name: str) -> str:
    parts = [f"restored {report.written[name]:,} of {report.in_file[name]:,}"]
    for count, what in (
        (report.skipped_expired[name], "skipped as expired"),
        (report.skipped_missing_user[name], "skipped (no user with that username here)"),
        (
            report.skipped_user_id_taken[name],
            "skipped (no user with that username here; its id is another user's)",
        ),
        (report.skipped_orphans[name], "skipped (user does not exist)"),
        (report.remapped[name], "moved to their username's id here"),
        (report.unattributed[name], "kept without a user (user not here)"),
        (report.not_written(name), "already present"),
    ):
        if count:
            parts.append(f"{count:,} {what}")
    return ", ".join(parts)


def _user_line(change: UserChange) -> str:
    who = f"{change.username!r}" if change.username is not None else "(unknown username)"
    records = ", ".join(
        counted_records(name, count) for name, count in change.records.items() if count
    )
    if change.outcome == "remapped":
        return (
            f"{who}: id {change.backup_user_id} in the backup is id {change.target_user_id} "
            f"here; moved {records}."
        )
    if change.outcome == "id_taken":
        return (
            f"{who} (id {change.backup_user_id} in the backup): no such user here, and id "
            f"{change.backup_user_id} here is {change.holder_of_id!r}; not given to them: "
            f"{records}."
        )
    if change.outcome == "no_username":
        # Its tokens and sessions are skipped, its audit events kept without a user.
        kept = change.records.get("audit", 0)
        skipped = ", ".join(
            counted_records(name, count)
            for name, count in change.records.items()
            if count and name != "audit"
        )
        what = [f"not restored: {skipped}"] if skipped else []
        what += [f"kept without a user: {counted_records('audit', kept)}"] if kept else []
        return (
            f"{who} (id {change.backup_user_id} in the backup, already deleted when it was "
            f"written): {'; '.join(what)}."
        )
    return f"{who} (id {change.backup_user_id} in the backup): no such user here: {records}."


def _not_empty(exc: TargetNotEmpty) -> CommandError:
    return CommandError(
        f"{exc} Pass --merge to upsert the backup's records into it, or --replace to delete "
        "everything it holds first. Nothing was restored."
    )
