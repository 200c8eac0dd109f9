"""The audit admin's search: full text on PostgreSQL (the GIN index of migration 0003, used by
the planner), exact values elsewhere; addresses and users exactly everywhere."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.admin import site
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from django_authfw import AuthFramework, audit_search
from django_authfw.admin_audit import AuditLogAdmin
from django_authfw.models import AuditLog
from django_authfw.request_info import RequestInfo

from .http_support import fast_hashing, user_factory

__all__ = ["fast_hashing", "user_factory"]

pytestmark = pytest.mark.django_db

AUDIT = "/admin/django_authfw/auditlog/"
POSTGRESQL = connection.vendor == "postgresql"
only_postgresql = pytest.mark.skipif(not POSTGRESQL, reason="full-text search is PostgreSQL's")
not_postgresql = pytest.mark.skipif(POSTGRESQL, reason="the fallback of other databases")


@pytest.fixture
def superuser_client(client: Client, user_factory: Any) -> Client:
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def logged(user_factory: Any) -> dict[str, str]:
    """Events with words in each searched place; returns the user's id."""
    user = user_factory(username="wendy")
    framework = AuthFramework()
    framework.audit(
        "device_check",
        False,
        user_id=str(user.pk),
        request_info=RequestInfo("198.51.100.50", "CorpVPN/4.2 (quarantine agent)"),
        resource="device:laptop-0042",
        metadata={"finding": "quarantined firmware", "count": 42},
    )
    framework.audit("register", True, user_id="999", request_info=RequestInfo("192.0.2.1"))
    framework.audit("login", False, metadata={"username": "wendi", "reason": "unknown_user"})
    return {"user_id": str(user.pk)}


def found(client: Client, term: str) -> list[str]:
    response = client.get(AUDIT, {"q": term})
    assert response.status_code == 200
    return sorted(event.action for event in response.context["cl"].result_list)


@only_postgresql
def test_full_text_finds_a_word_of_the_metadata(
    superuser_client: Client, logged: dict[str, str]
) -> None:
    assert found(superuser_client, "quarantined") == ["device_check"]
    assert found(superuser_client, "QUARANTINED firmware") == ["device_check"]
    assert found(superuser_client, "firmware quarantined") == ["device_check"]  # every word
    assert found(superuser_client, "quarantined nowhere") == []


@only_postgresql
def test_full_text_finds_words_of_the_action_resource_and_user_agent(
    superuser_client: Client, logged: dict[str, str]
) -> None:
    assert found(superuser_client, "device_check") == ["device_check"]
    assert found(superuser_client, "laptop-0042") == ["device_check"]
    assert found(superuser_client, "corpvpn/4.2") == ["device_check"]
    assert found(superuser_client, "corpvpn") == ["device_check"]  # the product alone
    assert found(superuser_client, "CorpVPN 4.2") == ["device_check"]
    assert found(superuser_client, "unknown_user") == ["login"]
    # Metadata keys and numbers are not words of an event.
    assert found(superuser_client, "finding") == []
    assert found(superuser_client, "42") == []


def test_addresses_users_and_usernames_match_exactly(
    superuser_client: Client, logged: dict[str, str]
) -> None:
    assert found(superuser_client, "198.51.100.50") == ["device_check"]
    assert found(superuser_client, "198.51") == []
    assert found(superuser_client, "999") == ["register"]
    assert found(superuser_client, logged["user_id"]) == ["device_check"]
    assert found(superuser_client, "WENDY") == ["device_check"]  # a username, by its user id
    assert found(superuser_client, "';--") == []
    assert found(superuser_client, "&|!:*") == []


@not_postgresql
def test_other_databases_search_exact_values_only(
    superuser_client: Client, logged: dict[str, str]
) -> None:
    assert found(superuser_client, "quarantined") == []
    assert found(superuser_client, "device_check") == []
    page = superuser_client.get(AUDIT).content.decode()
    assert "An exact user id, username or IP address." in page
    with connection.cursor() as cursor:
        names = set(connection.introspection.get_constraints(cursor, AuditLog._meta.db_table))
    assert audit_search.INDEX_NAME not in names
    assert "idx_audit_action_outcome" in names
    assert "idx_audit_login_failures" in names


@only_postgresql
def test_the_planner_answers_a_search_from_the_gin_index(
    superuser_client: Client, logged: dict[str, str]
) -> None:
    admin = AuditLogAdmin(AuditLog, site)
    request = superuser_client.get(AUDIT).wsgi_request
    for term in ("quarantined", "wendy"):
        queryset, _ = admin.get_search_results(request, AuditLog.objects.all(), term)
        sql, params = queryset.order_by().values("id").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert f"Bitmap Index Scan on {audit_search.INDEX_NAME}" in plan, plan


@only_postgresql
def test_no_date_hierarchy_queries_while_searching_words(
    superuser_client: Client, logged: dict[str, str]
) -> None:
    with CaptureQueriesContext(connection) as captured:
        response = superuser_client.get(AUDIT, {"q": "quarantined"})
    assert response.context["cl"].date_hierarchy is None
    to_tsvector = [q["sql"] for q in captured.captured_queries if "to_tsvector" in q["sql"]]
    assert to_tsvector  # the count and the page
    for sql in to_tsvector:
        assert not re.search(r"LIMIT 1\b", sql)
        assert "MIN(" not in sql.upper()
    # Without a search, and with an address search, the drill-down is there.
    assert superuser_client.get(AUDIT).context["cl"].date_hierarchy == "created_at"
    searched = superuser_client.get(AUDIT, {"q": "198.51.100.50"})
    assert searched.context["cl"].date_hierarchy == "created_at"


@only_postgresql
def test_the_index_is_on_the_expression_the_search_compiles() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_indexdef(to_regclass(%s))", [audit_search.INDEX_NAME])
        row = cursor.fetchone()
    assert row
    assert row[0]
    assert "USING gin" in row[0]
    assert "jsonb_to_tsvector('simple'::regconfig, metadata" in row[0]
    assert "user_agent" in row[0]


@pytest.mark.django_db(transaction=True)
def test_migration_0003_goes_back_and_forth() -> None:
    def indexes() -> set[str]:
        with connection.cursor() as cursor:
            return set(connection.introspection.get_constraints(cursor, AuditLog._meta.db_table))

    added = {"idx_audit_action_outcome", "idx_audit_login_failures"}
    if POSTGRESQL:
        added.add(audit_search.INDEX_NAME)
    assert added <= indexes()
    try:
        call_command("migrate", "django_authfw", "0002", verbosity=0)
        assert not added & indexes()
    finally:
        call_command("migrate", "django_authfw", verbosity=0)
    assert added <= indexes()
    assert (audit_search.INDEX_NAME in indexes()) is POSTGRESQL


@only_postgresql
@pytest.mark.django_db(transaction=True)
def test_migration_0003_finishes_an_interrupted_run() -> None:
    """Run again after a failure, it keeps what was built and rebuilds an INVALID index."""
    table = AuditLog._meta.db_table
    framework = AuthFramework()
    framework.audit("login", True)
    framework.audit("login", True)
    try:
        call_command("migrate", "django_authfw", "0002", verbosity=0)
        with connection.cursor() as cursor:
            # The first index built, as if the run stopped after it...
            cursor.execute(
                f"CREATE INDEX idx_audit_action_outcome ON {table} (action, outcome, created_at)"
            )
            # ... and the search index left INVALID by a failed concurrent build.
            name = audit_search.INDEX_NAME
            with pytest.raises(Exception, match="could not create unique index"):
                cursor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON {table} (action)")
    finally:
        call_command("migrate", "django_authfw", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indexrelid = to_regclass(%s)",
            [audit_search.INDEX_NAME],
        )
        valid, definition = cursor.fetchone() or (None, "")
    assert valid is True
    assert "USING gin" in definition
