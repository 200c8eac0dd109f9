"""Time the admin's auth dashboard and audit search on PostgreSQL with a million audit events.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python testproject/dashboard_bench.py [--rows 1000000] [--days 30]
        [--database authfw_dashboard_bench] [--repeat 5] [--explain] [--reload]

The server of ``DATABASE_URL`` gets a database of its own (``--database``, default
``authfw_dashboard_bench``; the name must contain "bench", because the script empties its
tables), created if missing and migrated. Unless it already holds ``--rows`` audit events, the
audit table is filled by one ``INSERT ... SELECT`` over ``generate_series`` (a realistic mix:
logins, failed logins from a few hot addresses and usernames, refreshes, revocations, sessions,
lockouts, reuse detections), spread evenly over the last ``--days`` days, with 1,000 users,
100,000 tokens and 20,000 sessions beside them; then ``VACUUM ANALYZE``, as autovacuum would.

Then, for each dashboard window, it runs every panel's queries
(``django_authfw.dashboard_queries.build``, what the page runs) ``--repeat`` times after one
warm-up and prints the fastest, the median and the slowest, the number of queries and the
median time spent in them (SQL); then the whole page through Django's test client (session,
queries, template); then the counting statement of the dashboard's charts against the obvious
``GROUP BY date_trunc(...)``; then the audit list's search. ``--explain`` prints
``EXPLAIN (ANALYZE, BUFFERS)`` of every dashboard query of the 24-hour and 30-day windows.
The figures in docs/admin.md come from this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
    "curl/8.8.0",
]

# The mix of events: (action, success?, share). Shares add up to 1.
MIX = [
    ("login", True, 0.36),
    ("login", False, 0.08),
    ("refresh", True, 0.26),
    ("refresh", False, 0.015),
    ("refresh_grace", True, 0.005),
    ("refresh_reuse", False, 0.0005),
    ("revoke", True, 0.0395),
    ("revoke_all", True, 0.005),
    ("register", True, 0.01),
    ("session_create", True, 0.08),
    ("session_end", True, 0.07),
    ("lockout", False, 0.003),
    ("password_change", True, 0.002),
    ("user_deactivated", True, 0.0005),
    ("unlock", True, 0.0005),
    ("logout", True, 0.069),
]
ATTACKED = ["admin", "root", "test", "guest", "oracle", "support", "info", "user"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="audit events (1000000)")
    parser.add_argument("--days", type=int, default=30, help="spread over this many days (30)")
    parser.add_argument("--database", default="authfw_dashboard_bench", help="database name")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (5)")
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    parser.add_argument("--reload", action="store_true", help="refill even if already full")
    args = parser.parse_args()
    if "bench" not in args.database:
        parser.error("--database must contain 'bench': the script empties its tables")
    if args.rows < 1 or args.days < 1 or args.repeat < 1:
        parser.error("--rows, --days and --repeat must be positive")
    return args


def use_database(name: str) -> None:
    """Create ``name`` on DATABASE_URL's server if missing; point Django's settings at it."""
    url = os.environ.get("DATABASE_URL", "")
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        sys.exit("DATABASE_URL must be a postgres:// URL: the figures are PostgreSQL's.")
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def load(rows: int, days: int) -> None:
    """Fill the tables: users, tokens, sessions, and ``rows`` audit events over ``days``."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from django_authfw.models import AuditLog, Session, Token

    audit = AuditLog._meta.db_table
    users = get_user_model()._meta.db_table
    cases = []
    edge = 0.0
    for action, success, share in MIX:
        edge += share
        cases.append(f"WHEN r < {edge:.6f} THEN ARRAY['{action}', '{str(success).lower()}']")
    kind = "CASE " + " ".join(cases) + " ELSE ARRAY['logout', 'true'] END"
    agents = ", ".join("'" + agent.replace("'", "''") + "'" for agent in AGENTS)
    attacked = ", ".join(f"'{name}'" for name in ATTACKED)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {audit}, {Token._meta.db_table}, {Session._meta.db_table}")
        # Parameters (none) given: "%%" is a literal "%" in these statements.
        cursor.execute(f"DELETE FROM {users} WHERE username LIKE 'bench-user-%%'", [])
        cursor.execute(
            f"INSERT INTO {users} (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) SELECT '!', false, 'bench-user-' || i, "
            "'', '', '', false, true, now() FROM generate_series(1, 1000) AS i"
        )
        cursor.execute(
            f"INSERT INTO {Token._meta.db_table} (token_id, user_id, access_token, "
            "refresh_token, token_type, family_id, expires_at, refresh_expires_at, "
            "retain_until, created_at, updated_at, revoked_at, replaced_by, permissions, roles, "
            "metadata) SELECT left(md5('t' || i), 22), u.id, md5('a' || i) || md5('A' || i), "
            "md5('r' || i) || md5('R' || i), 'Bearer', left(md5('f' || i), 22), "
            "now() + (random() * 2 - 1) * interval '1 hour', now() + interval '30 days', "
            "now() + interval '30 days', now() - interval '1 hour', now() - interval '1 hour', "
            "CASE WHEN random() < 0.1 THEN now() END, NULL, '[]', '[]', '{}' "
            "FROM generate_series(1, 100000) AS i JOIN "
            f"(SELECT id, row_number() OVER () AS n FROM {users} "
            "WHERE username LIKE 'bench-user-%%') AS u ON u.n = 1 + i %% 1000",
            [],
        )
        cursor.execute(
            # id_digest is the SHA-256 of the id, as every write of the framework sets it
            # (migration 0005 made it NOT NULL).
            f"INSERT INTO {Session._meta.db_table} (session_id, user_id, data, created_at, "
            "last_accessed, expires_at, ip_address, user_agent, id_digest) SELECT s.id, u.id, "
            "'{}', now() - interval '1 hour', now(), "
            "now() + (random() * 2 - 1) * interval '1 day', '10.1.2.3', 'curl/8.8.0', "
            "encode(sha256(convert_to(s.id, 'UTF8')), 'hex') "
            "FROM generate_series(1, 20000) AS i "
            "CROSS JOIN LATERAL (SELECT md5('s' || i) || left(md5('S' || i), 11) AS id) AS s JOIN "
            f"(SELECT id, row_number() OVER () AS n FROM {users} "
            "WHERE username LIKE 'bench-user-%%') AS u ON u.n = 1 + i %% 1000",
            [],
        )
        # The audit table's indexes are dropped for the load and built again after it (a bulk
        # build is several times faster than a million inserts into eight indexes); the
        # unique constraint on event_id stays.
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT "
            "IN (SELECT conindid::regclass::text FROM pg_constraint WHERE conrelid = %s::regclass)",
            [audit, audit],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        # Rows in time order, as an application appends them; the newest is now.
        cursor.execute(
            f"""
            WITH g AS (
                SELECT i, random() AS r, random() AS u, random() AS v, random() AS w
                FROM generate_series(1, %(rows)s) AS i
            ), s AS (
                SELECT i, u, v, w, k[1] AS action, k[2]::boolean AS outcome,
                    1 + floor(u * u * 20000)::int AS uid
                FROM (SELECT *, {kind} AS k FROM g) AS picked
            ), named AS (
                SELECT *, CASE
                    WHEN v < .3 THEN (ARRAY[{attacked}])[1 + floor(w * 8)::int]
                    ELSE 'user' || uid END AS attempted
                FROM s
            )
            INSERT INTO {audit} (event_id, user_id, action, resource, outcome, ip_address,
                                 user_agent, created_at, metadata)
            SELECT
                md5('authfw-bench:' || i),
                CASE WHEN action = 'login' AND NOT outcome AND v < .3 THEN NULL
                     ELSE uid::text END,
                action,
                CASE WHEN action IN ('login', 'lockout') AND NOT outcome
                         THEN 'username:' || attempted
                     WHEN action IN ('revoke', 'refresh_reuse')
                         THEN 'token:' || left(md5('t' || i), 22)
                     WHEN action IN ('session_create', 'session_end')
                         THEN 'session:' || left(md5('s' || i), 12) || '…'
                END,
                outcome,
                CASE WHEN NOT outcome AND w < .4
                         THEN ('203.0.113.' || (1 + floor(w * 100))::int)::inet
                     ELSE ('10.' || (uid / 256 %% 256) || '.' || (uid %% 256) || '.'
                           || (1 + floor(w * 3))::int)::inet
                END,
                (ARRAY[{agents}])[1 + floor(w * {len(AGENTS)})::int],
                now() - interval '%(days)s days' * (1 - (i - 0.5) / %(rows)s),
                CASE
                    WHEN action = 'login' AND NOT outcome THEN jsonb_build_object(
                        'username', attempted,
                        'reason', CASE WHEN v < .3 THEN 'unknown_user'
                                       ELSE 'wrong_password' END)
                    WHEN action IN ('login', 'refresh', 'refresh_grace') THEN jsonb_build_object(
                        'token_id', left(md5('t' || i), 22),
                        'family_id', left(md5('f' || uid), 22))
                    WHEN action = 'refresh_reuse' THEN jsonb_build_object(
                        'token_id', left(md5('t' || i), 22),
                        'family_id', left(md5('f' || uid), 22),
                        'replaced_by', left(md5('r' || i), 22), 'revoked', 2)
                    WHEN action = 'revoke' THEN jsonb_build_object(
                        'token_id', left(md5('t' || i), 22),
                        'token_type_hint', 'access_token', 'count', 1)
                    WHEN action = 'revoke_all' THEN jsonb_build_object(
                        'count', 1 + floor(w * 5)::int)
                    WHEN action = 'lockout' THEN jsonb_build_object(
                        'username', attempted, 'scope', 'user', 'window', 900)
                    WHEN action IN ('session_create', 'session_end')
                        THEN jsonb_build_object('count', 1)
                    ELSE '{{}}'::jsonb
                END
            FROM named ORDER BY i
            """,
            {"rows": rows, "days": days},
        )
        for _, definition in indexes:
            cursor.execute(definition)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {audit}")
        cursor.execute(f"VACUUM ANALYZE {Token._meta.db_table}")
        cursor.execute(f"VACUUM ANALYZE {Session._meta.db_table}")


@contextmanager
def sql_timer() -> Iterator[list[float]]:
    """Times every query run inside; yields the list the durations (s) land in."""
    from django.db import connection

    spent: list[float] = []

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql, params, many, ctx)
        finally:
            spent.append(time.perf_counter() - began)

    with connection.execute_wrapper(wrapper):
        yield spent


def timed(run: Callable[[], object], repeat: int) -> tuple[list[float], list[float], int]:
    """Wall times and SQL times (ms) of ``repeat`` runs after a warm-up; queries per run."""
    run()
    walls, sqls, queries = [], [], 0
    for _ in range(repeat):
        with sql_timer() as spent:
            began = time.perf_counter()
            run()
            walls.append((time.perf_counter() - began) * 1000)
        sqls.append(sum(spent) * 1000)
        queries = len(spent)
    return walls, sqls, queries


def row(name: str, walls: list[float], sqls: list[float], queries: int) -> str:
    return (
        f"{name:<34} {min(walls):8.0f} {statistics.median(walls):8.0f} {max(walls):8.0f} "
        f"{statistics.median(sqls):8.0f} {queries:8d}"
    )


def explain(window_key: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_authfw import dashboard_queries

    with CaptureQueriesContext(connection) as captured:
        dashboard_queries.build(dashboard_queries.window_named(window_key))
    for query in captured.captured_queries:
        sql = query["sql"].strip()
        if not sql.upper().startswith(("SELECT", "WITH")):
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = "\n".join(line for (line,) in cursor.fetchall())
        print(f"\n-- {window_key}: {' '.join(sql.split())[:160]}...\n{plan}")


def main() -> None:
    args = parse_args()
    use_database(args.database)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count
    from django.db.models.functions import Trunc
    from django.test import Client
    from django.utils import timezone

    from django_authfw import dashboard_queries
    from django_authfw.dashboard_counts import period_counts
    from django_authfw.models import AuditLog

    call_command("migrate", verbosity=0)
    present = AuditLog.objects.count()
    if args.reload or present != args.rows:
        print(f"Loading {args.rows:,} audit events over {args.days} days...", flush=True)
        began = time.perf_counter()
        load(args.rows, args.days)
        print(f"  loaded in {time.perf_counter() - began:.0f} s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        (version,) = cursor.fetchone() or ("?",)
        cursor.execute(
            "SELECT pg_size_pretty(pg_total_relation_size(%s))", [AuditLog._meta.db_table]
        )
        (size,) = cursor.fetchone() or ("?",)
    print(
        f"{version.split(' on ')[0]}; audit table with its indexes: {size}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )

    admin = get_user_model()._default_manager.filter(username="bench-admin").first()
    if admin is None:
        admin = get_user_model()._default_manager.create_superuser(
            "bench-admin", "bench@example.invalid", None
        )
    client = Client()
    client.force_login(admin)

    print(
        f"\n{f'ms ({args.repeat} runs)':<34} {'fastest':>8} {'median':>8} {'slowest':>8} "
        f"{'SQL':>8} {'queries':>8}"
    )
    for window in dashboard_queries.WINDOWS:

        def panels(window: dashboard_queries.Window = window) -> None:
            dashboard_queries.build(window)

        walls, sqls, queries = timed(panels, args.repeat)
        print(row(f"dashboard panels, {window.key}", walls, sqls, queries))
    for window in dashboard_queries.WINDOWS:
        url = f"/admin/django_authfw/auditlog/dashboard/?window={window.key}"

        def page(url: str = url) -> None:
            response = client.get(url)
            assert response.status_code == 200, response.status_code

        walls, sqls, queries = timed(page, args.repeat)
        print(row(f"whole dashboard page, {window.key}", walls, sqls, queries))
    # The counting statement against the obvious GROUP BY, on the same data, back to back;
    # the GROUP BY gets an index of its own that holds every column it reads, for the while.
    table = AuditLog._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS bench_group_by ON {table} (created_at, action, outcome)"
        )
        cursor.execute(f"VACUUM ANALYZE {table}")
    for window in dashboard_queries.WINDOWS:
        zone = timezone.get_current_timezone()
        starts = window.starts(timezone.now(), zone)
        end = window.end(starts, zone)
        bucket_zone = zone if window.unit == "day" else UTC

        def ranges(starts: list[datetime] = starts, end: datetime = end) -> None:
            period_counts([*starts, end])

        def group_by(
            starts: list[datetime] = starts,
            end: datetime = end,
            unit: str = window.unit,
            bucket_zone: tzinfo = bucket_zone,
        ) -> None:
            list(
                AuditLog.objects.filter(created_at__gte=starts[0], created_at__lt=end)
                .annotate(bucket=Trunc("created_at", unit, tzinfo=bucket_zone))
                .values_list("bucket", "action", "outcome")
                .annotate(n=Count("*"))
                .order_by()
            )

        for name, run in (("range counts", ranges), ("GROUP BY date_trunc", group_by)):
            walls, sqls, queries = timed(run, args.repeat)
            print(row(f"{window.key} per period: {name}", walls, sqls, queries))
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX bench_group_by")
    searches = [
        ("audit list, unfiltered", ""),
        ("search: a username (rare word)", "?q=user7919"),
        ("search: a reason (common word)", "?q=unknown_user"),
        ("search: a user agent word", "?q=okhttp"),
        ("search: an IP address", "?q=203.0.113.7"),
    ]
    for name, query in searches:

        def listing(query: str = query) -> None:
            response = client.get(f"/admin/django_authfw/auditlog/{query}")
            assert response.status_code == 200, response.status_code

        walls, sqls, queries = timed(listing, args.repeat)
        print(row(name, walls, sqls, queries))
    if args.explain:
        for key in ("24h", "30d"):
            explain(key)


if __name__ == "__main__":
    main()
