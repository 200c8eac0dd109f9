"""The admin: read-only changelists, actions through the framework, fast paging and dates."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_authfw import AuthFramework
from django_authfw.admin import preview_bytes
from django_authfw.admin_lists import EstimatedCountPaginator, ProbingDateQuerySet
from django_authfw.models import AuditLog, Session, Token
from django_authfw.records import utcnow
from django_authfw.request_info import RequestInfo
from django_authfw.storage.database.rows import session_id_digest
from django_authfw.tokens import shown_prefix

from .factories import PASSWORD
from .http_support import bearer, fast_hashing, login, post_json, user_factory

__all__ = ["fast_hashing", "login", "user_factory"]

pytestmark = pytest.mark.django_db

TOKENS = "/admin/django_authfw/token/"
SESSIONS = "/admin/django_authfw/session/"
KV = "/admin/django_authfw/kventry/"
AUDIT = "/admin/django_authfw/auditlog/"


@pytest.fixture
def superuser_client(client: Client, user_factory: Any) -> Client:
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


def obj_url(changelist: str, pk: object, view: str) -> str:
    # quote() as the admin's own links do: an id with "_" followed by two hex digits would
    # otherwise be unquoted to another id.
    return f"{changelist}{quote(str(pk))}/{view}/"


def session_url(session_id: str, view: str) -> str:
    """A session's admin page: addressed by the digest of its id, never by the id."""
    return obj_url(SESSIONS, session_id_digest(session_id), view)


def staff_client(user_factory: Any, *codenames: str) -> Client:
    user = user_factory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


class _Text(HTMLParser):
    """The text a person reads: no tags, no attribute values, no scripts or styles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str | bytes) -> str:
    parser = _Text()
    parser.feed(html.decode() if isinstance(html, bytes) else html)
    return " ".join(" ".join(parser.parts).split())


def element(html: str | bytes, pattern: str) -> str:
    """The visible text of the first element the regex ``pattern`` (one group) finds."""
    found = re.search(pattern, html.decode() if isinstance(html, bytes) else html, re.S)
    assert found, pattern
    return visible_text(found.group(1))


def action(client: Client, url: str, name: str, ids: list[Any]) -> Any:
    return client.post(
        url, {"action": name, "_selected_action": [str(i) for i in ids]}, follow=True
    )


# Tokens ---------------------------------------------------------------------------------------


def test_token_pages_show_digest_prefix_only(
    superuser_client: Client, user_factory: Any, login: Any
) -> None:
    issued = login(user_factory(username="alice"))
    token = Token.objects.get(pk=issued.token_id)
    for url in (TOKENS, obj_url(TOKENS, token.pk, "change")):
        page = superuser_client.get(url).content.decode()
        assert token.access_token[:12] in page
        assert token.access_token not in page
        assert token.refresh_token is not None
        assert token.refresh_token not in page
        assert issued.access_token not in page
        assert issued.refresh_token not in page
        assert "alice" in page
    change = superuser_client.get(obj_url(TOKENS, token.pk, "change")).content.decode()
    assert 'name="_save"' not in change  # read-only


def test_no_add_change_or_delete_of_tokens(
    superuser_client: Client, user_factory: Any, login: Any
) -> None:
    issued = login(user_factory())
    assert superuser_client.get(f"{TOKENS}add/").status_code == 403
    assert superuser_client.get(obj_url(TOKENS, issued.token_id, "delete")).status_code == 403
    response = superuser_client.post(
        obj_url(TOKENS, issued.token_id, "change"), {"token_type": "x"}
    )
    assert response.status_code == 403
    assert Token.objects.get(pk=issued.token_id).token_type == "Bearer"


def test_revoke_action(superuser_client: Client, user_factory: Any, login: Any) -> None:
    user = user_factory()
    first, second, kept = login(user), login(user), login(user)
    response = action(superuser_client, TOKENS, "revoke_tokens", [first.token_id, second.token_id])
    assert response.status_code == 200
    assert "Revoked 2 token(s)." in response.content.decode()
    assert Token.objects.filter(revoked_at__isnull=False).count() == 2
    client = Client()
    assert client.get("/api/me/", **bearer(first.access_token)).status_code == 401
    assert client.get("/api/me/", **bearer(kept.access_token)).status_code == 200
    events = AuditLog.objects.filter(action="revoke", metadata__via="admin")
    assert events.count() == 2
    assert {e.metadata["by"] for e in events} == {"root"}


def test_revoke_action_needs_change_permission(user_factory: Any, login: Any) -> None:
    issued = login(user_factory())
    viewer = staff_client(user_factory, "view_token")
    page = viewer.get(TOKENS).content.decode()
    assert "revoke_tokens" not in page
    action(viewer, TOKENS, "revoke_tokens", [issued.token_id])
    assert not Token.objects.get(pk=issued.token_id).revoked_at
    changer = staff_client(user_factory, "change_token")
    assert "revoke_tokens" in changer.get(TOKENS).content.decode()


def test_token_status_filter_and_search(
    superuser_client: Client, user_factory: Any, login: Any
) -> None:
    active = login(user_factory(username="active-one"))
    expired = login(user_factory(username="expired-one"))
    revoked = login(user_factory(username="revoked-one"))
    Token.objects.filter(pk=expired.token_id).update(expires_at=utcnow() - timedelta(minutes=1))
    AuthFramework().revoke_token(revoked.access_token)

    def listed(query: str) -> set[str]:
        page = superuser_client.get(TOKENS + query).content.decode()
        return {t for t in (active.token_id, expired.token_id, revoked.token_id) if t in page}

    assert listed("?status=active") == {active.token_id}
    assert listed("?status=expired") == {expired.token_id}
    assert listed("?status=revoked") == {revoked.token_id}
    assert listed("") == {active.token_id, expired.token_id, revoked.token_id}
    assert listed("?q=expired-one") == {expired.token_id}


# Sessions and key-value entries ---------------------------------------------------------------


def test_session_end_action(superuser_client: Client, user_factory: Any) -> None:
    framework = AuthFramework()
    user = user_factory(username="sally")
    ended = framework.create_session(user, {"note": "<b>x</b>"})
    kept = framework.create_session(user)
    page = superuser_client.get(SESSIONS).content.decode()
    assert ended.session_id not in page
    assert session_id_digest(ended.session_id) in page  # the link and the checkbox
    assert "sally" in page
    detail = superuser_client.get(session_url(ended.session_id, "change")).content.decode()
    assert "&lt;b&gt;x&lt;/b&gt;" in detail
    assert "<b>x</b>" not in detail
    assert shown_prefix(ended.session_id) in visible_text(page)
    response = action(
        superuser_client, SESSIONS, "end_sessions", [session_id_digest(ended.session_id)]
    )
    assert "Ended 1 session(s)." in response.content.decode()
    assert not Session.objects.filter(pk=ended.session_id).exists()
    assert Session.objects.filter(pk=kept.session_id).exists()
    assert superuser_client.get(session_url(kept.session_id, "delete")).status_code == 403


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", ""),
        (b"hello", "hello"),
        (b"line\nbreak\x00nul", "line\\nbreak\\x00nul"),
        ("héllo wörld".encode(), "héllo wörld"),
        (b"\xff\xfe\x00\x01", "ff fe 00 01"),
        (b"a" * 100, "a" * 79 + "…"),
        ("é".encode() * 200, "é" * 79 + "…"),
        (
            bytes(range(256)),
            "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 …",
        ),
        (memoryview(b"view"), "view"),
    ],
)
def test_preview_bytes(value: Any, expected: str) -> None:
    assert preview_bytes(value) == expected


def test_kv_page_escapes_values(superuser_client: Client) -> None:
    framework = AuthFramework()
    framework.kv_set("xss", b"<script>alert(1)</script>")
    framework.kv_set("blob", bytes(range(256)) * 100)
    page = superuser_client.get(KV).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page
    assert "00 01 02" in page
    assert "25600" in page  # the size column
    detail = superuser_client.get(obj_url(KV, "xss", "change")).content.decode()
    assert "<script>alert(1)</script>" not in detail
    assert superuser_client.get(f"{KV}add/").status_code == 403


# The audit log --------------------------------------------------------------------------------


def test_audit_log_is_read_only_for_superusers(superuser_client: Client) -> None:
    AuthFramework().audit("login", False, request_info=RequestInfo("203.0.113.9"))
    event = AuditLog.objects.get()
    assert superuser_client.get(f"{AUDIT}add/").status_code == 403
    assert (
        superuser_client.post(f"{AUDIT}add/", {"action": "x", "outcome": "on"}).status_code == 403
    )
    assert superuser_client.get(obj_url(AUDIT, event.pk, "delete")).status_code == 403
    assert (
        superuser_client.post(obj_url(AUDIT, event.pk, "delete"), {"post": "yes"}).status_code
        == 403
    )
    response = superuser_client.post(obj_url(AUDIT, event.pk, "change"), {"action": "changed"})
    assert response.status_code == 403
    detail = superuser_client.get(obj_url(AUDIT, event.pk, "change"))
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    page = superuser_client.get(AUDIT).content.decode()
    assert "delete_selected" not in page
    action(superuser_client, AUDIT, "delete_selected", [event.pk])
    assert AuditLog.objects.filter(pk=event.pk, action="login").exists()


def test_audit_filters_and_search(
    superuser_client: Client, user_factory: Any, fast_hashing: None
) -> None:
    user_factory(username="victim")
    client = Client(REMOTE_ADDR="198.51.100.7")
    post_json(client, "/auth/token/", {"username": "victim", "password": "wrong"})
    post_json(client, "/auth/token/", {"username": "victim", "password": PASSWORD})
    framework = AuthFramework()
    framework.audit("register", True, user_id="999", request_info=RequestInfo("192.0.2.1"))

    def rows(query: str) -> list[tuple[str, bool]]:
        response = superuser_client.get(AUDIT + query)
        assert response.status_code == 200
        return sorted((e.action, e.outcome) for e in response.context["cl"].result_list)

    assert rows("?outcome=failure") == [("login", False)]
    assert rows("?outcome=success&action=login") == [("login", True)]
    assert rows("?action=register") == [("register", True)]
    assert rows("?q=198.51.100.7") == [("login", False), ("login", True)]
    assert rows("?q=victim") == [("login", False), ("login", True)]
    assert rows("?q=VICTIM") == [("login", False), ("login", True)]
    assert rows("?q=999") == [("register", True)]
    assert rows("?q=198.51") == []  # exact matches only; no inet cast error on PostgreSQL
    assert rows("?q=%27%3B--") == []
    page = superuser_client.get(AUDIT + "?outcome=failure").content.decode()
    assert "victim" in page
    assert "198.51.100.7" in page


def test_lift_lockout_action(
    superuser_client: Client, user_factory: Any, fast_hashing: None
) -> None:
    user_factory(username="locked")
    client = Client(REMOTE_ADDR="198.51.100.8")
    for _ in range(5):
        post_json(client, "/auth/token/", {"username": "locked", "password": "wrong"})
    creds = {"username": "locked", "password": PASSWORD}
    assert post_json(client, "/auth/token/", creds).status_code == 429
    lockouts = list(AuditLog.objects.filter(action="lockout").values_list("pk", flat=True))
    assert lockouts
    response = action(superuser_client, AUDIT + "?action=lockout", "lift_lockout", lockouts)
    assert "Lifted the lockout of 1 username/IP pair(s)" in response.content.decode()
    assert post_json(client, "/auth/token/", creds).status_code == 200


def test_lift_lockout_needs_user_change_permission(user_factory: Any) -> None:
    AuthFramework().audit("lockout", False, metadata={"username": "x"})
    viewer = staff_client(user_factory, "view_auditlog")
    assert viewer.get(AUDIT).status_code == 200
    assert "lift_lockout" not in viewer.get(AUDIT).content.decode()
    manager = staff_client(user_factory, "view_auditlog", "change_user")
    assert "lift_lockout" in manager.get(AUDIT).content.decode()


# Staying fast on big tables -------------------------------------------------------------------


def _events(moments: list[datetime], **fields: Any) -> None:
    AuditLog.objects.bulk_create(
        AuditLog(event_id=uuid.uuid4().hex, action="login", outcome=True, created_at=m, **fields)
        for m in moments
    )


def test_date_hierarchy_probes_match_distinct_dates(settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Paris"  # local midnights differ from UTC ones
    timezone.activate("Europe/Paris")
    try:
        moments = [
            datetime(2023, 12, 31, 23, 30, tzinfo=UTC),  # already 2024 in Paris
            datetime(2024, 1, 15, 12, tzinfo=UTC),
            datetime(2024, 3, 1, 0, 0, tzinfo=UTC),
            datetime(2024, 3, 31, 22, 30, tzinfo=UTC),  # April 1st in Paris (DST)
            datetime(2026, 7, 4, 8, tzinfo=UTC),
        ]
        _events(moments)
        plain = AuditLog.objects.all()
        probing = ProbingDateQuerySet(model=AuditLog, query=plain.query)
        for kind in ("year", "month", "day"):
            assert list(probing.datetimes("created_at", kind)) == list(
                plain.datetimes("created_at", kind)
            ), kind
        march = {"created_at__year": 2024, "created_at__month": 3}
        assert list(probing.filter(**march).datetimes("created_at", "day")) == list(
            plain.filter(**march).datetimes("created_at", "day")
        )
        assert list(probing.datetimes("created_at", "month", order="DESC")) == list(
            plain.datetimes("created_at", "month", order="DESC")
        )
        assert list(probing.none().datetimes("created_at", "year")) == []
    finally:
        timezone.deactivate()


def test_date_hierarchy_pages(superuser_client: Client) -> None:
    _events([datetime(2024, 5, 6, 7, tzinfo=UTC), datetime(2025, 8, 9, 10, tzinfo=UTC)])
    for query in (
        "",
        "?created_at__year=2024",
        "?created_at__year=2024&created_at__month=5",
        "?created_at__year=2024&created_at__month=5&created_at__day=6",
    ):
        response = superuser_client.get(AUDIT + query)
        assert response.status_code == 200, query
    page = superuser_client.get(AUDIT).content.decode()
    assert "created_at__year=2024" in page
    assert "created_at__year=2025" in page


def test_changelist_never_counts_the_whole_table(
    superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EstimatedCountPaginator, "max_exact_count", 50)
    now = utcnow()
    _events([now - timedelta(seconds=i) for i in range(120)])
    _events([now - timedelta(seconds=i) for i in range(10)], ip_address="192.0.2.3")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {AuditLog._meta.db_table}")
    with CaptureQueriesContext(connection) as queries:
        response = superuser_client.get(AUDIT)
    assert response.status_code == 200
    cl = response.context["cl"]
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    if connection.vendor == "postgresql":
        # The planner's estimate (130 rows, after ANALYZE), no COUNT(*) over the table.
        assert cl.result_count == 130
        assert counts == []
        assert "about 130 audit events" in response.content.decode()
        # Filtered: counted, but never past max_exact_count.
        response = superuser_client.get(AUDIT + "?outcome=success")
        assert response.context["cl"].result_count == 50
        assert "more than 50 audit events" in response.content.decode()
        response = superuser_client.get(AUDIT + "?q=192.0.2.3")
        assert response.context["cl"].result_count == 10
        assert "more than" not in response.content.decode()
    else:
        # Other databases count exactly.
        assert cl.result_count == 130
        assert len(counts) == 1
        assert "about" not in response.content.decode().split('class="authfw-count"')[1][:40]
    assert cl.full_result_count is None  # show_full_result_count = False: no second count
    # No facet counts (one COUNT per filter choice), even when asked for.
    with CaptureQueriesContext(connection) as queries:
        response = superuser_client.get(AUDIT + "?_facets=1")
    assert "Show counts" not in response.content.decode()
    assert "Hide counts" not in response.content.decode()
    assert not [q for q in queries.captured_queries if "FILTER (WHERE" in q["sql"]]


def test_paginator_counts_plain_lists_exactly() -> None:
    assert EstimatedCountPaginator(list(range(7)), 2).count == 7


def test_ids_with_underscores_open_the_right_page(
    superuser_client: Client, user_factory: Any
) -> None:
    # Ids are url-safe base64: "_41" must not be unquoted to "A" on the way back.
    from django_authfw.storage import DatabaseStorage

    from .factories import AuthTokenFactory

    token = AuthTokenFactory.build(token_id="tok_41_5F", user_id=str(user_factory().pk))
    DatabaseStorage().store_token(token)
    page = superuser_client.get(TOKENS).content.decode()
    assert f'href="{obj_url(TOKENS, "tok_41_5F", "change")}"' in page
    detail = superuser_client.get(obj_url(TOKENS, "tok_41_5F", "change"))
    assert detail.status_code == 200
    assert token.access_digest[:12] in detail.content.decode()


# Polish: words for codes, labels, no history, prefixes, actions audited alike --------------

TITLE = r"<title>(.*?)</title>"
BREADCRUMBS = r'<(?:ol|div) class="breadcrumbs">(.*?)</(?:ol|div)>'
SUBTITLE = r"<h2>(.*?)</h2>"


def test_audit_pages_say_actions_and_outcomes_in_words(superuser_client: Client) -> None:
    framework = AuthFramework()
    framework.audit("password_change", True, user_id="1")
    framework.audit("login", False, metadata={"username": "nobody"})
    framework.audit("session_end", True, user_id="1")
    page = superuser_client.get(AUDIT).content
    listed = element(page, r'<table id="result_list">(.*?)</table>')
    for words in ("Password change", "Login", "Session end", "Success", "Failure"):
        assert words in listed
    for code in ("password_change", "session_end", "True", "False"):
        assert code not in listed
    sidebar = element(page, r'<(?:nav|search) id="changelist-filter"[^>]*>(.*?)</(?:nav|search)>')
    assert "Password change" in sidebar
    assert "Refresh token reuse" in sidebar
    assert "password_change" not in sidebar
    for action_name, title in (
        ("password_change", "Password change succeeded"),
        ("login", "Login failed"),
    ):
        event = AuditLog.objects.get(action=action_name)
        detail = superuser_client.get(obj_url(AUDIT, event.pk, "change")).content
        for part in (TITLE, BREADCRUMBS, SUBTITLE):
            assert title in element(detail, part), part
        assert action_name not in element(detail, r'<div id="content-main">(.*)</div>')
    assert str(AuditLog.objects.get(action="login")).startswith("Login failed (")


def test_ip_address_is_labelled_ip_address(superuser_client: Client, user_factory: Any) -> None:
    AuthFramework().audit("login", True, request_info=RequestInfo("192.0.2.5"))
    session = AuthFramework().create_session(user_factory(), request_info=RequestInfo("192.0.2.6"))
    event = AuditLog.objects.get(action="login")
    for url in (
        AUDIT,
        obj_url(AUDIT, event.pk, "change"),
        SESSIONS,
        session_url(session.session_id, "change"),
    ):
        text = visible_text(superuser_client.get(url).content)
        assert "IP address" in text, url
        assert "Ip address" not in text, url
        assert "ip address" not in text, url


def test_outcome_has_no_help_text_on_the_event_page(superuser_client: Client) -> None:
    AuthFramework().audit("login", False)
    event = AuditLog.objects.get()
    detail = visible_text(superuser_client.get(obj_url(AUDIT, event.pk, "change")).content)
    assert "True for success" not in detail
    assert "Outcome: Failure" in detail


def test_read_only_records_have_no_history_button(
    superuser_client: Client, user_factory: Any, login: Any
) -> None:
    user = user_factory()
    token = login(user)
    session = AuthFramework().create_session(user)
    AuthFramework().kv_set("some-key", b"value")
    event = AuditLog.objects.first()
    assert event is not None
    for url in (
        obj_url(AUDIT, event.pk, "change"),
        obj_url(TOKENS, token.token_id, "change"),
        session_url(session.session_id, "change"),
        obj_url(KV, "some-key", "change"),
    ):
        page = superuser_client.get(url).content.decode()
        assert "historylink" not in page, url
        assert "/history/" not in page, url


def test_session_ids_are_shown_as_prefixes(superuser_client: Client, user_factory: Any) -> None:
    session = AuthFramework().create_session(user_factory(username="sam"))
    full, prefix = session.session_id, shown_prefix(session.session_id)
    assert prefix != full
    assert prefix.endswith("…")
    page = superuser_client.get(SESSIONS).content
    listed = visible_text(page)
    assert prefix in listed
    assert full not in listed
    detail = superuser_client.get(session_url(full, "change")).content
    for part in (TITLE, BREADCRUMBS, SUBTITLE):
        assert prefix in element(detail, part), part
        assert full not in element(detail, part), part
    assert full not in visible_text(detail)


ADMIN_ADDRESS = "192.0.2.200"


@pytest.fixture
def admin_at_address(user_factory: Any) -> Client:
    client = Client(REMOTE_ADDR=ADMIN_ADDRESS, HTTP_USER_AGENT="staff browser")
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


def assert_admin_event(event: AuditLog, resource: str) -> None:
    """What every admin action's event carries: where it came from, who, from where, on what."""
    assert event.metadata["via"] == "admin"
    assert event.metadata["by"] == "root"
    assert event.ip_address == ADMIN_ADDRESS
    assert event.user_agent == "staff browser"
    assert event.resource == resource
    assert event.outcome is True


def test_admin_actions_are_audited_alike(
    admin_at_address: Client, user_factory: Any, login: Any, fast_hashing: None
) -> None:
    user = user_factory(username="target")
    token = login(user)
    session = AuthFramework().create_session(user)
    for _ in range(5):
        post_json(
            Client(REMOTE_ADDR="198.51.100.9"),
            "/auth/token/",
            {"username": "target", "password": "wrong"},
        )
    AuditLog.objects.filter(action__in=["revoke", "session_end", "unlock"]).delete()

    action(admin_at_address, TOKENS, "revoke_tokens", [token.token_id])
    action(admin_at_address, SESSIONS, "end_sessions", [session_id_digest(session.session_id)])
    lockout = AuditLog.objects.get(action="lockout")
    action(admin_at_address, AUDIT, "lift_lockout", [lockout.pk])

    assert_admin_event(AuditLog.objects.get(action="revoke"), f"token:{token.token_id}")
    ended = AuditLog.objects.get(action="session_end")
    assert_admin_event(ended, f"session:{shown_prefix(session.session_id)}")
    assert ended.user_id == str(user.pk)
    unlocked = AuditLog.objects.get(action="unlock")
    assert_admin_event(unlocked, "username:target ip:198.51.100.9")
    assert unlocked.user_id == str(user.pk)
    assert unlocked.metadata["username"] == "target"
    assert unlocked.metadata["removed"] > 0


def test_a_users_own_revoke_and_session_end_name_their_resource(
    user_factory: Any, login: Any
) -> None:
    user = user_factory()
    issued = login(user)
    client = Client(REMOTE_ADDR="192.0.2.77")
    assert (
        post_json(client, "/auth/token/revoke/", {"token": issued.refresh_token}).status_code == 200
    )
    revoke = AuditLog.objects.get(action="revoke")
    assert revoke.resource == f"token:{issued.token_id}"
    assert revoke.ip_address == "192.0.2.77"
    session = AuthFramework().create_session(user)
    other = login(user)
    response = client.delete(f"/auth/sessions/{session.session_id}/", **bearer(other.access_token))
    assert response.status_code == 200
    ended = AuditLog.objects.get(action="session_end")
    assert ended.resource == f"session:{shown_prefix(session.session_id)}"
    assert ended.ip_address == "192.0.2.77"


def test_failed_logins_and_lockouts_name_the_username_as_resource(
    user_factory: Any, fast_hashing: None
) -> None:
    user_factory(username="someone")
    client = Client(REMOTE_ADDR="198.51.100.44")
    for name in ("someone", "no-such-user"):
        post_json(client, "/auth/token/", {"username": name, "password": "wrong"})
    assert set(
        AuditLog.objects.filter(action="login", outcome=False).values_list("resource", flat=True)
    ) == {"username:someone", "username:no-such-user"}
