"""Concurrency cannot defeat the lockout (issue 10, item 1).

An attacker who sends many guesses at once must get no more password checks than one who sends
them one by one: at most ``LOCKOUT_THRESHOLD`` per window and subject, and the right password
sent while the lock is taking effect must not log in. Proved with threads released by a
``threading.Barrier`` (sync), ``asyncio.gather`` (async), over real HTTP against the live
server, and from two processes, on every backend the suite selects (PostgreSQL included), with
the hasher counting every password check.

Windows are fixed periods aligned to the Unix epoch (docs/security.md, Lockout). Each test
uses a window of ten years so that its burst falls inside one window whenever it runs: the
bound is then exactly ``THRESHOLD`` checks.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from django_authfw import AuthFramework, lockout
from django_authfw.exceptions import AccountLocked, AuthError, InvalidCredentials
from django_authfw.models import AuditLog
from django_authfw.records import utcnow
from django_authfw.request_info import RequestInfo
from django_authfw.storage import AuthStorage
from django_authfw.tokens import IssuedToken

from .backends import selected_backends
from .factories import UserFactory
from .framework_support import CLIENT, PASSWORD
from .hashers import CountingArgon2PasswordHasher
from .http_support import default_storage_backend, storages_for
from .lockout_support import GATED_HASHER, HANG, Gate, run_together, start_together

__all__ = ["default_storage_backend"]

THRESHOLD = 5
GUESSES = 40
WINDOW = timedelta(days=3650)
REPO = Path(__file__).resolve().parent.parent

needs_server_database = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="threads writing at once need a server database; SQLite serialises writers",
)


@pytest.fixture
def gated(settings: Any) -> Any:
    """Lockout at THRESHOLD; the gated counting hasher, gate shut, counts at zero."""
    settings.AUTHFW = {
        **settings.AUTHFW,
        "LOCKOUT_THRESHOLD": THRESHOLD,
        "LOCKOUT_WINDOW": WINDOW,
    }
    settings.PASSWORD_HASHERS = [GATED_HASHER]
    Gate.reset()
    CountingArgon2PasswordHasher.reset()
    yield CountingArgon2PasswordHasher
    Gate.open()  # never leave a thread waiting, whatever failed
    CountingArgon2PasswordHasher.reset()


def attempt(auth: AuthFramework, password: str) -> IssuedToken | AuthError:
    try:
        return auth.authenticate("alice", password, request_info=CLIENT)
    except AuthError as exc:
        return exc


def check_burst(checks: int, outcomes: list[Any], last: Any) -> None:
    """At most THRESHOLD guesses were checked, the rest refused; the last one did not log in."""
    assert (checks, type(last).__name__) == (THRESHOLD, "AccountLocked"), (
        f"{GUESSES} concurrent guesses, threshold {THRESHOLD}: {checks} password checks; "
        f"the right password sent last gave {last!r}"
    )
    assert not [o for o in outcomes if not isinstance(o, AuthError)], outcomes
    failed = [o for o in outcomes if type(o) is InvalidCredentials]
    refused = [o for o in outcomes if isinstance(o, AccountLocked)]
    assert (len(failed), len(refused)) == (THRESHOLD, GUESSES - THRESHOLD), outcomes
    assert all(r.retry_after > 0 for r in [*refused, last])


def check_audit(storage: AuthStorage, user_id: str) -> None:
    """One login failure per checked guess, one lockout, one refusal (throttled)."""
    failures = storage.query_audit(action="login", outcome=False, limit=1000)
    reasons = sorted(e.metadata["reason"] for e in failures)
    assert reasons == ["locked"] + ["wrong_password"] * THRESHOLD
    assert all(e.user_id == user_id for e in failures)
    locks = storage.query_audit(action="lockout")
    assert [(e.user_id, e.metadata["scope"]) for e in locks] == [(user_id, "user")]


@needs_server_database
@pytest.mark.django_db(transaction=True)
def test_concurrent_guesses_in_threads(storage: AuthStorage, gated: Any) -> None:
    auth = AuthFramework(storage=storage, audit_storage=storage)
    user_id = str(auth.register_user("alice", PASSWORD).pk)
    gated.reset()

    join = start_together([partial(attempt, auth, f"wrong {i}") for i in range(GUESSES)])
    Gate.wait_settled(GUESSES)  # every guess answered or inside the hasher
    join_last = start_together([lambda: attempt(auth, PASSWORD)])
    Gate.wait_settled(GUESSES + 1)
    Gate.open()
    outcomes, [last] = join(), join_last()

    check_burst(gated.calls, outcomes, last)
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD, request_info=CLIENT)
    assert gated.calls == THRESHOLD
    check_audit(storage, user_id)


def test_concurrent_guesses_with_asyncio(storage: AuthStorage, gated: Any) -> None:
    auth = AuthFramework(storage=storage, audit_storage=storage)
    user_id = str(auth.register_user("alice", PASSWORD).pk)
    gated.reset()

    async def one(password: str) -> IssuedToken | AuthError:
        try:
            return await auth.aauthenticate("alice", password, request_info=CLIENT)
        except AuthError as exc:
            return exc
        finally:
            Gate.answer()

    async def attack() -> tuple[list[Any], Any]:
        loop = asyncio.get_running_loop()
        # Enough worker threads for every check the code under test lets in to wait at the
        # gate (the default pool has cpu + 4 threads).
        loop.set_default_executor(ThreadPoolExecutor(max_workers=GUESSES + 8))
        guesses = asyncio.gather(*(one(f"wrong {i}") for i in range(GUESSES)))
        await loop.run_in_executor(None, Gate.wait_settled, GUESSES)
        last = asyncio.ensure_future(one(PASSWORD))
        await loop.run_in_executor(None, Gate.wait_settled, GUESSES + 1)
        Gate.open()
        return await guesses, await last

    outcomes, last = async_to_sync(attack)()
    check_burst(gated.calls, outcomes, last)
    with pytest.raises(AccountLocked):
        async_to_sync(auth.aauthenticate)("alice", PASSWORD, request_info=CLIENT)
    assert gated.calls == THRESHOLD
    check_audit(storage, user_id)


def connect(url: str) -> http.client.HTTPConnection:
    """An open connection to the live server, so that a burst sends requests, not SYNs."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    conn.connect()
    return conn


def post_token(conn: http.client.HTTPConnection, password: str) -> tuple[int, dict[str, Any]]:
    try:
        body = urllib.parse.urlencode({"username": "alice", "password": password})
        conn.request(
            "POST", "/auth/token/", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@needs_server_database
def test_concurrent_guesses_over_http(
    live_server: Any, default_storage_backend: str, gated: Any
) -> None:
    user = UserFactory.create(username="alice")
    gated.reset()

    # Connected first: the burst is 40 requests at once, not 40 SYNs for a short accept queue.
    conns = [connect(live_server.url) for _ in range(GUESSES + 1)]
    join = start_together([partial(post_token, conns[i], f"wrong {i}") for i in range(GUESSES)])
    Gate.wait_settled(GUESSES)
    join_last = start_together([lambda: post_token(conns[GUESSES], PASSWORD)])
    Gate.wait_settled(GUESSES + 1)
    Gate.open()
    outcomes, [last] = join(), join_last()

    statuses = sorted(status for status, _ in outcomes)
    assert (gated.calls, last[0]) == (THRESHOLD, 429), (
        f"{GUESSES} concurrent guesses over HTTP, threshold {THRESHOLD}: "
        f"{gated.calls} password checks; the right password sent last gave HTTP {last[0]}"
    )
    assert statuses == [400] * THRESHOLD + [429] * (GUESSES - THRESHOLD), [
        reply for reply in outcomes if reply[0] not in (400, 429)
    ]
    assert post_token(connect(live_server.url), PASSWORD)[0] == 429
    assert gated.calls == THRESHOLD
    events = AuditLog.objects.filter(action="login", outcome=False)
    assert events.count() == THRESHOLD + 1  # the refusals while locked: one event a minute
    assert set(events.values_list("user_id", flat=True)) == {str(user.pk)}


def process_backends() -> list[str]:
    return [name for name in ("database", "redis") if name in selected_backends()]


@needs_server_database
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("process_backend", process_backends())
def test_concurrent_guesses_from_two_processes(
    process_backend: str, settings: Any, tmp_path: Path
) -> None:
    settings.AUTHFW = {
        **settings.AUTHFW,
        "STORAGES": storages_for(process_backend, settings),
        "LOCKOUT_THRESHOLD": THRESHOLD,
        "LOCKOUT_WINDOW": WINDOW,
    }
    settings.PASSWORD_HASHERS = ["tests.hashers.CountingArgon2PasswordHasher"]
    UserFactory.create(username="alice")
    auth = AuthFramework()
    caches = {
        alias: settings.CACHES[alias]
        for alias in settings.CACHES
        if alias.startswith("authfw-http-")
    }
    db = connection.settings_dict
    config = {
        "database_url": (
            f"postgres://{urllib.parse.quote(db['USER'])}:{urllib.parse.quote(db['PASSWORD'])}"
            f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "caches": caches,
        "authfw": {
            "STORAGES": settings.AUTHFW["STORAGES"],
            "LOCKOUT_THRESHOLD": THRESHOLD,
            "LOCKOUT_WINDOW": WINDOW.total_seconds(),
        },
        "ip_address": CLIENT.ip_address,
        "username": "alice",
        "guesses": GUESSES // 2,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHFW_", "DJANGO_"))}
    workers = []
    try:
        for n in range(2):
            log = (tmp_path / f"worker{n}.log").open("w+")
            workers.append(
                (
                    subprocess.Popen(
                        [sys.executable, "-m", "tests.lockout_support"],
                        cwd=REPO,
                        env=env,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        text=True,
                    ),
                    log,
                )
            )
        for process, log in workers:
            assert process.stdin
            assert process.stdout
            process.stdin.write(json.dumps(config) + "\n")
            process.stdin.flush()
            if process.stdout.readline().strip() != "ready":
                log.seek(0)
                pytest.fail(f"a worker did not start:\n{log.read()}")
        for process, _ in workers:
            assert process.stdin
            process.stdin.write("go\n")  # both bursts start together
            process.stdin.flush()
        reports = []
        for process, log in workers:
            out, _ = process.communicate(timeout=120)
            log.seek(0)
            assert process.returncode == 0, log.read()
            reports.append(json.loads(out))
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()

    checks = sum(r["checks"] for r in reports)
    outcomes = [o for r in reports for o in r["outcomes"]]
    assert checks == THRESHOLD, (
        f"{GUESSES} guesses from two processes, threshold {THRESHOLD}: {checks} password checks"
    )
    assert (
        sorted(outcomes)
        == ["AccountLocked"] * (GUESSES - THRESHOLD) + ["InvalidCredentials"] * THRESHOLD
    )
    CountingArgon2PasswordHasher.reset()
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD, request_info=CLIENT)
    assert CountingArgon2PasswordHasher.calls == 0
    auth.storage.flush()


def test_sequential_guesses_stop_at_the_threshold(storage: AuthStorage, gated: Any) -> None:
    """The same bound one guess at a time; a success in between un-counts itself."""
    Gate.open()
    auth = AuthFramework(storage=storage, audit_storage=storage)
    auth.register_user("alice", PASSWORD)
    auth.authenticate("alice", PASSWORD, request_info=CLIENT)
    gated.reset()
    outcomes = [attempt(auth, "wrong") for _ in range(GUESSES)]
    assert gated.calls == THRESHOLD
    assert [type(o).__name__ for o in outcomes] == ["InvalidCredentials"] * THRESHOLD + [
        "AccountLocked"
    ] * (GUESSES - THRESHOLD)


class PairReadsMeet:
    """The storage under test, except that each read of a (username, address) pair's failure
    count waits until ``successes`` threads have read it: concurrent successes of one pair
    all see its failures before any of them takes them back."""

    def __init__(self, storage: AuthStorage, successes: int) -> None:
        self._storage = storage
        self._barrier = threading.Barrier(successes)
        self._async_barrier = asyncio.Barrier(successes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def kv_get(self, key: str) -> bytes | None:
        value = self._storage.kv_get(key)
        if key.startswith("authfw:lockout:pair:"):
            self._barrier.wait(HANG)
        return value

    async def akv_get(self, key: str) -> bytes | None:
        value = await self._storage.akv_get(key)
        if key.startswith("authfw:lockout:pair:"):
            await asyncio.wait_for(self._async_barrier.wait(), HANG)
        return value


@needs_server_database
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_concurrent_successes_take_back_their_pairs_failures_once(
    storage: AuthStorage, settings: Any, mode: str
) -> None:
    """An attacker's own account cannot, by logging in several times at once after failing,
    take back more than it was counted and so buy guesses from its address."""
    ip_threshold, failures, successes = 10, 3, 3
    settings.AUTHFW = {
        **settings.AUTHFW,
        "LOCKOUT_THRESHOLD": 10,
        "LOCKOUT_IP_THRESHOLD": ip_threshold,
        "LOCKOUT_WINDOW": WINDOW,
    }
    auth = AuthFramework(storage=storage, audit_storage=storage)
    auth.register_user("mallory", PASSWORD)
    attacker = RequestInfo(ip_address="192.0.2.66")
    meeting = PairReadsMeet(storage, successes)
    auth._lockout._fallback = lambda: meeting  # type: ignore[assignment,return-value]
    for _ in range(failures):
        with pytest.raises(InvalidCredentials):
            auth.authenticate("mallory", "wrong", request_info=attacker)
    if mode == "threads":
        logins = run_together(
            [lambda: auth.authenticate("mallory", PASSWORD, request_info=attacker)] * successes
        )
    else:

        async def logins_at_once() -> list[Any]:
            login = auth.aauthenticate
            calls = (login("mallory", PASSWORD, request_info=attacker) for _ in range(successes))
            return await asyncio.gather(*calls, return_exceptions=True)

        logins = async_to_sync(logins_at_once)()
    assert all(isinstance(login, IssuedToken) for login in logins), logins
    auth._lockout._fallback = lambda: storage

    # Every attempt so far was taken back (the failures once): the address has its whole
    # budget left for guesses at other accounts, and not one guess more.
    checked = 0
    for n in range(3 * ip_threshold):
        try:
            auth.authenticate(f"victim{n}", "guess", request_info=attacker)
        except InvalidCredentials:
            checked += 1
        except AccountLocked:
            break
    assert checked == ip_threshold, (
        f"{successes} concurrent logins after {failures} failures: the address then got "
        f"{checked} guesses, threshold {ip_threshold}"
    )


# Window boundaries: the bound docs/security.md states ------------------------------------------

BOUNDARY_WINDOW = timedelta(minutes=15)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[datetime]:
    """The lockout's clock, one second before a window boundary until the test moves it."""
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_WINDOW": BOUNDARY_WINDOW}
    length = BOUNDARY_WINDOW.total_seconds()
    boundary = (utcnow().timestamp() // length + 1) * length
    now = [datetime.fromtimestamp(boundary - 1, UTC)]
    monkeypatch.setattr(lockout, "utcnow", lambda: now[0])
    return now


def test_guesses_one_by_one_across_a_window_boundary(
    storage: AuthStorage, gated: Any, clock: list[datetime]
) -> None:
    """THRESHOLD - 1 guesses just before a boundary and THRESHOLD just after: 2 x THRESHOLD - 1
    checks, then the lock (which outlasts the next boundary) holds."""
    Gate.open()
    auth = AuthFramework(storage=storage, audit_storage=storage)
    auth.register_user("alice", PASSWORD)
    gated.reset()
    before = [attempt(auth, "wrong") for _ in range(THRESHOLD - 1)]
    clock[0] += timedelta(seconds=2)
    after = [attempt(auth, "wrong") for _ in range(2 * THRESHOLD)]
    clock[0] += BOUNDARY_WINDOW - timedelta(seconds=4)  # into the next window, still locked
    later = attempt(auth, PASSWORD)
    assert gated.calls == 2 * THRESHOLD - 1
    assert [type(o).__name__ for o in [*before, *after, later]] == (
        ["InvalidCredentials"] * (2 * THRESHOLD - 1) + ["AccountLocked"] * (THRESHOLD + 1)
    )


@needs_server_database
@pytest.mark.django_db(transaction=True)
def test_a_burst_straddling_a_window_boundary(
    storage: AuthStorage, gated: Any, clock: list[datetime]
) -> None:
    """A burst just before a boundary and one just after, the second arriving while the first
    is still being checked (its lock not yet written): 2 x THRESHOLD checks, never more."""
    auth = AuthFramework(storage=storage, audit_storage=storage)
    auth.register_user("alice", PASSWORD)
    gated.reset()
    join_before = start_together([lambda: attempt(auth, "wrong")] * GUESSES)
    Gate.wait_settled(GUESSES)
    clock[0] += timedelta(seconds=2)
    join_after = start_together([lambda: attempt(auth, "wrong")] * GUESSES)
    Gate.wait_settled(2 * GUESSES)
    Gate.open()
    outcomes = join_before() + join_after()
    assert gated.calls == 2 * THRESHOLD, (
        f"two bursts of {GUESSES} around a window boundary, threshold {THRESHOLD}: "
        f"{gated.calls} password checks"
    )
    assert sorted(type(o).__name__ for o in outcomes) == (
        ["AccountLocked"] * (2 * GUESSES - 2 * THRESHOLD) + ["InvalidCredentials"] * 2 * THRESHOLD
    )
    with pytest.raises(AccountLocked):
        auth.authenticate("alice", PASSWORD, request_info=CLIENT)
