"""``manage.py authfw_stats``: counts and sizes of each storage, as a table or JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from ...exceptions import StorageError
from ...records import StorageStatistics
from ..progress import open_storage, selected_aliases, storage_failure

# Rows of the table, in the order docs/commands.md shows them; JSON uses the same keys.
ROWS: tuple[tuple[str, str], ...] = (
    ("backend", "backend"),
    ("total_tokens", "tokens"),
    ("active_tokens", "  active"),
    ("expired_tokens", "  expired"),
    ("revoked_tokens", "  revoked"),
    ("total_sessions", "sessions"),
    ("active_sessions", "  active"),
    ("kv_entries", "key-value entries"),
    ("audit_events", "audit events"),
    ("database_size_mb", "database size (MB)"),
    ("memory_used_bytes", "memory used (bytes)"),
)


class Command(BaseCommand):
    help = (
        "Shows token, session, key-value and audit counts of each storage, with the database "
        "size on PostgreSQL and the memory our keys use on Redis."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--storage",
            action="append",
            dest="storages",
            metavar="ALIAS",
            help="Storage alias to report (repeatable); default: every alias in "
            "AUTHFW['STORAGES'].",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help='Print {"alias": {"total_tokens": ..., ...}} as JSON instead of a table.',
        )

    def handle(self, *args: Any, storages: list[str] | None, as_json: bool, **options: Any) -> None:
        results: dict[str, StorageStatistics] = {}
        for alias in selected_aliases(storages):
            storage = open_storage(alias)
            try:
                results[alias] = storage.statistics()
            except StorageError as exc:
                raise storage_failure(alias, exc) from exc
            except NotImplementedError as exc:
                raise CommandError(
                    f"Storage {alias!r} ({type(storage).__name__}) cannot report statistics: {exc}"
                ) from exc
        if as_json:
            self.stdout.write(json.dumps(results, indent=2, sort_keys=False))
            return
        self.stdout.write(self._table(results))

    def _table(self, results: dict[str, StorageStatistics]) -> str:
        header = ["", *results]
        rows = [header]
        for key, label in ROWS:
            rows.append([label, *(_cell(stats.get(key)) for stats in results.values())])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for number, row in enumerate(rows):
            # Counts line up on the right; the heading and the backend names on the left.
            numeric = number > 0 and row[0] != "backend"
            cells = [row[0].ljust(widths[0])]
            for i, cell in enumerate(row[1:], start=1):
                cells.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
            lines.append("  ".join(cells).rstrip())
            if number == 0:
                lines.append("  ".join("-" * width for width in widths))
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)
