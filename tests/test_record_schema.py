"""Each record kind's schema is its dataclass (issue 11 item 1): the checks, the Redis JSON, the
database row, the backup line and the in-memory copy are all derived from
``dataclasses.fields()``, so these tests hold them to it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from django_authfw import backup, models
from django_authfw.records import AuditEvent, AuthToken, KVEntry, SessionData
from django_authfw.storage import codec
from django_authfw.storage.database import rows as convert

KINDS = [
    (AuthToken, models.Token, convert.TOKEN_COLUMNS),
    (SessionData, models.Session, convert.SESSION_COLUMNS),
    (KVEntry, models.KVEntry, convert.KV_COLUMNS),
    (AuditEvent, models.AuditLog, convert.AUDIT_COLUMNS),
]
KNOWN = {"id", "text", "digest", "time", "strings", "object", "bool", "ip", "bytes"}
T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.mark.parametrize(("record", "model", "columns"), KINDS)
def test_every_field_has_a_spec_and_a_column(record: Any, model: Any, columns: Any) -> None:
    for field in dataclasses.fields(record):
        assert field.metadata["kind"] in KNOWN, field.name
    # A field added to the record without its column (and migration) fails here, not in use.
    # Derived, database-only columns: a token's retain_until, a session's id_digest (the
    # admin's key, issue 13); both are set by rows.*_fields from the record's own fields.
    derived = {"id", "retain_until", "id_digest"}
    model_columns = {f.attname for f in model._meta.concrete_fields} - derived
    attnames = {"user": "user_id"}
    assert {attnames.get(c, c) for c in columns} == model_columns


@pytest.mark.parametrize(("record", "model", "columns"), KINDS)
def test_backup_lines_list_the_fields_in_declaration_order(
    record: Any, model: Any, columns: Any
) -> None:
    kind = {AuthToken: "token", SessionData: "session", KVEntry: "kv", AuditEvent: "audit"}
    _cls, codecs = backup.SCHEMAS[kind[record]]
    assert [c.name for c in codecs] == [f.name for f in dataclasses.fields(record)]


def test_redis_json_keeps_its_byte_layout() -> None:
    # The compact token form (docs/backends.md, Data layout): the compare-and-set scripts
    # compare records byte for byte, so the layout of stored records must not drift.
    token = AuthToken("t1", "7", "a" * 64, T0 + timedelta(hours=1), created_at=T0, updated_at=T0)
    a64 = b"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo"  # "aa...a" as url-safe base64
    assert codec.encode_token(token) == (
        b'{"id":"t1","user":"7","access":"' + a64 + b'","family":"",'
        b'"expires":1767326645678901,"created":1767323045678901}'
    )
    assert codec.encode_token(dataclasses.replace(token, family_id="t1"), "t1") == (
        b'{"user":"7","access":"' + a64 + b'","expires":1767326645678901,'
        b'"created":1767323045678901}'
    )
    full = dataclasses.replace(
        token, refresh_digest="c" * 64, refresh_expires_at=T0, family_id="f", roles=["r"]
    )
    assert list(codec._loads(codec.encode_token(full), "token")) == [
        "id",
        "user",
        "access",
        "refresh",
        "family",
        "expires",
        "refresh_expires",
        "created",
        "roles",
    ]
    event = AuditEvent("login", True, created_at=T0, event_id="e1")
    assert codec.encode_event(event) == (
        b'{"event_id":"e1","action":"login","outcome":true,"user_id":null,"resource":null,'
        b'"ip_address":null,"user_agent":"","created_at":"2026-01-02T03:04:05.678901Z",'
        b'"metadata":{}}'
    )
    assert codec.decode_token(codec.encode_token(full)) == full
    assert codec.decode_event(codec.encode_event(event)) == event


def test_a_redis_record_without_a_field_added_later_reads_its_default() -> None:
    session = SessionData("s1", "7", {"a": 1}, T0, T0, None, "10.0.0.1", "ua")
    raw = codec._loads(codec.encode_session(session), "session")
    del raw["user_agent"]  # as a record written before user_agent existed would be
    assert codec.decode_session(codec.dumps(raw, "s")) == dataclasses.replace(
        session, user_agent=""
    )
