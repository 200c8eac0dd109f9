"""Password hashers for tests: real Argon2, cheaper parameters, and counted.

``CountingArgon2PasswordHasher`` is Django's Argon2 hasher with a small work factor (so the
suite stays fast) that counts every hash it computes, through ``encode`` (new hashes, and the
dummy run for an unknown user) or ``verify`` (checking a stored hash). It keeps the algorithm
name ``argon2``, so hashes it makes verify with Django's own Argon2 hasher and vice versa.
"""

from __future__ import annotations

import threading

from django.contrib.auth.hashers import Argon2PasswordHasher, PBKDF2PasswordHasher

COUNTING_HASHER = "tests.hashers.CountingArgon2PasswordHasher"


class CountingArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 1
    memory_cost = 1024  # KiB
    parallelism = 1

    _lock = threading.Lock()
    calls = 0
    #: Idents of the threads that computed hashes (async code must keep them off the loop).
    threads: set[int] = set()

    @classmethod
    def _count(cls) -> None:
        with cls._lock:
            CountingArgon2PasswordHasher.calls += 1
            CountingArgon2PasswordHasher.threads.add(threading.get_ident())

    @classmethod
    def reset(cls) -> int:
        with cls._lock:
            calls, CountingArgon2PasswordHasher.calls = CountingArgon2PasswordHasher.calls, 0
            CountingArgon2PasswordHasher.threads = set()
        return calls

    def encode(self, password: str, salt: str) -> str:
        self._count()
        return super().encode(password, salt)

    def verify(self, password: str, encoded: str) -> bool:
        self._count()
        return super().verify(password, encoded)


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2 with few iterations: an "outdated" hasher for hash-upgrade tests."""

    iterations = 1000


FAST_PBKDF2_HASHER = "tests.hashers.FastPBKDF2PasswordHasher"
