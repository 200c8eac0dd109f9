"""The async twins of AuthFramework, on every storage backend."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model

from django_authfw import AuthFramework, tokens
from django_authfw.exceptions import (
    AccountLocked,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    TokenRevoked,
    UserExists,
)
from django_authfw.storage import AuthStorage

from .framework_support import (  # noqa: F401  (fixtures are used by name)
    CLIENT,
    PASSWORD,
    auth_fixture,
    counting_hasher_fixture,
    grant_perms,
)

User = get_user_model()


def run(coro_fn: Any) -> Any:
    return async_to_sync(coro_fn)()


def test_async_register_login_verify_refresh(
    auth: AuthFramework, storage: AuthStorage, counting_hasher: Any
) -> None:
    loop_threads: set[int] = set()

    async def scenario() -> None:
        loop_threads.add(threading.get_ident())
        user = await auth.aregister_user("alice", PASSWORD, request_info=CLIENT, email="a@x.org")
        assert isinstance(user, User)
        assert user.pk is not None
        assert user.email == "a@x.org"
        with pytest.raises(UserExists):
            await auth.aregister_user("alice", PASSWORD)
        await sync_to_async(grant_perms)(user, "view_user", groups=("staff",))

        issued = await auth.aauthenticate("alice", PASSWORD, request_info=CLIENT)
        assert issued.permissions == ("auth.view_user",)
        assert issued.roles == ("staff",)
        record = await auth.averify_token(issued.access_token)
        assert record.token_id == issued.token_id
        found = await auth.aget_user(record)
        assert found is not None
        assert found.pk == user.pk

        rotated = await auth.arefresh(issued.refresh_token or "", request_info=CLIENT)
        assert rotated.token_id != issued.token_id
        with pytest.raises(TokenRevoked):
            await auth.averify_token(issued.access_token)
        with pytest.raises(TokenRevoked, match="already used"):
            await auth.arefresh(issued.refresh_token or "")  # reuse
        with pytest.raises(TokenRevoked):
            await auth.averify_token(rotated.access_token)  # the family is gone

        with pytest.raises(InvalidCredentials):
            await auth.aauthenticate("alice", "wrong password")
        with pytest.raises(InvalidCredentials):
            await auth.aauthenticate("nobody", "wrong password")
        with pytest.raises(InvalidInput):
            await auth.aauthenticate("alice", "x" * 256)
        with pytest.raises(InvalidToken):
            await auth.averify_token("junk")
        with pytest.raises(InvalidToken):
            await auth.arefresh("junk")
        with pytest.raises(InvalidToken):
            await auth.arefresh("afw_rt_" + "A" * 43)

    run(scenario)
    # The password was hashed (register, login, two failures) but never on the event loop.
    assert counting_hasher.calls >= 4
    assert counting_hasher.threads
    assert not (counting_hasher.threads & loop_threads)
    assert User.objects.get(username="alice").check_password(PASSWORD)
    actions = [e.action for e in storage.query_audit(limit=1000)]
    assert actions.count("register") == 1
    assert actions.count("refresh_reuse") == 1
    assert actions.count("login") == 3
    assert actions.count("refresh") == 3  # the rotation, then a malformed and an unknown one
    refused = [e.metadata for e in storage.query_audit(action="refresh", outcome=False)]
    assert sorted(m["reason"] for m in refused) == ["malformed", "unknown"]


def test_async_revoke_introspect_sessions_kv(auth: AuthFramework, storage: AuthStorage) -> None:
    async def scenario() -> None:
        await auth.aregister_user("alice", PASSWORD)
        await auth.aregister_user("bob", PASSWORD)
        first = await auth.aauthenticate("alice", PASSWORD)
        second = await auth.aauthenticate("alice", PASSWORD)
        bobs = await auth.aauthenticate("bob", PASSWORD)

        view = await auth.aintrospect(first.access_token)
        assert view["active"] is True
        assert view["username"] == "alice"
        assert view["jti"] == first.token_id
        assert await auth.aintrospect("junk") == {"active": False}

        assert await auth.arevoke_token(first.access_token) is True
        assert await auth.arevoke_token(first.access_token) is False
        assert await auth.arevoke_token(tokens.new_secret(tokens.REFRESH_PREFIX)) is False
        assert await auth.aintrospect(first.access_token) == {"active": False}
        assert await auth.arevoke_token(second.refresh_token or "") is True
        assert await auth.arevoke_user_tokens("bob") == 1
        with pytest.raises(TokenRevoked):
            await auth.averify_token(bobs.access_token)

        session = await auth.acreate_session("alice", {"k": "v"}, ttl=timedelta(minutes=5))
        assert await auth.aget_session(session.session_id) == session
        assert await auth.atouch_session(session.session_id) is True
        assert [s.session_id for s in await auth.alist_sessions("alice")] == [session.session_id]
        assert await auth.aend_session(session.session_id) is True
        assert await auth.aend_session(session.session_id) is False
        await auth.acreate_session("alice")
        assert await auth.aend_user_sessions("alice") == 1

        await auth.akv_set("k", b"v", ttl=timedelta(minutes=1))
        assert await auth.akv_get("k") == b"v"
        assert await auth.akv_delete("k") is True
        assert await auth.akv_get("k") is None
        with pytest.raises(InvalidInput):
            await auth.akv_set("authfw:x", b"v")

        await auth.aaudit("custom", True, metadata={"n": 1})

    run(scenario)
    assert storage.count_audit(action="revoke") == 2
    assert storage.count_audit(action="revoke_all") == 1
    assert storage.count_audit(action="session_end") == 2
    assert storage.count_audit(action="custom") == 1


def test_async_lockout(auth: AuthFramework, settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_THRESHOLD": 2}

    async def scenario() -> None:
        await auth.aregister_user("alice", PASSWORD)
        for _ in range(2):
            with pytest.raises(InvalidCredentials):
                await auth.aauthenticate("alice", "wrong")
        with pytest.raises(AccountLocked) as caught:
            await auth.aauthenticate("alice", PASSWORD)
        assert caught.value.retry_after > 0
        assert await auth.alockout_remaining("alice", None) > 0
        assert await auth.areset_lockout(username="alice") >= 1
        assert await auth.alockout_remaining("alice", None) == 0
        assert await auth.aauthenticate("alice", PASSWORD)

    run(scenario)


def test_async_refresh_without_rotation(auth: AuthFramework, settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "ROTATE_REFRESH_TOKENS": False}

    async def scenario() -> None:
        await auth.aregister_user("alice", PASSWORD)
        first = await auth.aauthenticate("alice", PASSWORD)
        second = await auth.arefresh(first.refresh_token or "")
        assert second.refresh_token == first.refresh_token
        assert (await auth.averify_token(second.access_token)).token_id == first.token_id

    run(scenario)
