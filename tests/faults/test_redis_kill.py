"""Redis SIGKILLed while callers issue and verify tokens, then restarted from its AOF."""

from __future__ import annotations

import time

import pytest

from django_authfw import AuthFramework
from django_authfw.storage import RedisStorage

from ..factories import PASSWORD, UserFactory
from .callers import Callers, slowest, unverifiable
from .conftest import AofRedis

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BEFORE = 150  # tokens issued before the kill
AFTER = 150  # tokens issued after the restart
SLACK = 1.0  # seconds a failing call may spend beyond the retry budget (hashing, scheduling)


def test_redis_sigkill_loses_no_issued_token(aof_redis: AofRedis, settings: object) -> None:
    # Callers retrying while Redis is down must not lock the account out: not the subject here.
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_THRESHOLD": 1_000_000}  # type: ignore[attr-defined]
    storage = RedisStorage(
        url=aof_redis.url, key_prefix="faults:", timeout=0.5, retry_attempts=2, retry_delay=0.1
    )
    auth = AuthFramework(storage=storage)
    user = UserFactory.create()

    with Callers(auth, user.username, PASSWORD) as callers:
        callers.wait_for(f"{BEFORE} tokens", lambda: callers.issued_count() >= BEFORE)
        aof_redis.kill()
        killed = time.monotonic()
        issued_at_kill = callers.issued_count()
        # Down for several retry cycles: until the callers were refused 24 times (each thread
        # about six times, each refusal after its retries).
        callers.wait_for("callers to see the outage", lambda: callers.error_count() >= 24)
        aof_redis.restart()
        down = time.monotonic() - killed
        issued_at_restart = callers.issued_count()
        callers.wait_for(
            f"{AFTER} tokens after the restart",
            lambda: callers.issued_count() >= issued_at_restart + AFTER,
        )
    tally = callers.tally

    lost = unverifiable(auth, tally.issued)
    print(
        f"\nredis SIGKILL: issued {len(tally.issued)} tokens ({issued_at_kill} before the kill, "
        f"{issued_at_restart - issued_at_kill} returned while it was down, "
        f"{len(tally.issued) - issued_at_restart} after the restart); "
        f"verified after the restart {len(tally.issued) - len(lost)}/{len(tally.issued)}; "
        f"errors seen by callers {dict(tally.errors)}; down {down:.2f}s; "
        f"slowest failed calls {slowest(tally)} (retry budget {storage.retry_budget:.2f}s)"
    )
    assert lost == []
    assert set(tally.errors) == {"StorageUnavailable"}, tally.errors
    # Refused connections fail at once: each call gave up within one storage call's budget.
    assert max(tally.slowest_failure.values()) <= storage.retry_budget + SLACK
    storage.flush()
    storage.close()
