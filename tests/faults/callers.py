"""Threads that use the framework as an application's requests would, while a test breaks the
storage under them: each issues a token (``authenticate``) and verifies one issued earlier,
in a loop, and counts what happens.

A token counts as issued only when ``authenticate`` returned it. Every failure is counted by
its exception type, with the time the failing call took; a verification that says an issued
token is unknown (``InvalidToken``) counts as a failure too: it means a token was lost.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connections

from django_authfw import AuthFramework

PACE = 0.005  # seconds between iterations of each thread: the CI machine is small


@dataclass
class Tally:
    issued: list[str] = field(default_factory=list)  # raw access tokens, kept in memory only
    verified: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # The longest a failing call took, per method: authenticate makes several storage calls
    # (each with its own retry budget), verify_token exactly one read.
    slowest_failure: dict[str, float] = field(
        default_factory=lambda: {"authenticate": 0.0, "verify_token": 0.0}
    )


class Callers:
    """``workers`` threads calling ``auth`` until :meth:`stop`."""

    def __init__(self, auth: AuthFramework, username: str, password: str, workers: int = 4):
        self.auth = auth
        self.username = username
        self.password = password
        self.tally = Tally()
        self.crashed: BaseException | None = None
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), name=f"caller-{n}", daemon=True)
            for n in range(workers)
        ]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        if self.crashed is not None:
            raise AssertionError(f"a caller thread crashed: {self.crashed!r}")

    def _failed(self, method: str, exc: Exception, started: float) -> None:
        took = time.monotonic() - started
        with self._lock:
            self.tally.errors[type(exc).__name__] += 1
            slowest = self.tally.slowest_failure
            slowest[method] = max(slowest[method], took)
            self._lock.notify_all()

    def _run(self, number: int) -> None:
        chooser = random.Random(number)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    issued = self.auth.authenticate(self.username, self.password)
                except Exception as exc:  # counted by type; the test asserts which occur
                    self._failed("authenticate", exc, started)
                else:
                    with self._lock:
                        self.tally.issued.append(issued.access_token)
                        self._lock.notify_all()
                with self._lock:
                    earlier = chooser.choice(self.tally.issued) if self.tally.issued else None
                if earlier is not None:
                    started = time.monotonic()
                    try:
                        self.auth.verify_token(earlier)
                    except Exception as exc:
                        self._failed("verify_token", exc, started)
                    else:
                        with self._lock:
                            self.tally.verified += 1
                time.sleep(PACE)
        except BaseException as exc:  # a bug in this loop: fail the test now, not at a timeout
            with self._lock:
                self.crashed = exc
                self._lock.notify_all()
            raise
        finally:
            connections.close_all()  # this thread's database connections

    def issued_count(self) -> int:
        with self._lock:
            return len(self.tally.issued)

    def error_count(self) -> int:
        with self._lock:
            return sum(self.tally.errors.values())

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
        """Block until ``condition()`` (called under the lock) holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition():
                if self.crashed is not None:
                    raise AssertionError(f"a caller thread crashed: {self.crashed!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out waiting for {what}: issued {len(self.tally.issued)}, "
                        f"errors {dict(self.tally.errors)}"
                    )
                self._lock.wait(min(left, 0.5))


def slowest(tally: Tally) -> str:
    return ", ".join(f"{method} {took:.2f}s" for method, took in tally.slowest_failure.items())


def unverifiable(auth: AuthFramework, issued: list[str]) -> list[str]:
    """The error names of the issued access tokens that no longer verify (a lost write each)."""
    failures = []
    for token in issued:
        try:
            auth.verify_token(token)
        except Exception as exc:
            failures.append(type(exc).__name__)
    return failures
