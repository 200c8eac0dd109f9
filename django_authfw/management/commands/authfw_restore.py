"""``manage.py authfw_restore FILE``: restore a backup file into a storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from ...backup import (
    BackupError,
    BackupInfo,
    IfNotEmpty,
    TargetNotEmpty,
    read_backup,
    restore_backup,
)
from ...exceptions import StorageError
from ...storage import AuthStorage
from ...transfer import BY_NAME, storage_is_empty
from ..progress import ProgressBar, add_batch_size, open_storage, storage_failure


class Command(BaseCommand):
    help = (
        "Restores a backup written by authfw_backup into a storage, of any backend. The whole "
        "file is checked before anything is written; a storage that already holds records "
        "needs --merge or --replace."
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
        **options: Any,
    ) -> None:
        target = open_storage(storage)
        bar = ProgressBar(self.stdout, enabled=self.stdout.isatty())
        mode: IfNotEmpty = "merge" if merge else "replace" if replace else "error"
        if dry_run:
            self._dry_run(target, file, storage, mode)
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
        for name, in_file in report.in_file.items():
            parts = [f"restored {report.written[name]:,} of {in_file:,}"]
            if report.skipped_expired[name]:
                parts.append(f"{report.skipped_expired[name]:,} skipped as expired")
            if report.skipped_orphans[name]:
                parts.append(f"{report.skipped_orphans[name]:,} skipped (user does not exist)")
            already = in_file - report.written[name]
            already -= report.skipped_expired[name] + report.skipped_orphans[name]
            if already:
                parts.append(f"{already:,} already present")
            self.stdout.write(f"  {BY_NAME[name].label + ':':<19} {', '.join(parts)}")

    def _describe(self, info: BackupInfo, file: str) -> None:
        written_at = info.created_at.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.stdout.write(
            f"Checked {file}: format version {info.version}, written {written_at} from "
            f"{info.source_alias or '-'} ({info.source_backend})."
        )

    def _dry_run(self, target: AuthStorage, file: str, storage: str, mode: IfNotEmpty) -> None:
        try:
            info = read_backup(Path(file))
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


def _not_empty(exc: TargetNotEmpty) -> CommandError:
    return CommandError(
        f"{exc} Pass --merge to upsert the backup's records into it, or --replace to delete "
        "everything it holds first. Nothing was restored."
    )
