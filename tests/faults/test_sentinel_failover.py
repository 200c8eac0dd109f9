"""A Sentinel failover while callers issue and verify tokens: the app follows the new primary.

The primary is SIGKILLed; the Sentinels promote the replica; the old primary comes back as a
replica of the new one. Writes wait for one replica (``replica_acks=1``),
so a token whose issue returned is on two servers and survives the primary's crash.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis

from django_authfw import AuthFramework
from django_authfw.storage import RedisStorage

from ..factories import PASSWORD, UserFactory
from ..redis_servers import HOST, sentinel_group, start_server, wait_until
from .callers import Callers, slowest, unverifiable

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BEFORE = 100  # tokens issued before the primary is killed
AFTER = 100  # tokens issued after the old primary rejoined as a replica
SLACK = 1.0  # seconds a failing call may spend beyond the retry budget
# As sentinel_group starts its data nodes.
DATA_ARGS = ("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")


def test_sentinel_failover_followed_by_the_app(tmp_path: Path, settings: object) -> None:
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_THRESHOLD": 1_000_000}  # type: ignore[attr-defined]
    user = UserFactory.create()
    with sentinel_group(tmp_path) as group:
        storage = RedisStorage(
            url="redis://127.0.0.1/0",
            master_name=group.master_name,
            sentinels=group.sentinel_urls,
            sentinel_password=group.password,
            key_prefix="faults:",
            timeout=0.5,
            retry_attempts=8,
            retry_delay=0.5,
            replica_acks=1,
            replica_ack_timeout=1,
        )
        auth = AuthFramework(storage=storage)
        old_port, new_port = group.primary.port, group.replica.port
        rejoined = None
        try:
            with Callers(auth, user.username, PASSWORD) as callers:
                callers.wait_for(f"{BEFORE} tokens", lambda: callers.issued_count() >= BEFORE)
                group.primary.kill()  # SIGKILL: a crash, nothing handed over
                killed = time.monotonic()
                issued_at_kill = callers.issued_count()
                wait_until(lambda: group.current_primary_port() == new_port, "the failover", 30)
                promoted = time.monotonic()
                # The old primary comes back (empty: no persistence) as a replica of the new
                # one, as the Sentinels would make it (they do so only on their next INFO
                # round, up to 10 s later), so writes can be acknowledged again.
                rejoined = start_server(
                    old_port,
                    group.primary.directory,
                    *DATA_ARGS,
                    "--replicaof",
                    HOST,
                    str(new_port),
                )
                wait_until(
                    lambda: rejoined.client().info("replication").get("master_link_status") == "up",
                    "the old primary to rejoin as a replica",
                    60,
                )
                back = time.monotonic()
                issued_at_rejoin = callers.issued_count()
                callers.wait_for(
                    f"{AFTER} tokens after the failover",
                    lambda: callers.issued_count() >= issued_at_rejoin + AFTER,
                )
            tally = callers.tally
            lost = unverifiable(auth, tally.issued)
            # Whichever node the Sentinels name at the end (on a loaded machine they may fail
            # over once more, back to the rejoined node), the app writes there.
            primary_at_end = group.current_primary_port()
            storage.kv_set("probe", b"written after the failover")
            at_primary = Redis(host=HOST, port=primary_at_end).get("faults:kv:probe")
        finally:
            storage.close()
            if rejoined is not None:
                rejoined.stop()

    print(
        f"\nsentinel failover: primary {old_port} killed, {new_port} promoted after "
        f"{promoted - killed:.2f}s, old primary back as a replica after {back - killed:.2f}s; "
        f"issued {len(tally.issued)} tokens ({issued_at_kill} before the kill, "
        f"{issued_at_rejoin - issued_at_kill} during the failover, "
        f"{len(tally.issued) - issued_at_rejoin} after it); verified on the new primary "
        f"{len(tally.issued) - len(lost)}/{len(tally.issued)}; errors seen by callers "
        f"{dict(tally.errors) or 'none'}; slowest failed calls {slowest(tally)} (retry "
        f"budget of a read {storage.retry_budget:.2f}s)"
    )
    if primary_at_end != new_port:
        print(f"the Sentinels failed over again, to {primary_at_end}")
    assert primary_at_end in (old_port, new_port)
    assert at_primary == b"written after the failover"
    assert lost == []
    assert set(tally.errors) <= {"StorageUnavailable"}, tally.errors
    # A verification is one read: it gives up within the read budget. (authenticate makes
    # several storage calls, writes waiting up to replica_ack_timeout more per attempt.)
    assert tally.slowest_failure["verify_token"] <= storage.retry_budget + SLACK
