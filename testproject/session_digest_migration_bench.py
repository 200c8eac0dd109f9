"""Time migration 0005 (``Session.id_digest``, filled for existing sessions) on a filled table.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/authfw_digest_bench \\
        .venv/bin/python testproject/session_digest_migration_bench.py [SESSIONS]
    DATABASE_URL=sqlite:////tmp/authfw_digest_bench.sqlite3 \\
        .venv/bin/python testproject/session_digest_migration_bench.py [SESSIONS]

Use a database of its own, created empty beforehand (``createdb``) and dropped afterwards: the
script migrates it, adds a user, migrates ``django_authfw`` back to ``0004``, inserts
``SESSIONS`` (default 100,000) sessions without a digest, and times ``migrate django_authfw
0005``, the whole command (the fill and the ``NOT NULL`` and unique index after it). The figures
in docs/admin.md ("Sessions") come from this script.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from django_authfw.models import Session  # noqa: E402


def main(count: int) -> None:
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(username="digest-bench", password=None)
    call_command("migrate", "django_authfw", "0004", verbosity=0)
    table = connection.ops.quote_name(Session._meta.db_table)
    columns = "session_id, user_id, data, created_at, last_accessed, user_agent"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT md5(g::text) || md5((g * 7)::text), "
                "%s, '{}'::jsonb, now(), now(), 'bench' FROM generate_series(1, %s) g",
                [user.pk, count],
            )
        else:
            now = "2026-12-01 00:00:00"
            rows = [
                (hashlib.md5(str(n).encode()).hexdigest() * 2, user.pk, "{}", now, now, "bench")
                for n in range(count)
            ]
            cursor.executemany(
                f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
    start = time.perf_counter()
    call_command("migrate", "django_authfw", "0005", verbosity=0)
    elapsed = time.perf_counter() - start
    missing = Session.objects.filter(id_digest__isnull=True).count()
    print(f"{connection.vendor}: migrate 0005 over {count:,} sessions: {elapsed:.2f} s")
    if missing:
        raise SystemExit(f"{missing} sessions have no digest")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
