"""The admin's auth dashboard: who may see it, what each panel counts, its links, the lift
button, its charts' accessibility, and the indexes its queries read (PostgreSQL plans)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from django_authfw import AuthFramework, dashboard_queries
from django_authfw import audit as events
from django_authfw.models import AuditLog
from django_authfw.records import AuditEvent, AuthToken
from django_authfw.request_info import RequestInfo
from django_authfw.storage import DatabaseStorage

from .http_support import fast_hashing, post_json, user_factory

__all__ = ["fast_hashing", "user_factory"]

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/django_authfw/auditlog/dashboard/"
LIFT = "/admin/django_authfw/auditlog/dashboard/lift/"
AUDIT = "/admin/django_authfw/auditlog/"
# A fixed "now" for the counting tests: 2026-03-10 14:30 UTC, a Tuesday.
NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)


@pytest.fixture
def superuser_client(client: Client, user_factory: Any) -> Client:
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


def staff_client(user_factory: Any, *codenames: str) -> Client:
    user = user_factory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def at(moment: datetime, event: AuditEvent) -> AuditEvent:
    return dataclasses.replace(event, created_at=moment)


def token(number: int, user_id: str = "7") -> AuthToken:
    return AuthToken(
        token_id=f"tok{number}",
        user_id=user_id,
        access_digest="0" * 64,
        expires_at=NOW,
        family_id=f"fam{number}",
        replaced_by=f"next{number}",
    )


def store(*made: AuditEvent) -> None:
    DatabaseStorage().import_audit(made)


def failed_login(moment: datetime, username: str, address: str) -> AuditEvent:
    return at(
        moment,
        events.login_failure_event(None, username, "unknown_user", RequestInfo(address)),
    )


# Who sees it, and where it is linked from ---------------------------------------------------


def test_dashboard_needs_the_audit_view_permission(user_factory: Any, client: Client) -> None:
    assert client.get(DASHBOARD).status_code == 302  # to the admin's login
    assert staff_client(user_factory).get(DASHBOARD).status_code == 403
    assert staff_client(user_factory, "view_token").get(DASHBOARD).status_code == 403
    viewer = staff_client(user_factory, "view_auditlog")
    page = viewer.get(DASHBOARD)
    assert page.status_code == 200
    assert "Auth dashboard" in page.content.decode()


def test_dashboard_is_linked_from_the_app_index_and_the_audit_list(
    user_factory: Any, superuser_client: Client
) -> None:
    for client in (superuser_client, staff_client(user_factory, "view_auditlog")):
        assert DASHBOARD in client.get("/admin/django_authfw/").content.decode()
        assert DASHBOARD in client.get(AUDIT).content.decode()
    token_viewer = staff_client(user_factory, "view_token")
    assert DASHBOARD not in token_viewer.get("/admin/django_authfw/").content.decode()


def test_an_unknown_window_shows_the_default_one_and_says_so(superuser_client: Client) -> None:
    page = superuser_client.get(DASHBOARD + "?window=1y", follow=True).content.decode()
    assert "There is no window &#x27;1y&#x27;" in page
    assert 'aria-current="page" class="authfw-current">Last 24 hours' in page


# What the panels count ----------------------------------------------------------------------


def test_events_per_period_action_and_outcome() -> None:
    info = RequestInfo("192.0.2.1")
    store(
        at(NOW - timedelta(minutes=10), events.grant_event("login", token(1), info)),
        at(NOW - timedelta(minutes=20), events.grant_event("login", token(2), info)),
        at(NOW - timedelta(hours=2), events.grant_event("refresh", token(3), info)),
        at(NOW - timedelta(hours=2), events.revoke_event(token(4), "access", 1, info)),
        at(NOW - timedelta(hours=3), events.reuse_event(token(5), 2, info)),
        failed_login(NOW - timedelta(hours=3), "admin", "203.0.113.5"),
        # Outside the 24 hours, inside the 7 days.
        failed_login(NOW - timedelta(days=2), "admin", "203.0.113.5"),
    )
    day = dashboard_queries.build(dashboard_queries.window_named("24h"), now=NOW, zone=UTC)
    assert len(day.series.starts) == 24
    assert day.series.starts[-1] == datetime(2026, 3, 10, 14, tzinfo=UTC)
    assert day.start == datetime(2026, 3, 9, 15, tzinfo=UTC)
    assert day.series.success[-1] == 2
    assert day.series.success[-3] == 2  # 12:00: the refresh and the revocation
    assert day.series.failure[-4] == 2  # 11:00: the reuse and the failed login
    assert day.success_total == 4
    assert day.failure_total == 2
    assert day.issued_total == 3
    assert day.series.issued[-3] == 1
    assert day.revocations_total == 2  # the revocation and the reuse detection's
    assert day.reuse_total == 1
    assert {(a.action, a.success, a.failure) for a in day.actions} == {
        ("login", 2, 1),
        ("refresh", 1, 0),
        ("revoke", 1, 0),
        ("refresh_reuse", 0, 1),
    }
    assert day.actions[0].action == "login"  # the most events first
    week = dashboard_queries.build(dashboard_queries.window_named("7d"), now=NOW, zone=UTC)
    assert week.failure_total == 3
    assert len(week.series.starts) == 168
    hour = dashboard_queries.build(dashboard_queries.window_named("1h"), now=NOW, zone=UTC)
    assert hour.success_total == 2
    assert hour.series.success[-11] == 1  # 14:20, 14:10: one each
    assert hour.series.success[-21] == 1


def test_period_counts_agree_with_a_plain_group_by() -> None:
    """The index range counts give what ``GROUP BY period, action, outcome`` gives."""
    import random

    from django_authfw.dashboard_counts import period_counts

    chooser = random.Random(13)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    boundaries = [start + timedelta(hours=6 * n) for n in range(9)]
    made = []
    for number in range(400):
        moment = start + timedelta(minutes=chooser.randrange(-600, 60 * 54))
        if number % 40 == 0:
            moment = chooser.choice(boundaries)  # on an edge: belongs to the later period
        action = chooser.choice(["login", "refresh", "export", "zz-custom", "a"])
        made.append(AuditEvent(action=action, outcome=chooser.random() < 0.7, created_at=moment))
    store(*made)
    expected: dict[tuple[str, bool, int], int] = {}
    for event in made:
        for position in range(len(boundaries) - 1):
            if boundaries[position] <= event.created_at < boundaries[position + 1]:
                key = (event.action, event.outcome, position)
                expected[key] = expected.get(key, 0) + 1
    counted = {(a, o, p): n for a, o, p, n in period_counts(boundaries)}
    assert counted == expected
    assert period_counts(boundaries[:1]) == []


def test_days_are_the_admins_local_days() -> None:
    paris = __import__("zoneinfo").ZoneInfo("Europe/Paris")
    info = RequestInfo("192.0.2.1")
    # 23:30 UTC on the 8th is already the 9th in Paris.
    store(at(datetime(2026, 3, 8, 23, 30, tzinfo=UTC), events.register_event("1", info)))
    month = dashboard_queries.build(dashboard_queries.window_named("30d"), now=NOW, zone=paris)
    assert len(month.series.starts) == 30
    assert month.series.starts[-1] == datetime(2026, 3, 10, tzinfo=paris)
    assert month.series.success[-2] == 1  # the 9th
    assert month.series.success[-3] == 0


def test_most_failed_usernames_and_addresses() -> None:
    made = [failed_login(NOW - timedelta(minutes=n), "admin", "203.0.113.5") for n in range(5)]
    made += [failed_login(NOW - timedelta(minutes=n), "root", "203.0.113.6") for n in range(3)]
    made += [failed_login(NOW - timedelta(minutes=1), "root", "203.0.113.5")]
    made += [failed_login(NOW - timedelta(days=3), "old", "198.51.100.1")]  # outside 24 h
    info = RequestInfo("203.0.113.9")
    made += [at(NOW - timedelta(minutes=2), events.register_event("1", info))]  # a success
    store(*made)
    day = dashboard_queries.build(dashboard_queries.window_named("24h"), now=NOW, zone=UTC)
    assert [(r.value, r.count) for r in day.top_usernames] == [("admin", 5), ("root", 4)]
    assert [(r.value, r.count) for r in day.top_addresses] == [
        ("203.0.113.5", 6),
        ("203.0.113.6", 3),
    ]
    assert day.top_usernames[0].last_seen == NOW


def test_ranked_links_open_the_audit_list_filtered_to_those_events(
    superuser_client: Client,
) -> None:
    now = datetime.now(UTC)
    store(
        *(failed_login(now - timedelta(minutes=n), "admin", "203.0.113.5") for n in range(3)),
        failed_login(now - timedelta(minutes=5), "root", "203.0.113.6"),
        failed_login(now - timedelta(days=3), "admin", "203.0.113.5"),  # before the window
        at(now, events.register_event("1", RequestInfo("203.0.113.5"))),  # not a failure
    )
    response = superuser_client.get(DASHBOARD)
    assert response.status_code == 200
    found = re.findall(r'<a href="([^"]*auditlog/\?[^"]*)">([^<]+)</a>', response.content.decode())
    links = {visible: href for href, visible in found}
    for shown, expected in (("admin", 3), ("203.0.113.5", 3), ("root", 1)):
        url = links[shown].replace("&amp;", "&")
        params = dict(parse_qsl(urlsplit(url).query))
        assert params["action"] == "login"
        assert params["outcome"] == "failure"
        response = superuser_client.get(url)
        sidebar = re.search(
            r'id="changelist-filter"(.*?)</(?:nav|search)>', response.content.decode(), re.S
        )
        assert sidebar
        assert "<time" not in sidebar.group(1)
        assert "&lt;" not in sidebar.group(1)
        assert "Since " in sidebar.group(1)
        listed = response.context["cl"].result_list
        assert len(listed) == expected, shown
        assert {(e.action, e.outcome) for e in listed} == {("login", False)}


def test_recent_reuse_detections_newest_first(superuser_client: Client) -> None:
    now = datetime.now(UTC)
    info = RequestInfo("203.0.113.99")
    store(
        at(now - timedelta(hours=1), events.reuse_event(token(1), 3, info)),
        at(now - timedelta(minutes=5), events.reuse_event(token(2), 2, info)),
    )
    day = dashboard_queries.build(dashboard_queries.window_named("24h"))
    assert [(r.family_id, r.revoked) for r in day.reuse_recent] == [("fam2", 2), ("fam1", 3)]
    page = superuser_client.get(DASHBOARD).content.decode()
    section = re.search(r'id="authfw-reuse"(.*?)</section>', page, re.S)
    assert section
    assert "203.0.113.99" in section.group(1)
    assert re.findall(r'class="authfw-num">(\d+)</td>', section.group(1)) == ["2", "3"]


# Lockouts: listed while locked, lifted by the button ----------------------------------------


def lock_out(username: str, address: str) -> Client:
    client = Client(REMOTE_ADDR=address)
    for _ in range(5):
        post_json(client, "/auth/token/", {"username": username, "password": "wrong"})
    return client


def test_current_lockouts_and_the_lift_button(
    superuser_client: Client, user_factory: Any, fast_hashing: None
) -> None:
    user_factory(username="locked-user")
    from .factories import PASSWORD

    caller = lock_out("locked-user", "198.51.100.30")
    creds = {"username": "locked-user", "password": PASSWORD}
    assert post_json(caller, "/auth/token/", creds).status_code == 429
    page = superuser_client.get(DASHBOARD).content.decode()
    section = re.search(r'id="authfw-lockouts"(.*?)</section>', page, re.S)
    assert section
    assert "locked-user" in section.group(1)
    assert 'name="kind" value="user"' in section.group(1)
    response = superuser_client.post(
        LIFT, {"kind": "user", "value": "locked-user", "window": "7d"}, follow=True
    )
    assert response.redirect_chain[-1][0] == DASHBOARD + "?window=7d"
    assert "Lifted the lockout of locked-user" in response.content.decode()
    assert post_json(caller, "/auth/token/", creds).status_code == 200
    unlocked = AuditLog.objects.get(action="unlock")
    assert unlocked.resource == "username:locked-user"
    assert unlocked.metadata["via"] == "admin"
    assert unlocked.metadata["by"] == "root"
    assert unlocked.ip_address == "127.0.0.1"
    after = superuser_client.get(DASHBOARD).content.decode()
    assert "Nobody is locked out now." in after


def test_an_address_lockout_is_listed_and_lifted(
    superuser_client: Client, settings: Any, fast_hashing: None
) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_THRESHOLD": 50, "LOCKOUT_IP_THRESHOLD": 3}
    sprayer = Client(REMOTE_ADDR="203.0.113.77")
    for number in range(3):
        post_json(sprayer, "/auth/token/", {"username": f"guess{number}", "password": "x"})
    assert AuthFramework().lockout_remaining(None, "203.0.113.77") > 0
    page = superuser_client.get(DASHBOARD).content.decode()
    section = re.search(r'id="authfw-lockouts"(.*?)</section>', page, re.S)
    assert section
    assert "Address <strong>203.0.113.77</strong>" in section.group(1)
    assert 'name="kind" value="ip"' in section.group(1)
    response = superuser_client.post(LIFT, {"kind": "ip", "value": "203.0.113.77"}, follow=True)
    assert "Lifted the lockout of 203.0.113.77" in response.content.decode()
    assert AuthFramework().lockout_remaining(None, "203.0.113.77") == 0
    assert AuditLog.objects.get(action="unlock").resource == "ip:203.0.113.77"


def test_lifting_needs_the_user_change_permission(user_factory: Any, fast_hashing: None) -> None:
    user_factory(username="still-locked")
    lock_out("still-locked", "198.51.100.31")
    viewer = staff_client(user_factory, "view_auditlog")
    page = viewer.get(DASHBOARD).content.decode()
    assert "still-locked" in page
    assert 'name="kind"' not in page  # no button
    assert viewer.post(LIFT, {"kind": "user", "value": "still-locked"}).status_code == 403
    assert AuthFramework().lockout_remaining("still-locked", None) > 0
    assert not AuditLog.objects.filter(action="unlock").exists()
    manager = staff_client(user_factory, "view_auditlog", "change_user")
    assert 'name="kind"' in manager.get(DASHBOARD).content.decode()


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "user", "value": ""},
        {"kind": "ip", "value": "not-an-address"},
        {"kind": "group", "value": "x"},
        {"kind": "user", "value": "x" * 256},
        {},
    ],
)
def test_a_bad_lift_request_changes_nothing(superuser_client: Client, data: Any) -> None:
    response = superuser_client.post(LIFT, data, follow=True)
    assert response.status_code == 200
    assert "Nothing was lifted" in response.content.decode()
    assert not AuditLog.objects.filter(action="unlock").exists()
    assert superuser_client.get(LIFT).status_code == 405


# Storages, charts, query counts ---------------------------------------------------------------


def test_active_tokens_and_sessions_of_every_storage_alias(
    user_factory: Any, fast_hashing: None, settings: Any
) -> None:
    from .factories import PASSWORD

    user = user_factory(username="counted")
    database, cache = AuthFramework("default"), AuthFramework("cache")
    database.authenticate("counted", PASSWORD)
    revoked = database.authenticate("counted", PASSWORD)
    database.revoke_token(revoked.access_token)
    database.create_session(user)
    cache.authenticate("counted", PASSWORD)
    cache.create_session(user)
    cache.create_session(user)
    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": {
            **settings.AUTHFW["STORAGES"],
            "broken": {
                "BACKEND": "django_authfw.storage.RedisStorage",
                "OPTIONS": {"url": "redis://127.0.0.1:1/0"},
            },
        },
    }
    counted = {row.alias: row for row in dashboard_queries.storage_counts()}
    assert (counted["default"].active_tokens, counted["default"].active_sessions) == (1, 1)
    assert counted["default"].backend.startswith("database")
    assert (counted["cache"].active_tokens, counted["cache"].active_sessions) == (1, 2)
    assert counted["broken"].error
    assert counted["broken"].active_tokens is None


def test_a_storages_own_statistics_are_kept_a_minute_for_the_page(
    user_factory: Any, fast_hashing: None
) -> None:
    from django.core.cache import cache

    from .factories import PASSWORD

    cache.clear()
    user_factory(username="cached")
    second = AuthFramework("cache")  # locmem: may hold tokens of earlier tests
    second.authenticate("cached", PASSWORD)
    first = {row.alias: row for row in dashboard_queries.storage_counts(cached=True)}
    before = first["cache"].active_tokens
    assert before
    second.authenticate("cached", PASSWORD)
    again = {row.alias: row for row in dashboard_queries.storage_counts(cached=True)}
    assert again["cache"].active_tokens == before
    assert again["cache"].counted_at == first["cache"].counted_at
    # The database's own tables are counted each time, and uncached calls count afresh.
    assert again["default"].counted_at is None
    fresh = {row.alias: row for row in dashboard_queries.storage_counts()}
    assert fresh["cache"].active_tokens == before + 1
    cache.clear()
    recounted = {row.alias: row for row in dashboard_queries.storage_counts(cached=True)}
    assert recounted["cache"].active_tokens == before + 1


def test_charts_are_accessible_svg_in_the_admins_colours(superuser_client: Client) -> None:
    now = datetime.now(UTC)
    store(
        at(now, events.grant_event("login", token(1), RequestInfo("192.0.2.1"))),
        failed_login(now, "admin", "203.0.113.5"),
    )
    page = superuser_client.get(DASHBOARD).content.decode()
    charts = re.findall(r"<svg class=\"authfw-chart\"(.*?)</svg>", page, re.S)
    assert len(charts) == 2
    for chart in charts:
        assert 'role="img"' in chart
        labelled = re.search(r'aria-labelledby="([^"]+) ([^"]+)"', chart)
        assert labelled
        title_id, desc_id = labelled.groups()
        assert re.search(rf'<title id="{title_id}">[^<]+</title>', chart)
        assert re.search(rf'<desc id="{desc_id}">[^<]+</desc>', chart)
        # Colours come from CSS classes over the admin's variables, never fixed in the SVG.
        assert not re.search(r'(fill|stroke)="#', chart)
    assert "1 success and 1 failure." in page
    # The numbers as a table beside each chart.
    assert page.count("The numbers, per hour") == 2
    assert "/static/django_authfw/admin.css" in page
    found = finders.find("django_authfw/admin.css")
    assert isinstance(found, str)
    stylesheet = Path(found).read_text()
    for variable in ("--link-fg", "--error-fg", "--body-quiet-color", "--hairline-color"):
        assert f"var({variable})" in stylesheet


def test_the_number_of_queries_does_not_grow_with_the_data(superuser_client: Client) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert superuser_client.get(DASHBOARD + "?window=7d").status_code == 200
        return len(captured.captured_queries)

    now = datetime.now(UTC)
    info = RequestInfo("203.0.113.9")
    # One of each kind first: a panel with rows may cost a query more than an empty one.
    store(failed_login(now, "admin", "203.0.113.5"), at(now, events.reuse_event(token(0), 1, info)))
    few = queries()
    store(
        *(failed_login(now - timedelta(hours=n), f"user{n}", f"203.0.113.{n}") for n in range(50)),
        *(at(now - timedelta(hours=n), events.reuse_event(token(n), 1, info)) for n in range(20)),
        *(at(now - timedelta(hours=n), events.register_event(str(n), info)) for n in range(99)),
    )
    assert queries() == few


# PostgreSQL: every panel from an index, never the table --------------------------------------


def plan(sql: str) -> str:
    """The plan of ``sql`` when the table is not an option: which index can serve it."""
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_bitmapscan = off")
        try:
            cursor.execute("EXPLAIN " + sql)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_bitmapscan")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL plans")
@pytest.mark.django_db(transaction=True)  # VACUUM (the visibility map) runs outside one
def test_panels_read_the_indexes_alone_on_postgresql() -> None:
    store(failed_login(datetime.now(UTC), "admin", "203.0.113.5"))
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {AuditLog._meta.db_table}")
    with CaptureQueriesContext(connection) as captured:
        dashboard_queries.build(dashboard_queries.window_named("30d"))
    sqls = [q["sql"] for q in captured.captured_queries if AuditLog._meta.db_table in q["sql"]]
    series = next(sql for sql in sqls if "WITH RECURSIVE" in sql)
    series_plan = plan(series)
    assert "Index Only Scan using idx_audit_action_outcome" in series_plan
    assert "Seq Scan" not in series_plan
    table = AuditLog._meta.db_table
    for column in ("resource", "ip_address"):
        grouped = next(
            sql for sql in sqls if f'"{table}"."{column}" AS "{column}", COUNT(*)' in sql
        )
        assert "Index Only Scan using idx_audit_login_failures" in plan(grouped), column


def test_attacker_chosen_usernames_are_shown_as_text(superuser_client: Client) -> None:
    hostile = '<script>alert("x")</script>'
    store(failed_login(datetime.now(UTC), hostile, "203.0.113.5"))
    page = superuser_client.get(DASHBOARD).content.decode()
    assert hostile not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_lifting_needs_the_csrf_token(user_factory: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_factory(is_staff=True, is_superuser=True))
    assert client.post(LIFT, {"kind": "user", "value": "x"}).status_code == 403
    assert not AuditLog.objects.filter(action="unlock").exists()
