"""``manage.py authfw_backup FILE``: write every record of a storage to a backup file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from ...backup import write_backup
from ...exceptions import InvalidInput, StorageError
from ...transfer import BY_NAME, counted_records
from ..progress import ProgressBar, add_batch_size, open_storage, plural, storage_failure


class Command(BaseCommand):
    help = (
        "Writes every token (as digests), session, key-value entry and audit event of a "
        "storage, with each user's username, to a compressed backup file signed with a key "
        "derived from SECRET_KEY (mode 0600), atomically."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help="Path of the backup file to write.")
        parser.add_argument(
            "--storage",
            default="default",
            metavar="ALIAS",
            help="Storage alias to back up (default: 'default').",
        )
        add_batch_size(parser)

    def handle(self, *args: Any, file: str, storage: str, batch_size: int, **options: Any) -> None:
        source = open_storage(storage)
        bar = ProgressBar(self.stdout, enabled=self.stdout.isatty())
        try:
            with bar:
                counts = write_backup(
                    source,
                    Path(file),
                    batch_size=batch_size,
                    on_progress=lambda kind, done: bar.update(BY_NAME[kind].label, done, None),
                )
        except InvalidInput as exc:
            raise CommandError(str(exc)) from exc
        except StorageError as exc:
            raise CommandError(
                f"{storage_failure(storage, exc)} No backup file was written."
            ) from exc
        except OSError as exc:
            raise CommandError(
                f"Cannot write {file}: {exc.strerror or exc}. No backup file was written."
            ) from exc
        total = sum(counts.values())
        details = ", ".join(counted_records(name, counts[name]) for name in counts)
        self.stdout.write(f"Wrote {plural(total, 'record')} of {storage!r} to {file} ({details}).")
