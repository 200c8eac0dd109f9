"""``manage.py demo``: migrate, make an admin user, print where to go, run the server.

``bash testproject/demo.sh`` runs it with ``testproject.demo.settings``.
"""

from __future__ import annotations

import secrets
import socket
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, CommandError, CommandParser, call_command
from django.core.management.commands.runserver import naiveip_re
from django.db import DatabaseError, connection

from django_authfw.conf import conf


class Command(BaseCommand):
    help = (
        "Sets up and serves the django_authfw demo: applies migrations, creates or updates an "
        "admin user with a fresh password, prints the URL and the login, then runs the "
        "development server."
    )

    # Checked in handle(), after the port: some checks open the database, which must not be
    # touched (not even created) when the demo cannot serve.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            default="127.0.0.1:8000",
            metavar="ADDR:PORT",
            help="Where to serve, as for runserver: 8001, 127.0.0.1:8001 or [::1]:8001 "
            "(default: 127.0.0.1:8000).",
        )
        parser.add_argument("--username", default="admin", help="Admin username (default: admin).")
        parser.add_argument(
            "--password", help="Admin password (default: a new random one on every run)."
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Set up and print the login, but do not start the server.",
        )

    def handle(
        self,
        *args: Any,
        addrport: str,
        username: str,
        password: str | None,
        no_serve: bool,
        **options: Any,
    ) -> None:
        host, port = _parse_addrport(addrport)
        if not no_serve:
            # Before anything changes: a taken port must not cost the admin its password.
            _check_port_free(host, port)
        self.check()
        try:
            call_command("migrate", interactive=False, verbosity=0)
        except DatabaseError as exc:
            raise CommandError(
                f"Could not migrate the database ({self._database()}): {exc}. "
                "Check DATABASE_URL, or unset it to use SQLite."
            ) from exc
        password = password or secrets.token_urlsafe(12)
        self._admin(username, password)

        url = f"http://{host}:{port}/"
        lines = [
            "",
            "django_authfw demo",
            f"  demo page:  {url}",
            f"  admin:      {url}admin/",
            f"  login:      username {username!r}, password {password!r}",
            f"  database:   {self._database()}",
            f"  tokens in:  {self._tokens()}",
            "",
        ]
        self.stdout.write("\n".join(lines))
        if no_serve:
            return
        # No autoreloader: one process, so in-memory (locmem) storage keeps its tokens.
        call_command("runserver", f"{host}:{port}", use_reloader=False)

    def _admin(self, username: str, password: str) -> None:
        model = get_user_model()
        lookup: dict[str, Any] = {model.USERNAME_FIELD: username}
        user, _ = model._default_manager.get_or_create(**lookup)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()

    @staticmethod
    def _database() -> str:
        db = settings.DATABASES["default"]
        if connection.vendor == "sqlite":
            return f"SQLite, {db['NAME']}"
        return f"{connection.display_name}, {db.get('NAME')} on {db.get('HOST') or 'localhost'}"

    @staticmethod
    def _tokens() -> str:
        config = conf.STORAGES["default"]
        backend = config.get("BACKEND", "?").rsplit(".", 1)[-1]
        cache = (config.get("OPTIONS") or {}).get("cache")
        if cache:
            location = settings.CACHES[cache].get("LOCATION", "")
            kind = settings.CACHES[cache]["BACKEND"].rsplit(".", 1)[-1]
            return f"{backend} on the {cache!r} cache ({kind} {location})"
        return f"{backend} (the admin shows them)"


_USAGE = "bash testproject/demo.sh [ADDR:PORT], for example bash testproject/demo.sh 127.0.0.1:8001"


def _parse_addrport(addrport: str) -> tuple[str, int]:
    """``(host, port)`` of runserver's ``[ADDR:]PORT`` (host as a URL shows it: ``[::1]``)."""
    match = naiveip_re.match(addrport)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise CommandError(f"{addrport!r} is not an address and port. Usage: {_USAGE}")
    return match["addr"] or "127.0.0.1", int(match["port"])


def _check_port_free(host: str, port: int) -> None:
    """Raise CommandError if the server could not listen on ``host:port``.

    Bound the way runserver binds (``SO_REUSEADDR``: a port left in TIME_WAIT is free).
    """
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bare, port))
        except OSError as exc:
            raise CommandError(
                f"Cannot serve on {host}:{port} ({exc.strerror or exc}); another server may be "
                f"running there. Nothing was changed. Choose another port with the ADDR:PORT "
                f"argument: {_USAGE}"
            ) from None
