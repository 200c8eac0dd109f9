"""A record written by any backend migrates into every other (issue 11, "Done when").

Every ordered pair of the four base backends (database, in-memory, locmem, Redis): records
are written into the source through its public methods, the way an application writes them,
copied with :class:`~django_authfw.migration.StorageMigration` (``verify=True``), and read back
from the target unchanged, key-value expiries included. Before the validating front a session
address or a TTL one backend took could be refused by another, half-way through a migration.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest

from django_authfw.migration import KV_EXPIRY_TOLERANCE, StorageMigration
from django_authfw.records import AuditEvent, SessionData, utcnow
from django_authfw.storage import AuthStorage

from .backends import backend_id, built_storage, selected_backends
from .factories import AuthTokenFactory

PAIRS = list(itertools.permutations(selected_backends(), 2))


def _write_everything(storage: AuthStorage, user_id: str) -> dict[str, object]:
    now = utcnow()
    token = AuthTokenFactory.build(
        user_id=user_id,
        permissions=["read", "write"],
        roles=["staff"],
        metadata={"client": "cli", "nested": {"n": 1}},
    )
    storage.store_token(token)
    sessions = [
        SessionData(
            session_id="s-v4",
            user_id=user_id,
            data={"cart": [1, 2], "theme": "dark"},
            created_at=now,
            last_accessed=now,
            expires_at=now + timedelta(hours=1),
            ip_address="203.0.113.7",
            user_agent="Mozilla/5.0",
        ),
        SessionData(
            session_id="s-v6",
            user_id=user_id,
            expires_at=now + timedelta(hours=2),
            ip_address="2001:DB8::01",  # stored as 2001:db8::1 by every backend
        ),
        SessionData(session_id="s-none", user_id=user_id, expires_at=now + timedelta(hours=3)),
    ]
    for session in sessions:
        storage.store_session(session)
    storage.kv_set("ttl", b"\x00\xffbinary", timedelta(minutes=10))
    storage.kv_set("forever", b"kept")
    storage.kv_incr("counter", timedelta(minutes=5))
    storage.kv_incr("counter", timedelta(minutes=5))
    event = AuditEvent(
        action="login",
        outcome=True,
        user_id=user_id,
        resource="token",
        ip_address="::ffff:192.0.2.1",
        user_agent="curl/8",
        metadata={"username": "alice"},
    )
    storage.append_audit(event)
    return {"token": token, "event_id": event.event_id}


def _kv_expiries(storage: AuthStorage) -> dict[str, object]:
    return {
        entry.key: entry.expires_at for batch in storage.iter_kv(batch_size=10) for entry in batch
    }


@pytest.mark.parametrize(
    ("source_name", "target_name"),
    PAIRS,
    ids=[f"{backend_id(a)}->{backend_id(b)}" for a, b in PAIRS],
)
def test_records_of_every_backend_migrate_into_every_other(
    source_name: str,
    target_name: str,
    settings: object,
    make_user: Callable[..., str],
) -> None:
    user_id = make_user()
    with (
        built_storage(source_name, settings) as source,
        built_storage(target_name, settings) as target,
    ):
        written = _write_everything(source, user_id)

        summary = StorageMigration(source, target, batch_size=2, verify=True).migrate_all()

        assert summary.ok, summary.mismatches
        assert {kind: summary[kind].copied for kind in ("tokens", "sessions", "kv", "audit")} == {
            "tokens": 1,
            "sessions": 3,
            "kv": 3,
            "audit": 1,
        }
        token = written["token"]
        assert target.get_token(token.token_id) == source.get_token(token.token_id) == token  # type: ignore[attr-defined]
        for session_id in ("s-v4", "s-v6", "s-none"):
            assert target.get_session(session_id) == source.get_session(session_id)
        moved = target.get_session("s-v6")
        assert moved is not None
        assert moved.ip_address == "2001:db8::1"
        assert target.kv_get("ttl") == b"\x00\xffbinary"
        assert target.kv_get("forever") == b"kept"
        assert target.kv_get("counter") == b"2"
        assert target.kv_incr("counter") == 3  # still a counter in its new home
        source_expiries, target_expiries = _kv_expiries(source), _kv_expiries(target)
        assert target_expiries["forever"] is None
        for key in ("ttl", "counter"):
            # Redis reports a key-value expiry as its remaining PTTL at the moment of reading.
            gap = abs(target_expiries[key] - source_expiries[key])  # type: ignore[operator]
            assert gap <= KV_EXPIRY_TOLERANCE
        [event] = target.query_audit()
        [original] = source.query_audit()
        assert event == original
        assert event.event_id == written["event_id"]
        assert event.ip_address == "::ffff:192.0.2.1"
