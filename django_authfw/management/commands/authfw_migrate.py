"""``manage.py authfw_migrate``: copy records from one storage alias to another."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from ...exceptions import InvalidInput, StorageError
from ...migration import MigrationReport, StorageMigration, parse_kinds
from ...records import utcnow
from ...transfer import BY_NAME
from ..progress import (
    ProgressBar,
    add_batch_size,
    check_alias,
    open_storage,
    plural,
    storage_failure,
)

LISTED_MISMATCHES = 20


def parse_since(text: str) -> datetime:
    """argparse ``type`` for ``--since``: ISO 8601; without an offset, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date and time (like 2025-06-01T12:00:00+00:00)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Copies tokens, sessions, key-value entries and audit events from one storage alias to "
        "another. Records are upserted, so running it again adds nothing and finishes an "
        "interrupted run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from", dest="source", required=True, metavar="ALIAS", help="Source storage alias."
        )
        parser.add_argument(
            "--to", dest="target", required=True, metavar="ALIAS", help="Target storage alias."
        )
        parser.add_argument(
            "--only",
            metavar="KINDS",
            help="Comma-separated kinds to migrate: tokens,sessions,kv,audit (default: all).",
        )
        add_batch_size(parser)
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Read every copied record back from the target and compare it field by "
            "field; exit with an error on any mismatch.",
        )
        parser.add_argument(
            "--preserve-ttl",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Keep every record's expiry instant (default). --no-preserve-ttl gives live "
            "records the lifetimes of the AUTHFW TTL settings, counted from now.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read the source and count what would be copied; write nothing.",
        )
        parser.add_argument(
            "--missing-only",
            action="store_true",
            help="Catch-up pass after switching a live site to the target: never overwrite a "
            "record the target holds (only carry token revocations over); copy missing ones.",
        )
        parser.add_argument(
            "--since",
            type=parse_since,
            metavar="ISO-8601",
            help="With --missing-only: copy only missing records created at or after this "
            "instant (the 'Finished at' time the first pass printed). No offset means UTC.",
        )

    def handle(
        self,
        *args: Any,
        source: str,
        target: str,
        only: str | None,
        batch_size: int,
        verify: bool,
        preserve_ttl: bool,
        dry_run: bool,
        missing_only: bool,
        since: datetime | None,
        **options: Any,
    ) -> None:
        check_alias(source)
        check_alias(target)
        if source == target:
            raise CommandError(
                f"--from and --to both name {source!r}; give two different storage aliases."
            )
        try:
            kinds = parse_kinds(only)
        except InvalidInput as exc:
            raise CommandError(f"--only: {exc}") from exc
        if since is not None and not missing_only:
            raise CommandError("--since only applies with --missing-only.")
        source_storage, target_storage = open_storage(source), open_storage(target)

        bar = ProgressBar(self.stdout, enabled=self.stdout.isatty())
        migration = StorageMigration(
            source_storage,
            target_storage,
            batch_size=batch_size,
            verify=verify and not dry_run,
            preserve_ttl=preserve_ttl,
            dry_run=dry_run,
            missing_only=missing_only,
            since=since,
            on_progress=lambda kind, done, total: bar.update(BY_NAME[kind].label, done, total),
        )
        mode = [f"batch size {batch_size}"]
        mode.append("preserving expiries" if preserve_ttl else "expiries from AUTHFW TTLs")
        if verify and not dry_run:
            mode.append("verifying")
        if missing_only:
            mode.append("missing records only")
        if since is not None:
            mode.append(f"created since {since.isoformat()}")
        if dry_run:
            mode.append("dry run: nothing is written")
        self.stdout.write(f"Migrating {source} -> {target} ({', '.join(mode)})")

        reports: list[MigrationReport] = []
        methods = {
            "tokens": migration.migrate_tokens,
            "sessions": migration.migrate_sessions,
            "kv": migration.migrate_kv_data,
            "audit": migration.migrate_audit,
        }
        with bar:
            for name in kinds:
                try:
                    report = methods[name]()
                except StorageError as exc:
                    bar.finish()
                    failed = target if migration.failed_storage is target_storage else source
                    raise CommandError(
                        f"{storage_failure(failed, exc)} The migration stopped part-way; what "
                        "was copied stays. Run the same command again to finish it: records "
                        "are upserted, so nothing is duplicated."
                    ) from exc
                reports.append(report)
                bar.finish()
                self.stdout.write(self._line(report, verify=migration.verify))

        if not dry_run:
            self.stdout.write(f"Finished at {utcnow().isoformat()}.")
        count = sum(report.mismatch_count for report in reports)
        if count:
            listed = [m for report in reports for m in report.mismatches]
            for mismatch in listed[:LISTED_MISMATCHES]:
                self.stderr.write(f"  mismatch: {mismatch}")
            if count > LISTED_MISMATCHES:
                self.stderr.write(f"  ... and {count - LISTED_MISMATCHES:,} more")
            raise CommandError(
                f"Verification found {plural(count, 'mismatch', 'mismatches')} between "
                f"{source!r} and {target!r}. Check that the target's backend stores every "
                "field, then run the migration again."
            )

    def _line(self, report: MigrationReport, *, verify: bool) -> str:
        kind = BY_NAME[report.kind]
        verb = "would copy" if report.dry_run else "copied"
        parts = [f"{verb} {report.copied:,} of {report.read:,} read"]
        if report.skipped_expired:
            parts.append(f"{report.skipped_expired:,} skipped as expired")
        if report.skipped_orphans:
            parts.append(f"{report.skipped_orphans:,} skipped (their user does not exist)")
        if report.skipped_present:
            parts.append(f"{report.skipped_present:,} already in the target left as they are")
        if report.revocations_carried:
            parts.append(f"{plural(report.revocations_carried, 'revocation')} carried over")
        if report.skipped_older:
            parts.append(f"{report.skipped_older:,} missing but older than --since")
        if report.skipped_by_target:
            already = "already present" if kind.name == "audit" else "not written by the target"
            parts.append(f"{report.skipped_by_target:,} {already}")
        if verify:
            parts.append(f"{report.verified:,} verified")
            if report.expired_before_verify:
                parts.append(f"{report.expired_before_verify:,} expired before the check")
            parts.append(plural(report.mismatch_count, "mismatch", "mismatches"))
        return f"  {kind.label + ':':<19} {', '.join(parts)} ({report.seconds:.1f} s)"
