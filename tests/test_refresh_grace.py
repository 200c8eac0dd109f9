"""AUTHFW["REFRESH_REUSE_GRACE"]: a rotated refresh token replayed within the grace gets a new
pair of the same family; outside it (or once the new token was refreshed) it is reuse, as by
default. Sync and async, on every backend; the clock is moved, never slept on."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from django_authfw import AuthFramework, grants, rotation
from django_authfw.exceptions import TokenRevoked
from django_authfw.records import utcnow
from django_authfw.refresh_grace import MAX_REISSUES, ORIGIN
from django_authfw.storage import AuthStorage
from django_authfw.tokens import IssuedToken

from .framework_support import (  # noqa: F401  (fixtures are used by name)
    CLIENT,
    PASSWORD,
    auth_fixture,
    counting_hasher_fixture,
)
from .test_framework_concurrency import needs_server_database, run_in_threads

GRACE = 10  # seconds


class Clock:
    """The framework's clock, moved by hand: ``clock.advance(seconds)``."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    now = Clock()
    # Rotation revokes (the grace's origin) and checks the window; grants mints.
    for module in (rotation, grants):
        monkeypatch.setattr(module, "utcnow", now)
    return now


@pytest.fixture
def grace(settings: Any) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "REFRESH_REUSE_GRACE": GRACE}


def login(auth: AuthFramework) -> IssuedToken:
    auth.register_user("alice", PASSWORD)
    return auth.authenticate("alice", PASSWORD)


def live_tokens(storage: AuthStorage, issued: IssuedToken) -> list[str]:
    return [t.token_id for t in storage.list_user_tokens(issued.user_id) if not t.is_revoked]


def assert_family_revoked(auth: AuthFramework, *issued: IssuedToken) -> None:
    for token in issued:
        with pytest.raises(TokenRevoked):
            auth.verify_token(token.access_token)


# Sync -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("grace")
def test_replay_within_the_grace_gets_a_new_pair(
    auth: AuthFramework, storage: AuthStorage, clock: Clock
) -> None:
    first = login(auth)
    second = auth.refresh(first.refresh_token or "")
    clock.advance(GRACE - 1)
    retry = auth.refresh(first.refresh_token or "", request_info=CLIENT)

    assert retry.token_id not in (first.token_id, second.token_id)
    assert auth.verify_token(retry.access_token).token_id == retry.token_id
    family = {storage.get_token(t.token_id).family_id for t in (first, second, retry)}  # type: ignore[union-attr]
    assert len(family) == 1
    # The pair the lost answer carried is rotated into the new one: one live token per login.
    replaced = storage.get_token(second.token_id)
    assert replaced is not None
    assert replaced.replaced_by == retry.token_id
    assert live_tokens(storage, first) == [retry.token_id]
    with pytest.raises(TokenRevoked):
        auth.verify_token(second.access_token)

    [event] = storage.query_audit(action="refresh_grace")
    assert event.outcome is True
    assert event.ip_address == CLIENT.ip_address
    assert event.metadata["token_id"] == retry.token_id
    assert event.metadata["presented"] == first.token_id
    assert event.metadata["replaced"] == second.token_id
    assert storage.count_audit(action="refresh_reuse") == 0

    # The new pair refreshes normally, and its successor starts a window of its own.
    onward = auth.refresh(retry.refresh_token or "")
    assert ORIGIN not in storage.get_token(onward.token_id).metadata  # type: ignore[union-attr]


@pytest.mark.usefixtures("grace")
def test_replay_after_the_grace_revokes_the_family(
    auth: AuthFramework, storage: AuthStorage, clock: Clock
) -> None:
    first = login(auth)
    second = auth.refresh(first.refresh_token or "")
    clock.advance(GRACE + 1)
    with pytest.raises(TokenRevoked, match="already used"):
        auth.refresh(first.refresh_token or "")
    assert_family_revoked(auth, second)
    assert storage.count_audit(action="refresh_reuse") == 1
    assert storage.count_audit(action="refresh_grace") == 0


def test_without_a_grace_an_immediate_replay_revokes_the_family(
    auth: AuthFramework, storage: AuthStorage, clock: Clock
) -> None:
    """The default (0) keeps RFC 9700's rule, however soon the replay comes."""
    first = login(auth)
    second = auth.refresh(first.refresh_token or "")
    with pytest.raises(TokenRevoked):
        auth.refresh(first.refresh_token or "")
    assert_family_revoked(auth, second)
    assert storage.count_audit(action="refresh_grace") == 0


@pytest.mark.usefixtures("grace")
def test_the_window_counts_from_the_original_rotation(
    auth: AuthFramework, storage: AuthStorage, clock: Clock
) -> None:
    """Grace reissues never move the window, so they cannot keep a family going by themselves:
    two holders of stale tokens replaying in turn are stopped GRACE seconds after the rotation."""
    first = login(auth)
    second = auth.refresh(first.refresh_token or "")  # rotation at t0
    clock.advance(GRACE - 4)
    retry = auth.refresh(first.refresh_token or "")  # grace: second -> retry
    clock.advance(2)
    again = auth.refresh(second.refresh_token or "")  # grace, still counted from t0
    assert storage.get_token(retry.token_id).replaced_by == again.token_id  # type: ignore[union-attr]
    clock.advance(3)  # t0 + GRACE + 1, though `retry` was rotated only 3 s ago
    with pytest.raises(TokenRevoked, match="already used"):
        auth.refresh(retry.refresh_token or "")
    assert_family_revoked(auth, again)
    assert storage.count_audit(action="refresh_grace") == 2
    assert storage.count_audit(action="refresh_reuse") == 1


@pytest.mark.usefixtures("grace")
def test_only_the_latest_rotation_has_a_grace(
    auth: AuthFramework, storage: AuthStorage, clock: Clock
) -> None:
    """Once the new token was itself refreshed, the old one is plain reuse, even within the
    grace: a thief replaying it cannot fork the family."""
    first = login(auth)
    second = auth.refresh(first.refresh_token or "")
    third = auth.refresh(second.refresh_token or "")
    with pytest.raises(TokenRevoked):
        auth.refresh(first.refresh_token or "")
    assert_family_revoked(auth, third)
    assert storage.count_audit(action="refresh_grace") == 0


@pytest.mark.usefixtures("grace")
def test_grace_reissues_per_rotation_are_bounded(
    auth: AuthFramework, storage: AuthStorage, clock: Clock
) -> None:
    first = login(auth)
    auth.refresh(first.refresh_token or "")
    reissued = [auth.refresh(first.refresh_token or "") for _ in range(MAX_REISSUES)]
    with pytest.raises(TokenRevoked):
        auth.refresh(first.refresh_token or "")
    assert_family_revoked(auth, *reissued)
    assert storage.count_audit(action="refresh_grace") == MAX_REISSUES


# Async ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("grace")
def test_async_replay_inside_then_outside_the_grace(
    auth: AuthFramework, storage: AuthStorage, clock: Clock
) -> None:
    first = login(auth)

    async def flow() -> tuple[IssuedToken, IssuedToken]:
        second = await auth.arefresh(first.refresh_token or "")
        clock.advance(GRACE - 1)
        retry = await auth.arefresh(first.refresh_token or "")
        assert (await auth.averify_token(retry.access_token)).token_id == retry.token_id
        clock.advance(2)
        with pytest.raises(TokenRevoked, match="already used"):
            await auth.arefresh(first.refresh_token or "")
        return second, retry

    second, retry = async_to_sync(flow)()
    assert storage.get_token(second.token_id).replaced_by == retry.token_id  # type: ignore[union-attr]
    assert_family_revoked(auth, retry)
    [event] = storage.query_audit(action="refresh_grace")
    assert event.metadata["presented"] == first.token_id
    assert storage.count_audit(action="refresh_reuse") == 1


# Concurrency: still one rotation winner, every retry served, one live token -------------------


def check_grace_race(storage: AuthStorage, first: IssuedToken, outcomes: list[Any]) -> None:
    issued = [o for o in outcomes if isinstance(o, IssuedToken)]
    assert len(issued) == len(outcomes), [o for o in outcomes if not isinstance(o, IssuedToken)]
    assert len({t.token_id for t in issued}) == len(issued)
    assert storage.count_audit(action="refresh", outcome=True) == 1
    assert storage.count_audit(action="refresh_grace") == len(outcomes) - 1
    assert storage.count_audit(action="refresh_reuse") == 0
    [live] = live_tokens(storage, first)
    assert live in {t.token_id for t in issued}


@pytest.mark.usefixtures("grace")
def test_concurrent_replays_within_the_grace_with_asyncio(
    auth: AuthFramework, storage: AuthStorage
) -> None:
    first = login(auth)

    async def race() -> list[Any]:
        return list(
            await asyncio.gather(
                *(auth.arefresh(first.refresh_token or "") for _ in range(MAX_REISSUES)),
                return_exceptions=True,
            )
        )

    check_grace_race(storage, first, async_to_sync(race)())


@needs_server_database
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("grace")
def test_concurrent_replays_within_the_grace_in_threads(storage: AuthStorage) -> None:
    auth = AuthFramework(storage=storage, audit_storage=storage)
    first = login(auth)
    outcomes: list[Any] = []

    def refresh(_: int) -> None:
        try:
            outcomes.append(auth.refresh(first.refresh_token or ""))
        except TokenRevoked as exc:
            outcomes.append(exc)

    assert run_in_threads(refresh, MAX_REISSUES, MAX_REISSUES) == []
    check_grace_race(storage, first, outcomes)


@needs_server_database
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("grace")
def test_grace_replays_racing_normal_refreshes_leave_one_live_token(storage: AuthStorage) -> None:
    """A thief replaying the rotated token (grace) while the client refreshes its live one
    (normal rotation), released together: whoever wins, at most one pair stays usable."""
    auth = AuthFramework(storage=storage, audit_storage=storage)
    first = login(auth)
    second = auth.refresh(first.refresh_token or "")
    outcomes: list[Any] = []

    def refresh(i: int) -> None:
        try:
            outcomes.append(auth.refresh(((first, second)[i % 2]).refresh_token or ""))
        except TokenRevoked as exc:
            outcomes.append(exc)

    assert run_in_threads(refresh, 8, 8) == []
    assert len(outcomes) == 8
    assert len(live_tokens(storage, first)) <= 1
    usable = []
    for issued in (o for o in outcomes if isinstance(o, IssuedToken)):
        with contextlib.suppress(TokenRevoked):
            usable.append(auth.verify_token(issued.access_token))
    assert len(usable) <= 1
