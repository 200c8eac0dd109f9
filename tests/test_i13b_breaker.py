"""Second hostile review of issue 13 (the session admin by id digest): every admin address and
view Django exposes for a session, the pages that name sessions indirectly (user deletion, the
audit log, the dashboard, the tokens), and the rows the framework writes about sessions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.admin.utils import quote as admin_quote
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from django_authfw.admin_support import database_framework
from django_authfw.models import AuditLog, Session, Token
from django_authfw.records import SessionData
from django_authfw.request_info import RequestInfo
from django_authfw.storage.database.rows import session_id_digest

from .factories import PASSWORD
from .http_support import fast_hashing, user_factory

__all__ = ["fast_hashing", "user_factory"]

pytestmark = pytest.mark.django_db

SESSIONS = "/admin/django_authfw/session/"


@pytest.fixture
def root(user_factory: Any) -> Client:
    client = Client()
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def viewer(user_factory: Any) -> Client:
    """A staff member with every view permission of the app (and of users), nothing else."""
    member = user_factory(username="viewer", is_staff=True)
    member.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client = Client()
    client.force_login(member)
    return client


def leaks(text: str, sessions: list[SessionData]) -> list[str]:
    """The full session ids (raw, admin-quoted or JSON-escaped) ``text`` holds."""
    found = []
    for session in sessions:
        full = session.session_id
        for shown in (full, admin_quote(full), json.dumps(full)[1:-1]):
            if shown in text:
                found.append(full)
    return found


def page_text(response: Any) -> str:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return str(body.decode(errors="replace")) + " " + str(response.get("Location", ""))


def test_no_admin_address_shows_a_session_id(
    root: Client, viewer: Client, user_factory: Any
) -> None:
    framework = database_framework()
    victim = user_factory(username="victim")
    sessions = [
        framework.create_session(victim, {"n": n}, request_info=RequestInfo("192.0.2.1"))
        for n in (1, 2)
    ]
    framework.authenticate("victim", PASSWORD)
    key = session_id_digest(sessions[0].session_id)
    content_type = ContentType.objects.get_for_model(Session)
    lists = [{"o": str(column)} for column in range(-1, 9)] + [
        {"o": "1.-2.3"},
        {"o": "0.0"},
        {"q": "victim"},
        {"all": ""},
        {"e": "1"},
        {"p": "2"},
        {"_popup": "1"},
        {"_popup": "1", "_to_field": "id_digest"},
        {"expiry": "expired"},
        {"expiry": "active"},
        {"created_at__year": "2026"},
        {"data__n": "1"},
        {"user": str(victim.pk)},
        {"user__id__exact": str(victim.pk)},
        {"ip_address": "192.0.2.1"},
        {"id_digest__startswith": key[:4]},
        {"_facets": "1"},
    ]
    other_pages = [
        f"{SESSIONS}{key}/change/",
        f"{SESSIONS}{key}/change/?_to_field=id_digest",
        f"{SESSIONS}{key}/change/?_changelist_filters=o%3D1",
        f"{SESSIONS}{key}/",
        f"{SESSIONS}{key}/delete/",
        f"{SESSIONS}{key}/history/",
        f"/admin/r/{content_type.pk}/{key}/",
        f"/admin/r/{content_type.pk}/{admin_quote(sessions[0].session_id)}/",
        "/admin/",
        "/admin/django_authfw/",
        "/admin/django_authfw/token/",
        "/admin/django_authfw/kventry/",
        "/admin/django_authfw/auditlog/",
        "/admin/django_authfw/auditlog/dashboard/",
        f"/admin/auth/user/{victim.pk}/change/",
        f"/admin/auth/user/{victim.pk}/delete/",
    ] + [
        "/admin/autocomplete/?app_label=django_authfw&model_name=session&field_name=" + name
        for name in ("user", "session_id", "id_digest", "pk")
    ]
    for token in Token.objects.all():
        other_pages.append(f"/admin/django_authfw/token/{admin_quote(token.pk)}/change/")
    for event in AuditLog.objects.all():
        other_pages.append(f"/admin/django_authfw/auditlog/{event.pk}/change/")
    for client in (viewer, root):
        for query in lists:
            response = client.get(SESSIONS, query)
            assert response.status_code in (200, 302, 400), query
            assert not leaks(page_text(response), sessions), query
        for address in other_pages:
            response = client.get(address)
            assert response.status_code < 500, address
            assert not leaks(page_text(response), sessions), address
    # The superuser's attempt to delete the user, and the "delete selected" confirmation.
    response = root.post(
        "/admin/auth/user/",
        {"action": "delete_selected", "_selected_action": [str(victim.pk)]},
    )
    assert not leaks(page_text(response), sessions)


def test_no_audit_row_holds_a_session_id(root: Client, user_factory: Any) -> None:
    framework = database_framework()
    victim = user_factory(username="victim")
    sessions = [framework.create_session(victim) for _ in range(3)]
    key = session_id_digest(sessions[0].session_id)
    ended = root.post(SESSIONS, {"action": "end_sessions", "_selected_action": [key]}, follow=True)
    assert "Ended 1 session(s)." in ended.content.decode()
    assert not leaks(page_text(ended), sessions)
    framework.end_session(sessions[1].session_id)
    framework.end_user_sessions(victim)
    assert AuditLog.objects.filter(action="session_end").count() == 3
    for row in AuditLog.objects.values():
        assert not leaks(json.dumps(row, default=str), sessions), row


def test_a_session_row_written_through_the_orm_gets_the_digest_of_its_id(
    root: Client, user_factory: Any
) -> None:
    """Only the storage's writers set ``id_digest``: a row written through the ORM (an app's
    data migration or test fixture, ``create``, ``save``, ``bulk_create``) got ``""``, so the
    admin could not open it and the second such row broke the unique constraint."""
    import hashlib

    from django.db import transaction

    user = user_factory(username="orm")
    with transaction.atomic():
        Session.objects.create(session_id="orm-create", user=user)
        Session(session_id="orm-save", user=user).save()
        Session.objects.bulk_create(
            [Session(session_id=f"orm-bulk-{n}", user=user) for n in (1, 2)]
        )
    stored = dict(Session.objects.values_list("session_id", "id_digest"))
    assert stored == {sid: hashlib.sha256(sid.encode()).hexdigest() for sid in stored}
    assert len(stored) == 4
    response = root.get(f"{SESSIONS}{stored['orm-save']}/change/")
    assert response.status_code == 200
    assert str(Session.objects.get(pk="orm-save")) == "or…"  # a third of it
    assert "or…" in response.content.decode()


class SessionsElsewhere:
    """Migrates django_authfw's session model on "authfw_second" only, as a router keyed on the
    model may (the other models are left to the other routers)."""

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if app_label == "django_authfw" and model_name == "session":
            return db == "authfw_second"
        return None


def test_migration_0005_fills_only_where_the_routers_migrate_sessions(settings: Any) -> None:
    """The fill (a ``RunPython``) named no model, so routers were asked about the app alone: on
    a database where sessions are not migrated (its ``AddField`` skipped, no such table) it
    still ran, and ``migrate`` failed on the missing table. Migrations 0003 and 0004 ask about
    the model (``allow_migrate_model``)."""
    import importlib

    from django.db import router
    from django.db.migrations import RunPython

    settings.DATABASE_ROUTERS = [f"{__name__}.SessionsElsewhere"]
    module = importlib.import_module("django_authfw.migrations.0005_session_id_digest")
    (fill,) = [op for op in module.Migration.operations if isinstance(op, RunPython)]
    add_field = module.Migration.operations[0]
    for db in ("default", "authfw_second"):
        expected = router.allow_migrate_model(db, Session)
        assert add_field.allow_migrate_model(db, Session) == expected
        assert router.allow_migrate(db, "django_authfw", **fill.hints) == expected, db


@pytest.mark.parametrize(
    "address",
    [
        f"{SESSIONS}?user_agent=%00",
        f"{SESSIONS}?data__a=%00",
        f"{SESSIONS}?id_digest=%00",
        f"{SESSIONS}?ip_address=999.1.1.1",
        f"{SESSIONS}?created_at__year=99999",
        f"{SESSIONS}?user_agent__regex=(",
        f"{SESSIONS}?data__contains=x",
        "/admin/django_authfw/token/?token_type=%00",
        "/admin/django_authfw/token/?access_token__regex=[",
        "/admin/django_authfw/kventry/?key=%00",
        "/admin/django_authfw/kventry/?value__startswith=x",
    ],
)
def test_a_lookup_the_list_does_not_offer_is_refused(
    viewer: Client, user_factory: Any, address: str
) -> None:
    """Django allows any lookup on a list's own columns in the query string: on the token,
    session and key-value lists a NUL, an address or a year out of range, or a broken regular
    expression was a server error, and ``__regex`` ran any pattern over the table, for any
    staff member allowed to view it. The lists offer their filters and the search box only;
    anything else is refused (400), as Django refuses a lookup it does not allow."""
    database_framework().create_session(user_factory(username="victim"), {"a": 1})
    viewer.raise_request_exception = False
    assert viewer.get(address).status_code == 400


@pytest.mark.parametrize(
    "address",
    [
        f"{SESSIONS}?expiry=active",
        f"{SESSIONS}?expiry=%00",
        f"{SESSIONS}?q=victim",
        "/admin/django_authfw/token/?status=revoked",
        "/admin/django_authfw/kventry/?expiry=expired&q=a",
    ],
)
def test_the_lists_filters_and_search_still_work(viewer: Client, address: str) -> None:
    assert viewer.get(address).status_code == 200


def test_a_session_id_changed_by_queryset_update_keeps_its_digest_true(
    root: Client, user_factory: Any
) -> None:
    """``QuerySet.update(session_id=...)`` (an app's data migration, say) wrote the new id
    beside the old id's digest: the admin's address of the row was the digest of an id it no
    longer had, and the row's true digest opened nothing."""
    import hashlib

    from django.db.models import F, Value
    from django.db.models.functions import Concat

    session = database_framework().create_session(user_factory(username="renamed"))
    Session.objects.filter(pk=session.session_id).update(session_id="renamed-id")
    stored = Session.objects.values_list("id_digest", flat=True).get(pk="renamed-id")
    assert stored == hashlib.sha256(b"renamed-id").hexdigest()
    assert root.get(f"{SESSIONS}{stored}/change/").status_code == 200
    # An expression cannot be digested in Python: refused, nothing written.
    with pytest.raises(ValueError, match="id_digest"):
        Session.objects.update(session_id=Concat(F("session_id"), Value("x")))
    assert Session.objects.filter(pk="renamed-id").exists()


@pytest.mark.parametrize(
    "session_id", ["Q~1", "Q~7Xk9Wm2Pv4", "Q~7Xk9Wm2Pv4Rt8Y", "Q~7Xk9Wm2Pv4Rt8Yb3Nc"]
)
def test_a_short_session_id_is_not_shown_whole_or_nearly(
    viewer: Client, user_factory: Any, session_id: str
) -> None:
    """The admin and the audit log show a session id's first 12 characters: the whole id when
    it has 12 or fewer (the storage takes any id of 1 to 255 characters: ``store_session``,
    ``import_sessions``, ``authfw_migrate`` from another store), nearly all of it when it has a
    few more. At most a third of an id is shown now; the framework's own 43-character ids
    still show 12."""
    from django_authfw import audit
    from django_authfw.storage import DatabaseStorage

    user = user_factory(username="short")
    DatabaseStorage().store_session(SessionData(session_id=session_id, user_id=str(user.pk)))
    key = session_id_digest(session_id)
    pages = [viewer.get(SESSIONS), viewer.get(f"{SESSIONS}{key}/change/")]
    assert [page.status_code for page in pages] == [200, 200]
    # "Q~" and what follows it appear in no page but as the shown part of this id.
    too_much = session_id[: len(session_id) // 3 + 1]
    for page in pages:
        assert too_much not in page.content.decode()
    assert str(Session.objects.get(pk=session_id)) == session_id[: len(session_id) // 3] + "…"
    assert too_much not in audit.session_resource(session_id)
    long_id = database_framework().create_session(user).session_id
    assert audit.session_resource(long_id) == f"session:{long_id[:12]}…"
