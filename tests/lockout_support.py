"""Helpers for the lockout concurrency tests: a hasher whose checks wait at a gate, and a
worker process that fires a burst of guesses released together with other processes.

The gate makes "the right password sent last" exact without timing: the test releases a
burst of wrong guesses, waits until each one has either been answered or is inside the hasher
(held at the gate), sends the right password, waits until it too is answered or held, and only
then opens the gate. Code that checks the lock, hashes, and counts afterwards lets every guess
into the hasher and the right password with them; code that counts first lets THRESHOLD in.

``python -m tests.lockout_support`` is the worker: it reads a JSON config line on stdin, sets
Django up on the test database, prints ``ready``, waits for ``go``, fires its guesses from
threads released by a ``threading.Barrier``, and prints a JSON line with its outcomes and the
number of password checks its hasher made.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from .hashers import CountingArgon2PasswordHasher

GATED_HASHER = "tests.lockout_support.GatedArgon2PasswordHasher"

# A generous bound for a hang, never a timed assertion: a settled burst takes milliseconds.
HANG = 60.0


class Gate:
    """Holds password checks until opened; counts attempts held and attempts answered."""

    cond = threading.Condition()
    opened = threading.Event()
    held = 0
    answered = 0

    @classmethod
    def reset(cls) -> None:
        with cls.cond:
            cls.opened.clear()
            cls.held = 0
            cls.answered = 0

    @classmethod
    def hold(cls) -> None:
        with cls.cond:
            cls.held += 1
            cls.cond.notify_all()
        if not cls.opened.wait(HANG):
            raise RuntimeError("the test never opened the gate")

    @classmethod
    def answer(cls) -> None:
        with cls.cond:
            cls.answered += 1
            cls.cond.notify_all()

    @classmethod
    def wait_settled(cls, attempts: int) -> None:
        """Wait until ``attempts`` attempts are each answered or held at the gate."""
        with cls.cond:
            if not cls.cond.wait_for(lambda: cls.held + cls.answered >= attempts, HANG):
                raise RuntimeError(
                    f"{attempts} attempts never settled: {cls.held} held, {cls.answered} answered"
                )

    @classmethod
    def open(cls) -> None:
        cls.opened.set()


class GatedArgon2PasswordHasher(CountingArgon2PasswordHasher):
    """The counting test hasher whose stored-hash checks wait at :class:`Gate`."""

    def verify(self, password: str, encoded: str) -> bool:
        Gate.hold()
        return super().verify(password, encoded)


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each call on its own thread, all released by one Barrier; results or exceptions."""
    return start_together(calls)()


def threads_joined(threads: list[threading.Thread], results: list[Any]) -> list[Any]:
    for thread in threads:
        thread.join(HANG * 2)
        if thread.is_alive():
            raise RuntimeError("a login thread hung")
    return results


def start_together(calls: list[Callable[[], Any]]) -> Callable[[], list[Any]]:
    """Start each call on its own thread, all released by one Barrier; return a function that
    joins them and returns their results (or exceptions), in order.

    Each thread closes its database connections at the end (PostgreSQL's connections are shared
    by everything running on this machine).
    """
    from django.db import connections

    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except BaseException as exc:
            results[index] = exc
        finally:
            Gate.answer()
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return lambda: threads_joined(threads, results)


# The worker process ---------------------------------------------------------------------------


def _worker() -> None:
    config = json.loads(sys.stdin.readline())
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["DATABASE_URL"] = config["database_url"]
    import django
    from django.conf import settings

    django.setup()
    # Set before anything reads them (hashers and storages are resolved on first use).
    settings.PASSWORD_HASHERS = ["tests.hashers.CountingArgon2PasswordHasher"]
    settings.CACHES = {**settings.CACHES, **config["caches"]}
    settings.AUTHFW = config["authfw"]

    from django_authfw import AuthFramework
    from django_authfw.request_info import RequestInfo

    auth = AuthFramework()
    info = RequestInfo(ip_address=config["ip_address"])
    calls: list[Callable[[], Any]] = [
        partial(auth.authenticate, config["username"], f"wrong {i}", request_info=info)
        for i in range(config["guesses"])
    ]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")
    results = run_together(calls)
    print(
        json.dumps(
            {
                "checks": CountingArgon2PasswordHasher.calls,
                "outcomes": [type(r).__name__ for r in results],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    _worker()
