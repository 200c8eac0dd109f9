"""``manage.py authfw_unlock``: lift a login lockout, as ``axes_reset_username`` does for axes."""

from __future__ import annotations

from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from ...exceptions import InvalidInput, StorageError
from ...framework import AuthFramework
from ...wording import sentence
from ..progress import plural


class Command(BaseCommand):
    help = (
        "Lifts the login lockout of a username and/or an IP address and forgets their failed "
        "attempts, so the next login is allowed at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", help="The username to unlock.")
        parser.add_argument("--ip", dest="ip_address", metavar="ADDRESS", help="The address.")
        parser.add_argument(
            "--storage",
            default="default",
            metavar="ALIAS",
            help="The AUTHFW['STORAGES'] alias the framework runs on (default: 'default'); "
            "the counters live there or in AUTHFW['LOCKOUT_STORAGE'].",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only report how long the lockout still lasts; change nothing.",
        )

    def handle(
        self,
        *args: Any,
        username: str | None,
        ip_address: str | None,
        storage: str,
        dry_run: bool,
        **options: Any,
    ) -> None:
        if not username and not ip_address:
            raise CommandError("Give --username, --ip, or both.")
        who = " and ".join(
            part
            for part in (
                f"username {username!r}" if username else "",
                f"address {ip_address}" if ip_address else "",
            )
            if part
        )
        try:
            framework = AuthFramework(storage)
            remaining = framework.lockout_remaining(username or None, ip_address or None)
            if dry_run:
                state = (
                    f"locked for {plural(remaining, 'more second')}" if remaining else "not locked"
                )
                self.stdout.write(f"{who}: {state}. Nothing changed (--dry-run).")
                return
            # Audited (``unlock``) as the admin's lift is, saying where it came from.
            removed = framework.reset_lockout(
                username=username or None,
                ip_address=ip_address or None,
                audit_metadata={"via": "command"},
            )
        except InvalidInput as exc:
            raise CommandError(f"{exc}") from exc
        except StorageError as exc:
            message = sentence(exc)
            settings = "AUTHFW['STORAGES'] and AUTHFW['LOCKOUT_STORAGE']"
            hint = (
                f"Its settings are {settings}; retry once it is back."
                if "Check " in message
                else f"Check {settings}, then retry."
            )
            raise CommandError(f"The lockout storage failed: {message} {hint}") from exc
        state = (
            f"was locked for {plural(remaining, 'more second')}" if remaining else "was not locked"
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Unlocked {who} ({state}); "
                f"{plural(removed, 'lockout entry', 'lockout entries')} removed."
            )
        )
