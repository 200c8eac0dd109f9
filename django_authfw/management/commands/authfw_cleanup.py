"""``manage.py authfw_cleanup``: remove expired tokens, sessions and key-value entries."""

from __future__ import annotations

from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from ...exceptions import StorageError
from ...records import CleanupCounts
from ...storage import AuthStorage
from ..progress import add_batch_size, open_storage, plural, selected_aliases, storage_failure


class Command(BaseCommand):
    help = (
        "Removes expired tokens, sessions and key-value entries from each storage, in short "
        "batches, while traffic continues. Run it from cron, like clearsessions."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--storage",
            action="append",
            dest="storages",
            metavar="ALIAS",
            help="Storage alias to clean (repeatable); default: every alias in AUTHFW['STORAGES'].",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be removed, remove nothing.",
        )
        add_batch_size(parser)

    def handle(
        self,
        *args: Any,
        storages: list[str] | None,
        dry_run: bool,
        batch_size: int,
        **options: Any,
    ) -> None:
        aliases = selected_aliases(storages)
        failures: list[CommandError] = []
        for alias in aliases:
            try:
                storage = open_storage(alias)
                counts = storage.cleanup_expired(batch_size=batch_size, dry_run=dry_run)
            except CommandError as exc:
                failures.append(exc)
                continue
            except StorageError as exc:
                # Go on with the other storages: one that is down should not keep the others
                # from being cleaned; the command still fails at the end.
                failures.append(storage_failure(alias, exc))
                continue
            self.stdout.write(self._line(alias, storage, counts, dry_run))
        if failures:
            for failure in failures[:-1]:
                self.stderr.write(str(failure))
            raise failures[-1]

    def _line(self, alias: str, storage: AuthStorage, counts: CleanupCounts, dry_run: bool) -> str:
        if not any(counts.values()):
            note = (
                " (its backend expires records by itself)"
                if getattr(storage, "native_expiry", False)
                else ""
            )
            return f"{alias}: nothing to clean up{note}."
        verb = "would remove" if dry_run else "removed"
        parts = ", ".join(
            [
                plural(counts["tokens"], "token"),
                plural(counts["sessions"], "session"),
                plural(counts["kv"], "key-value entry", "key-value entries"),
            ]
        )
        return f"{alias}: {verb} {parts}."
