"""AuthFramework flows on every storage backend: register, login, verify, refresh, revoke,
introspect, sessions, key-value, lockout."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from django_authfw import AuthFramework, tokens
from django_authfw.exceptions import (
    AccountLocked,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    TokenExpired,
    TokenRevoked,
    UserExists,
)
from django_authfw.records import replace, utcnow
from django_authfw.storage import AuthStorage, DatabaseStorage
from django_authfw.tokens import IssuedToken

from .framework_support import (  # noqa: F401  (fixtures are used by name)
    CLIENT,
    PASSWORD,
    auth_fixture,
    counting_hasher_fixture,
    db_audit_fixture,
    grant_perms,
)
from .hashers import FAST_PBKDF2_HASHER

User = get_user_model()


def close_to(
    value: datetime | None, expected: datetime, slack: timedelta = timedelta(seconds=5)
) -> bool:
    assert value is not None
    return abs(value - expected) < slack


# The README's scenario ------------------------------------------------------------------------


def test_with_storage(storage: AuthStorage, settings: Any) -> None:
    """Register, log in, verify, revoke (the README's walk-through), with real Argon2."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.Argon2PasswordHasher"]
    auth = AuthFramework(storage=storage)
    auth.register_user("test", "password")
    token = auth.authenticate("test", "password")
    assert token.access_token
    assert User.objects.get(username="test").password.startswith("argon2$argon2id$")
    assert auth.verify_token(token.access_token).user_id == token.user_id


# Registration ---------------------------------------------------------------------------------


def test_register_user(auth: AuthFramework, storage: AuthStorage) -> None:
    user = auth.register_user("alice", PASSWORD, request_info=CLIENT, email="a@example.com")
    assert isinstance(user, User)
    assert user.get_username() == "alice"
    assert user.email == "a@example.com"
    assert user.pk is not None
    assert user.check_password(PASSWORD)
    assert user.password.startswith("argon2$")
    [event] = storage.query_audit(action="register")
    assert event.outcome is True
    assert event.user_id == str(user.pk)
    assert (event.ip_address, event.user_agent) == (CLIENT.ip_address, CLIENT.user_agent)


def test_register_existing_username(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.register_user("alice", PASSWORD)
    with pytest.raises(UserExists, match="'alice' already exists; choose another"):
        auth.register_user("alice", "another password")
    assert User.objects.filter(username="alice").count() == 1
    assert storage.count_audit(action="register") == 1


def test_register_rejects_unknown_fields(auth: AuthFramework, storage: AuthStorage) -> None:
    with pytest.raises(InvalidInput, match="could not be created"):
        auth.register_user("alice", PASSWORD, no_such_field=1)
    assert not User.objects.exists()
    assert storage.count_audit() == 0


# Login ----------------------------------------------------------------------------------------


def test_authenticate_issues_a_token_pair(
    auth: AuthFramework, storage: AuthStorage, settings: Any
) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "REFRESH_TOKEN_TTL": timedelta(days=3)}
    user = auth.register_user("alice", PASSWORD)
    grant_perms(user, "view_user", "add_group", groups=("staff", "editors"))
    issued = auth.authenticate("alice", PASSWORD, request_info=CLIENT)

    assert isinstance(issued, IssuedToken)
    assert issued.token_type == "Bearer"
    assert issued.access_token.startswith("afw_at_")
    assert issued.refresh_token
    assert issued.refresh_token.startswith("afw_rt_")
    assert len(issued.access_token) == len(issued.refresh_token) == tokens.RAW_TOKEN_LENGTH
    assert issued.user_id == str(user.pk)
    assert issued.permissions == ("auth.add_group", "auth.view_user")
    assert issued.roles == ("editors", "staff")
    assert close_to(issued.expires_at, utcnow() + timedelta(hours=1))
    assert close_to(issued.refresh_expires_at, utcnow() + timedelta(days=3))
    assert issued.expires_in == 3600

    record = storage.get_token(issued.token_id)
    assert record is not None
    assert record.access_digest == hashlib.sha256(issued.access_token.encode()).hexdigest()
    assert record.refresh_digest == hashlib.sha256(issued.refresh_token.encode()).hexdigest()
    # The id comes from the access digest; a login's family is named after its first token.
    assert record.token_id == tokens.token_id_for(record.access_digest)
    assert record.family_id == record.token_id
    assert record.permissions == list(issued.permissions)
    assert record.roles == list(issued.roles)
    assert record.metadata == {"ip_address": "203.0.113.9", "user_agent": "pytest-client/1.0"}

    [event] = storage.query_audit(action="login")
    assert event.outcome is True
    assert event.user_id == str(user.pk)
    assert event.metadata == {"token_id": issued.token_id, "family_id": record.family_id}
    assert event.ip_address == "203.0.113.9"


def test_every_login_is_a_new_family(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.register_user("alice", PASSWORD)
    first, second = (auth.authenticate("alice", PASSWORD) for _ in range(2))
    records = [storage.get_token(t.token_id) for t in (first, second)]
    assert len({r.family_id for r in records if r}) == 2
    assert first.access_token != second.access_token


@pytest.mark.parametrize("case", ["wrong_password", "unknown_user", "inactive"])
def test_failed_login(auth: AuthFramework, storage: AuthStorage, case: str) -> None:
    user = auth.register_user("alice", PASSWORD)
    if case == "inactive":
        User.objects.filter(pk=user.pk).update(is_active=False)
    username = "bob" if case == "unknown_user" else "alice"
    password = "wrong password" if case == "wrong_password" else PASSWORD
    with pytest.raises(InvalidCredentials) as caught:
        auth.authenticate(username, password, request_info=CLIENT)
    assert str(caught.value) == "Invalid username or password."
    assert storage.statistics()["total_tokens"] == 0
    [event] = storage.query_audit(action="login")
    assert event.outcome is False
    assert event.metadata == {"username": username, "reason": case}
    assert event.user_id == (None if case == "unknown_user" else str(user.pk))
    assert event.ip_address == CLIENT.ip_address


def test_login_upgrades_an_outdated_hash_without_revoking(
    auth: AuthFramework, storage: AuthStorage, settings: Any
) -> None:
    settings.PASSWORD_HASHERS = [FAST_PBKDF2_HASHER, *settings.PASSWORD_HASHERS]
    auth.register_user("alice", PASSWORD)
    first = auth.authenticate("alice", PASSWORD)
    settings.PASSWORD_HASHERS = settings.PASSWORD_HASHERS[1:]  # Argon2 preferred again
    auth.authenticate("alice", PASSWORD)
    assert User.objects.get(username="alice").password.startswith("argon2$")
    # A hash upgrade is not a password change: the earlier token still works.
    assert auth.verify_token(first.access_token).token_id == first.token_id


# Verification ---------------------------------------------------------------------------------


def test_verify_token(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.register_user("alice", PASSWORD)
    issued = auth.authenticate("alice", PASSWORD)
    before = storage.get_token(issued.token_id)
    record = auth.verify_token(issued.access_token)
    assert record == before
    assert storage.get_token(issued.token_id) == before  # nothing written
    user = auth.get_user(record)
    assert user is not None
    assert user.get_username() == "alice"


def test_verify_token_is_one_query_on_the_database(
    db: None, django_assert_num_queries: Any
) -> None:
    auth = AuthFramework(storage=DatabaseStorage())
    auth.register_user("alice", PASSWORD)
    issued = auth.authenticate("alice", PASSWORD)
    with django_assert_num_queries(1):
        auth.verify_token(issued.access_token)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not a token",
        "afw_rt_" + "A" * 43,  # a refresh token where an access token is expected
        "afw_at_" + "A" * 42 + "!",
        "afw_at_" + "A" * 44,
        None,
        42,
    ],
)
def test_verify_malformed_token(auth: AuthFramework, bad: Any) -> None:
    with pytest.raises(InvalidToken) as caught:
        auth.verify_token(bad)
    assert "malformed" in str(caught.value)
    if isinstance(bad, str) and bad:
        assert bad not in str(caught.value)


def test_verify_unknown_revoked_expired(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.register_user("alice", PASSWORD)
    unknown = tokens.new_secret(tokens.ACCESS_PREFIX)
    with pytest.raises(InvalidToken) as caught:
        auth.verify_token(unknown)
    assert type(caught.value) is InvalidToken
    assert unknown not in str(caught.value)

    expired = auth.authenticate("alice", PASSWORD)
    record = storage.get_token(expired.token_id)
    assert record is not None
    storage.update_token(replace(record, expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(TokenExpired, match="refresh it or log in again"):
        auth.verify_token(expired.access_token)

    revoked = auth.authenticate("alice", PASSWORD)
    assert auth.revoke_token(revoked.access_token) is True
    with pytest.raises(TokenRevoked) as revoked_error:
        auth.verify_token(revoked.access_token)
    assert revoked.access_token not in str(revoked_error.value)


def test_get_user_of_inactive_or_deleted_user(auth: AuthFramework) -> None:
    user = auth.register_user("alice", PASSWORD)
    record = auth.verify_token(auth.authenticate("alice", PASSWORD).access_token)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert auth.get_user(record) is None
    User.objects.filter(pk=user.pk).update(is_active=True)
    assert auth.get_user(record) == user
    User.objects.filter(pk=user.pk).delete()
    assert auth.get_user(record) is None


# Refresh --------------------------------------------------------------------------------------


def test_refresh_rotates(auth: AuthFramework, storage: AuthStorage) -> None:
    user = auth.register_user("alice", PASSWORD)
    first = auth.authenticate("alice", PASSWORD)
    grant_perms(user, "change_user", groups=("ops",))  # picked up by the refresh
    second = auth.refresh(first.refresh_token or "", request_info=CLIENT)

    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    assert second.token_id != first.token_id
    assert second.user_id == first.user_id
    assert second.permissions == ("auth.change_user",)
    assert second.roles == ("ops",)
    old, new = storage.get_token(first.token_id), storage.get_token(second.token_id)
    assert old is not None
    assert new is not None
    assert old.is_revoked
    assert old.replaced_by == second.token_id
    assert new.family_id == old.family_id
    assert not new.is_revoked
    assert new.metadata["parent_id"] == first.token_id
    with pytest.raises(TokenRevoked):
        auth.verify_token(first.access_token)
    assert auth.verify_token(second.access_token).token_id == second.token_id
    [event] = storage.query_audit(action="refresh")
    assert event.outcome is True
    assert event.metadata["token_id"] == second.token_id

    third = auth.refresh(second.refresh_token or "")
    assert storage.get_token(third.token_id).family_id == old.family_id  # type: ignore[union-attr]


def test_refresh_token_reuse_revokes_the_family(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.register_user("alice", PASSWORD)
    other_login = auth.authenticate("alice", PASSWORD)
    stolen = auth.authenticate("alice", PASSWORD)
    legit = auth.refresh(stolen.refresh_token or "")
    newest = auth.refresh(legit.refresh_token or "")

    with pytest.raises(TokenRevoked) as caught:
        auth.refresh(stolen.refresh_token or "", request_info=CLIENT)
    assert isinstance(caught.value, InvalidToken)  # the issue's "raises InvalidToken"
    assert "already used" in str(caught.value)
    with pytest.raises(TokenRevoked):
        auth.verify_token(newest.access_token)
    with pytest.raises(TokenRevoked):
        auth.refresh(newest.refresh_token or "")
    # Another login of the same user is another family and keeps working.
    assert auth.verify_token(other_login.access_token)

    events = storage.query_audit(action="refresh_reuse")
    assert events
    assert all(e.outcome is False for e in events)
    first = events[-1]
    assert first.metadata["token_id"] == stolen.token_id
    assert first.metadata["revoked"] == 1  # only `newest` was still live
    assert first.ip_address == CLIENT.ip_address


def test_refresh_errors(auth: AuthFramework, storage: AuthStorage) -> None:
    user = auth.register_user("alice", PASSWORD)
    with pytest.raises(InvalidToken, match="malformed"):
        auth.refresh("afw_at_" + "A" * 43)  # an access token is not a refresh token
    with pytest.raises(InvalidToken, match="not valid"):
        auth.refresh(tokens.new_secret(tokens.REFRESH_PREFIX))

    # Refresh expired while the record is kept for its access lifetime: TokenExpired.
    issued = auth.authenticate("alice", PASSWORD)
    record = storage.get_token(issued.token_id)
    assert record is not None
    storage.update_token(replace(record, refresh_expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(TokenExpired):
        auth.refresh(issued.refresh_token or "")

    # Logged out (revoked, not rotated): TokenRevoked, no family revocation.
    logged_out = auth.authenticate("alice", PASSWORD)
    auth.revoke_token(logged_out.access_token)
    with pytest.raises(TokenRevoked, match="was revoked"):
        auth.refresh(logged_out.refresh_token or "")
    assert storage.count_audit(action="refresh_reuse") == 0

    # Inactive user: InvalidToken, and the pair is revoked.
    live = auth.authenticate("alice", PASSWORD)
    User.objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(InvalidToken, match="no longer exists or cannot log in"):
        auth.refresh(live.refresh_token or "")
    assert storage.get_token(live.token_id).is_revoked  # type: ignore[union-attr]
    events = storage.query_audit(action="refresh")
    assert all(e.outcome is False for e in events)
    assert sorted(e.metadata["reason"] for e in events) == [
        "expired",
        "inactive_user",
        "malformed",
        "revoked",
        "unknown",
    ]
    # Refused before any token was found: audited with no user, nothing about the token.
    unknown = [e for e in events if e.metadata["reason"] in {"malformed", "unknown"}]
    assert [e.user_id for e in unknown] == [None, None]
    assert all(e.metadata == {"reason": e.metadata["reason"]} for e in unknown)


def test_refresh_of_a_deleted_user(auth: AuthFramework) -> None:
    user = auth.register_user("alice", PASSWORD)
    issued = auth.authenticate("alice", PASSWORD)
    User.objects.filter(pk=user.pk).delete()
    with pytest.raises(InvalidToken):
        auth.refresh(issued.refresh_token or "")


def test_refresh_without_rotation(auth: AuthFramework, storage: AuthStorage, settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "ROTATE_REFRESH_TOKENS": False}
    auth.register_user("alice", PASSWORD)
    first = auth.authenticate("alice", PASSWORD)
    second = auth.refresh(first.refresh_token or "")
    assert second.refresh_token == first.refresh_token
    assert second.token_id == first.token_id
    assert second.access_token != first.access_token
    with pytest.raises(InvalidToken):
        auth.verify_token(first.access_token)
    assert auth.verify_token(second.access_token).token_id == first.token_id
    third = auth.refresh(first.refresh_token or "")  # the same refresh token works again
    assert auth.verify_token(third.access_token)
    assert storage.statistics()["total_tokens"] == 1


# Revocation -----------------------------------------------------------------------------------


def test_revoke_token(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.register_user("alice", PASSWORD)
    issued = auth.authenticate("alice", PASSWORD)
    assert auth.revoke_token(issued.access_token, request_info=CLIENT) is True
    assert auth.revoke_token(issued.access_token) is False  # already revoked
    with pytest.raises(TokenRevoked):
        auth.refresh(issued.refresh_token or "")
    assert auth.revoke_token(tokens.new_secret(tokens.ACCESS_PREFIX)) is False
    assert auth.revoke_token(tokens.new_secret(tokens.REFRESH_PREFIX)) is False
    assert auth.revoke_token("junk") is False
    assert auth.revoke_token("afw_at_short") is False
    with pytest.raises(InvalidInput):
        auth.revoke_token(None)  # type: ignore[arg-type]
    [event] = storage.query_audit(action="revoke")
    assert event.metadata == {
        "token_id": issued.token_id,
        "token_type_hint": "access_token",
        "count": 1,
    }
    assert event.ip_address == CLIENT.ip_address


def test_revoke_refresh_token_ends_the_login(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.register_user("alice", PASSWORD)
    first = auth.authenticate("alice", PASSWORD)
    second = auth.refresh(first.refresh_token or "")
    other = auth.authenticate("alice", PASSWORD)
    assert auth.revoke_token(second.refresh_token or "") is True
    with pytest.raises(TokenRevoked):
        auth.verify_token(second.access_token)
    assert auth.verify_token(other.access_token)
    [event] = storage.query_audit(action="revoke")
    assert event.metadata["token_type_hint"] == "refresh_token"


def test_revoke_user_tokens(auth: AuthFramework, storage: AuthStorage) -> None:
    alice = auth.register_user("alice", PASSWORD)
    auth.register_user("bob", PASSWORD)
    alices = [auth.authenticate("alice", PASSWORD) for _ in range(3)]
    bobs = auth.authenticate("bob", PASSWORD)
    assert auth.revoke_user_tokens("alice", request_info=CLIENT) == 3
    assert auth.revoke_user_tokens(alice) == 0
    for issued in alices:
        with pytest.raises(TokenRevoked):
            auth.verify_token(issued.access_token)
    assert auth.verify_token(bobs.access_token)
    with pytest.raises(InvalidInput, match="No user with username 'carol'"):
        auth.revoke_user_tokens("carol")
    counts = [e.metadata["count"] for e in storage.query_audit(action="revoke_all")]
    assert counts == [0, 3]


# Introspection --------------------------------------------------------------------------------


def test_introspect(auth: AuthFramework, storage: AuthStorage) -> None:
    user = auth.register_user("alice", PASSWORD)
    grant_perms(user, "view_user", "add_user")
    issued = auth.authenticate("alice", PASSWORD)
    assert auth.introspect(issued.access_token) == {
        "active": True,
        "scope": "auth.add_user auth.view_user",
        "username": "alice",
        "token_type": "Bearer",
        "exp": int(issued.expires_at.timestamp()),
        "iat": int(storage.get_token(issued.token_id).created_at.timestamp()),  # type: ignore[union-attr]
        "sub": str(user.pk),
        "jti": issued.token_id,
    }
    refresh_view = auth.introspect(issued.refresh_token or "")
    assert refresh_view["active"] is True
    assert refresh_view["token_type"] == "refresh_token"
    assert refresh_view["exp"] == int(issued.refresh_expires_at.timestamp())  # type: ignore[union-attr]

    inactive = {"active": False}
    assert auth.introspect(tokens.new_secret(tokens.ACCESS_PREFIX)) == inactive
    assert auth.introspect("junk") == inactive
    assert auth.introspect(None) == inactive  # type: ignore[arg-type]
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert auth.introspect(issued.access_token) == inactive
    User.objects.filter(pk=user.pk).update(is_active=True)
    record = storage.get_token(issued.token_id)
    storage.update_token(replace(record, expires_at=utcnow() - timedelta(seconds=1)))
    assert auth.introspect(issued.access_token) == inactive
    assert auth.introspect(issued.refresh_token or "")["active"] is True
    auth.revoke_token(issued.refresh_token or "")
    assert auth.introspect(issued.refresh_token or "") == inactive


# Sessions -------------------------------------------------------------------------------------


def test_sessions(auth: AuthFramework, storage: AuthStorage, settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "SESSION_TTL": timedelta(hours=2)}
    alice = auth.register_user("alice", PASSWORD)
    bob = auth.register_user("bob", PASSWORD)
    s1 = auth.create_session("alice", {"cart": [1, 2]}, request_info=CLIENT)
    s2 = auth.create_session(alice, ttl=timedelta(minutes=10))
    s3 = auth.create_session(bob)
    assert len(s1.session_id) == 43
    assert s1.user_id == str(alice.pk)
    assert close_to(s1.expires_at, utcnow() + timedelta(hours=2))
    assert close_to(s2.expires_at, utcnow() + timedelta(minutes=10))
    assert (s1.ip_address, s1.user_agent) == (CLIENT.ip_address, CLIENT.user_agent)
    assert auth.get_session(s1.session_id) == s1
    assert auth.get_session("no-such-session") is None

    assert auth.touch_session(s2.session_id) is True
    touched = auth.get_session(s2.session_id)
    assert touched is not None
    assert touched.last_accessed > s2.last_accessed
    assert close_to(touched.expires_at, touched.last_accessed + timedelta(minutes=10))
    assert auth.touch_session("no-such-session") is False

    assert [s.session_id for s in auth.list_sessions("alice")] == [s1.session_id, s2.session_id]
    assert auth.end_session(s1.session_id) is True
    assert auth.end_session(s1.session_id) is False
    assert auth.end_user_sessions(alice) == 1
    assert auth.list_sessions(alice) == []
    assert auth.list_sessions("bob") == [s3]
    assert storage.count_audit(action="session_create") == 3
    assert [e.metadata["count"] for e in storage.query_audit(action="session_end")] == [1, 1]


def test_session_bad_input(auth: AuthFramework, storage: AuthStorage) -> None:
    user = auth.register_user("alice", PASSWORD)
    with pytest.raises(InvalidInput, match="JSON"):
        auth.create_session(user, {"when": utcnow()})
    with pytest.raises(InvalidInput, match="JSON"):
        auth.create_session(user, ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="positive timedelta"):
        auth.create_session(user, ttl=timedelta(0))
    with pytest.raises(InvalidInput, match="No user"):
        auth.create_session("nobody")
    for bad in ("", "x" * 256, "a\x00b", 7):
        with pytest.raises(InvalidInput):
            auth.get_session(bad)  # type: ignore[arg-type]
    User.objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(InvalidCredentials):
        auth.create_session("alice")
    assert storage.count_active_sessions() == 0
    assert storage.count_audit(action="session_create") == 0


# Key-value ------------------------------------------------------------------------------------


def test_kv(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.kv_set("greeting", b"hello")
    auth.kv_set("short", b"x", ttl=timedelta(hours=1))
    assert auth.kv_get("greeting") == b"hello"
    assert auth.kv_get("short") == b"x"
    assert auth.kv_delete("greeting") is True
    assert auth.kv_delete("greeting") is False
    assert auth.kv_get("greeting") is None
    with pytest.raises(InvalidInput, match="bytes"):
        auth.kv_set("text", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="reserved"):
        auth.kv_set("authfw:lockout:fail:user:x", b"0")
    with pytest.raises(InvalidInput, match="positive timedelta"):
        auth.kv_set("k", b"v", ttl=timedelta(seconds=-1))
    assert [e.key for batch in storage.iter_kv() for e in batch] == ["short"]


# Lockout --------------------------------------------------------------------------------------


@pytest.fixture
def lockout_settings(settings: Any) -> None:
    settings.AUTHFW = {
        **settings.AUTHFW,
        "LOCKOUT_THRESHOLD": 3,
        "LOCKOUT_IP_THRESHOLD": 3,
        "LOCKOUT_WINDOW": timedelta(minutes=10),
    }


@pytest.mark.usefixtures("lockout_settings")
def test_lockout_per_username(
    auth: AuthFramework, storage: AuthStorage, counting_hasher: Any
) -> None:
    auth.register_user("alice", PASSWORD)
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            auth.authenticate("alice", "wrong", request_info=CLIENT)
    counting_hasher.reset()
    with pytest.raises(AccountLocked) as caught:
        auth.authenticate("alice", PASSWORD)  # even the right password
    assert 590 <= caught.value.retry_after <= 600
    assert f"try again in {caught.value.retry_after} seconds" in str(caught.value)
    assert counting_hasher.calls == 0  # a locked attempt costs no hashing
    assert 590 <= auth.lockout_remaining("alice", None) <= 600
    assert auth.lockout_remaining("bob", None) == 0

    locks = storage.query_audit(action="lockout")
    # The three failures came from one address, which is locked as well.
    assert sorted(e.metadata["scope"] for e in locks) == ["ip", "user"]
    assert all(e.metadata["username"] == "alice" and e.outcome is False for e in locks)
    assert storage.query_audit(action="login", limit=1)[0].metadata["reason"] == "locked"
    # No username in clear in the counters' keys.
    assert all("alice" not in e.key for batch in storage.iter_kv() for e in batch)

    assert auth.reset_lockout(username="alice") >= 1
    assert auth.lockout_remaining("alice", None) == 0
    assert auth.authenticate("alice", PASSWORD)


@pytest.mark.usefixtures("lockout_settings")
def test_lockout_per_address(auth: AuthFramework) -> None:
    auth.register_user("alice", PASSWORD)
    for name in ("x1", "x2", "x3"):
        with pytest.raises(InvalidCredentials):
            auth.authenticate(name, "wrong", request_info=CLIENT)
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD, request_info=CLIENT)
    assert auth.lockout_remaining(None, CLIENT.ip_address) > 0
    elsewhere = CLIENT.__class__(ip_address="198.51.100.1")
    assert auth.authenticate("alice", PASSWORD, request_info=elsewhere)
    assert auth.reset_lockout(ip_address=CLIENT.ip_address) >= 1
    assert auth.authenticate("alice", PASSWORD, request_info=CLIENT)


@pytest.mark.usefixtures("lockout_settings")
def test_success_resets_the_failure_count(auth: AuthFramework) -> None:
    auth.register_user("alice", PASSWORD)
    for _ in range(2):
        for _ in range(2):
            with pytest.raises(InvalidCredentials):
                auth.authenticate("alice", "wrong")
        auth.authenticate("alice", PASSWORD)  # would be locked without the reset
    assert auth.lockout_remaining("alice", None) == 0


def test_lockout_disabled_and_bad_arguments(auth: AuthFramework, settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_THRESHOLD": 0}
    auth.register_user("alice", PASSWORD)
    for _ in range(8):
        with pytest.raises(InvalidCredentials):
            auth.authenticate("alice", "wrong")
    assert auth.authenticate("alice", PASSWORD)
    with pytest.raises(InvalidInput, match="needs a username, an ip_address"):
        auth.reset_lockout()
    with pytest.raises(InvalidInput, match="not a valid IPv4 or IPv6"):
        auth.lockout_remaining(None, "999.1.1.1")
    with pytest.raises(InvalidInput):
        auth.lockout_remaining("x" * 256, None)


def test_lockout_storage_alias(storage: AuthStorage, settings: Any, db: None) -> None:
    """LOCKOUT_STORAGE counts failures in another storage than the framework's."""
    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": {
            **settings.AUTHFW["STORAGES"],
            "locks": {"BACKEND": "django_authfw.storage.DatabaseStorage"},
        },
        "LOCKOUT_STORAGE": "locks",
        "LOCKOUT_THRESHOLD": 2,
    }
    from django_authfw.storage import get_storage

    auth = AuthFramework(storage=storage, audit_storage=storage)
    auth.register_user("alice", PASSWORD)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            auth.authenticate("alice", "wrong")
    locks = [e.key for batch in get_storage("locks").iter_kv() for e in batch]
    assert any(key.startswith("authfw:lockout:lock:user:") for key in locks)
    if storage is not get_storage("locks") and not isinstance(storage, DatabaseStorage):
        assert [e for batch in storage.iter_kv() for e in batch] == []
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD)


# Audit ----------------------------------------------------------------------------------------


def test_default_audit_target_is_the_database_table(
    storage: AuthStorage, db_audit: DatabaseStorage
) -> None:
    auth = AuthFramework(storage=storage)
    auth.register_user("alice", PASSWORD)
    auth.authenticate("alice", PASSWORD)
    assert [e.action for e in db_audit.query_audit()] == ["login", "register"]


def test_audit_storage_setting(
    storage: AuthStorage, settings: Any, db_audit: DatabaseStorage
) -> None:
    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": {
            **settings.AUTHFW["STORAGES"],
            "audit": {"BACKEND": "django_authfw.storage.InMemoryStorage"},
        },
        "AUDIT_STORAGE": "audit",
    }
    from django_authfw.storage import get_storage

    auth = AuthFramework(storage=storage)
    auth.register_user("alice", PASSWORD)
    assert [e.action for e in get_storage("audit").query_audit()] == ["register"]
    assert db_audit.count_audit() == 0


def test_audit_can_be_turned_off(auth: AuthFramework, storage: AuthStorage, settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "ENABLE_AUDIT_LOG": False}
    auth.register_user("alice", PASSWORD)
    auth.authenticate("alice", PASSWORD)
    auth.audit("custom", True)
    assert storage.count_audit() == 0


def test_custom_audit_event(auth: AuthFramework, storage: AuthStorage) -> None:
    auth.audit(
        "export", True, user_id="7", request_info=CLIENT, resource="report", metadata={"n": 1}
    )
    [event] = storage.query_audit()
    assert (event.action, event.outcome, event.user_id, event.resource) == (
        "export",
        True,
        "7",
        "report",
    )
    assert event.metadata == {"n": 1}
    assert event.ip_address == CLIENT.ip_address
    with pytest.raises(InvalidInput):
        auth.audit("", True)
    with pytest.raises(InvalidInput):
        auth.audit("x", "yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        auth.audit("x", True, metadata={"when": utcnow()})
    assert storage.count_audit() == 1


def test_storage_alias_resolution(db: None) -> None:
    assert isinstance(AuthFramework().storage, DatabaseStorage)
    with pytest.raises(Exception, match="No storage alias 'nope'"):
        AuthFramework(storage="nope")
    with pytest.raises(InvalidInput):
        AuthFramework(storage=42)  # type: ignore[arg-type]
