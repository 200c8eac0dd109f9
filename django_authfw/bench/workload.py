"""The records a bench run writes into one storage, the operations it times, and the cleanup.

Every record belongs to the run: tokens and sessions carry the run's own user id (a user created
for the run on a database storage, a made-up id elsewhere) and key-value keys start with
``authfw-bench:<run id>:``. Cleanup deletes exactly those (by user id and by key), never
anything else, and every key-value entry has a one-hour TTL in case a run is killed before it
can clean up.

The operations mirror what :class:`~django_authfw.AuthFramework` does, minus what is not the
storage's work:

* **verify** calls ``AuthFramework.verify_token`` itself (format check, SHA-256, one storage
  read, constant-time compare, revocation and expiry checks);
* **issue** mints a token pair exactly as ``authenticate`` does after the password check (two
  secrets, two digests, one ``store_token``), without password hashing or the audit write;
* **refresh** is the rotation of ``AuthFramework.refresh``: look up the refresh digest, store the
  new pair, revoke the old one (``store_token`` + ``revoke_token``), without reloading the user
  or writing the audit event;
* **session read / write / touch** are ``get_session``, ``store_session`` (replace the data) and
  ``touch_session``; **kv get / set** are ``kv_get`` and ``kv_set`` of 100-byte values.
"""

from __future__ import annotations

import hmac
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..conf import conf
from ..exceptions import InvalidToken, TokenRevoked
from ..records import AuthToken, SessionData, utcnow
from ..storage import AuthStorage
from ..tokens import (
    ACCESS_PREFIX,
    REFRESH_PREFIX,
    check_token_format,
    digest,
    new_id,
    new_secret,
    token_id_for,
)
from .requests import (
    PEER_OPERATIONS,
    REQUEST_OPERATIONS,
    authtoken_operation,
    delete_authtoken,
    drf_installed,
    request_operations,
)

# Key-value entries written by the bench expire by themselves if a run dies before cleanup.
KV_TTL = timedelta(hours=1)
KV_VALUE_BYTES = 100
# How many sessions and key-value entries each run keeps to read and write.
SESSION_COUNT = 1000
KV_COUNT = 1000
# Token pairs each process rotates in turn for the refresh timing (kept apart from the
# tokens that verification presents, which must stay valid).
ROTATION_TOKENS = 20
# Tokens per import_tokens call when filling the store.
FILL_BATCH = 1000

# The operations, in the order they are timed and shown.
OPERATIONS: tuple[str, ...] = (
    "verify_valid",
    "verify_unknown",
    "issue",
    "refresh",
    "session_read",
    "session_write",
    "session_touch",
    "kv_get",
    "kv_set",
)


class BenchError(Exception):
    """The storage answered something the bench did not expect (a wrong verification result)."""


def mint(user_id: str, family_id: str | None = None) -> tuple[str, str, AuthToken]:
    """A fresh token pair as ``AuthFramework`` mints it: ``(access, refresh, record)``.

    The record carries only the digests; the raw secrets stay with the bench (in memory, to
    present them again) and are never written or printed.
    """
    now = utcnow()
    access = new_secret(ACCESS_PREFIX)
    refresh = new_secret(REFRESH_PREFIX)
    access_digest = digest(access)
    token_id = token_id_for(access_digest)
    record = AuthToken(
        token_id=token_id,
        user_id=user_id,
        access_digest=access_digest,
        expires_at=now + conf.ACCESS_TOKEN_TTL,
        refresh_digest=digest(refresh),
        refresh_expires_at=now + conf.REFRESH_TOKEN_TTL,
        family_id=family_id or token_id,
        created_at=now,
        updated_at=now,
    )
    return access, refresh, record


@dataclass
class Population:
    """The raw secrets and ids of what was stored, which the operations present again.

    Kept in the bench process only. ``access`` is shuffled so that verification does not walk
    the store in insertion order. ``rotation`` holds, per process, the current refresh tokens
    of the pairs that process rotates (a refresh token can be used once, so processes never
    share one).
    """

    access: list[str] = field(default_factory=list)
    rotation: list[deque[str]] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    kv_keys: list[str] = field(default_factory=list)


class Workload:
    """Fills one storage, times operations on it and removes what it wrote.

    ``verify`` is the framework's ``verify_token`` bound to the same storage.
    """

    def __init__(
        self,
        storage: AuthStorage,
        *,
        run_id: str,
        user_id: str,
        verify: Callable[[str], AuthToken],
        alias: str | None = None,
        authtoken_key: str | None = None,
        authtoken_db: str | None = None,
    ) -> None:
        self.storage = storage
        self.run_id = run_id
        self.user_id = user_id
        self.verify = verify
        # The storage alias the request rows go through (the middleware finds its storage by
        # alias); None leaves them out.
        self.alias = alias
        # The key of the run's DRF token (the peer row, see requests.py), None for no peer row;
        # and the database that holds it.
        self.authtoken_key = authtoken_key
        self.authtoken_db = authtoken_db
        self.kv_prefix = f"authfw-bench:{run_id}:"
        self.population = Population()

    # Filling --------------------------------------------------------------------------------

    def fill_tokens(
        self, count: int, *, progress: Callable[[int], None] | None = None
    ) -> Iterator[int]:
        """Store ``count`` tokens with ``import_tokens`` in batches; yield the running total.

        A generator, so a caller can measure around any part of the fill.
        """
        stored = 0
        access = self.population.access
        while stored < count:
            batch: list[AuthToken] = []
            for _ in range(min(FILL_BATCH, count - stored)):
                raw_access, _raw_refresh, record = mint(self.user_id)
                access.append(raw_access)
                batch.append(record)
            self.storage.import_tokens(batch)
            stored += len(batch)
            if progress is not None:
                progress(stored)
            yield stored
        random.shuffle(access)

    def fill_extras(self, processes: int = 1) -> None:
        """Store what the other operations use: token pairs to rotate (for each of
        ``processes``), sessions and key-value entries."""
        for _ in range(processes):
            pool: deque[str] = deque()
            for _ in range(ROTATION_TOKENS):
                _raw_access, raw_refresh, record = mint(self.user_id)
                self.storage.store_token(record)
                pool.append(raw_refresh)
            self.population.rotation.append(pool)
        now = utcnow()
        ttl = conf.SESSION_TTL
        for _ in range(SESSION_COUNT):
            session = SessionData(
                session_id=new_id(),
                user_id=self.user_id,
                data={"cart": [1, 2, 3], "theme": "dark"},
                created_at=now,
                last_accessed=now,
                expires_at=now + ttl,
            )
            self.storage.store_session(session)
            self.population.session_ids.append(session.session_id)
        value = b"v" * KV_VALUE_BYTES
        for number in range(KV_COUNT):
            key = f"{self.kv_prefix}{number}"
            self.storage.kv_set(key, value, KV_TTL)
            self.population.kv_keys.append(key)

    # Checks before timing -------------------------------------------------------------------

    def check_semantics(self) -> None:
        """Prove the verify path is honest before timing it.

        A stored token verifies, an unknown one does not, and a token revoked a moment ago
        fails at once (nothing the storage does for speed may delay a revocation).
        """
        if not self.population.access:
            raise BenchError("No stored token to verify; store at least one with --tokens.")
        record = self.verify(self.population.access[0])
        if record.user_id != self.user_id:
            raise BenchError("verify_token returned another user's token.")
        try:
            self.verify(new_secret(ACCESS_PREFIX))
        except InvalidToken:
            pass
        else:
            raise BenchError("verify_token accepted a token that was never issued.")
        raw_access, _raw_refresh, victim = mint(self.user_id)
        self.storage.store_token(victim)
        self.verify(raw_access)  # read once, so a cache (if any) holds it
        if not self.storage.revoke_token(victim.token_id, at=utcnow()):
            raise BenchError("revoke_token did not revoke a live token.")
        try:
            self.verify(raw_access)
        except TokenRevoked:
            pass
        else:
            raise BenchError(
                "verify_token accepted a token revoked a moment ago; revocation must take "
                "effect immediately."
            )

    # The timed operations -------------------------------------------------------------------

    def operations(self, process: int = 0) -> dict[str, Callable[[], object]]:
        """One zero-argument callable per name in :data:`OPERATIONS` and :meth:`request_names`,
        for process ``process``.

        Refresh rotates the pairs of ``population.rotation[process]`` in turn: each refresh
        takes a refresh token from the pool and puts the new one back.
        """
        storage = self.storage
        verify = self.verify
        user_id = self.user_id
        population = self.population
        if process >= len(population.rotation):
            raise BenchError(f"No token pairs to rotate for process {process}.")

        next_access = itertools.cycle(population.access).__next__
        # Well-formed tokens that were never issued: the attack path (guessing, replaying).
        unknown = [new_secret(ACCESS_PREFIX) for _ in range(1000)]
        next_unknown = itertools.cycle(unknown).__next__
        next_session = itertools.cycle(population.session_ids).__next__
        next_key = itertools.cycle(population.kv_keys).__next__
        pool = population.rotation[process]
        session_ttl = conf.SESSION_TTL
        kv_value = b"w" * KV_VALUE_BYTES

        def verify_valid() -> object:
            return verify(next_access())

        def verify_unknown() -> object:
            try:
                verify(next_unknown())
            except InvalidToken:
                return None
            raise BenchError("verify_token accepted a token that was never issued.")

        def issue() -> object:
            _access, _refresh, record = mint(user_id)
            storage.store_token(record)
            return record

        def refresh() -> object:
            presented = digest(check_token_format(pool.popleft(), REFRESH_PREFIX))
            record = storage.get_token_by_refresh(presented)
            if (
                record is None
                or record.refresh_digest is None
                or not hmac.compare_digest(record.refresh_digest, presented)
                or record.is_revoked
            ):
                raise BenchError("A refresh token of the bench no longer verifies.")
            _access, new_refresh, new_record = mint(user_id, record.family_id)
            storage.store_token(new_record)
            if not storage.revoke_token(
                record.token_id, at=utcnow(), replaced_by=new_record.token_id
            ):
                raise BenchError("revoke_token refused to rotate a live token.")
            pool.append(new_refresh)
            return new_record

        def session_read() -> object:
            return storage.get_session(next_session())

        def session_write() -> object:
            now = utcnow()
            session = SessionData(
                session_id=next_session(),
                user_id=user_id,
                data={"cart": [1, 2, 3], "theme": "light", "seen": now.isoformat()},
                created_at=now,
                last_accessed=now,
                expires_at=now + session_ttl,
            )
            storage.store_session(session)
            return session

        def session_touch() -> object:
            now = utcnow()
            return storage.touch_session(next_session(), at=now, expires_at=now + session_ttl)

        def kv_get() -> object:
            return storage.kv_get(next_key())

        def kv_set() -> object:
            storage.kv_set(next_key(), kv_value, KV_TTL)
            return None

        table: dict[str, Callable[[], object]] = {
            "verify_valid": verify_valid,
            "verify_unknown": verify_unknown,
            "issue": issue,
            "refresh": refresh,
            "session_read": session_read,
            "session_write": session_write,
            "session_touch": session_touch,
            "kv_get": kv_get,
            "kv_set": kv_set,
        }
        if self.alias is not None:
            table.update(request_operations(self.alias, population.access))
        if self.authtoken_key is not None:
            table["request_drf_authtoken"] = authtoken_operation(self.authtoken_key)
        return table

    def request_names(self) -> list[str]:
        """The request rows this workload times (none without an alias)."""
        if self.alias is None:
            return []
        available: tuple[str, ...] = ("request_noauth", "request")
        if drf_installed():
            available = REQUEST_OPERATIONS
        names = [name for name in REQUEST_OPERATIONS if name in available]
        if self.authtoken_key is not None:
            names.extend(PEER_OPERATIONS)
        return names

    # Cleanup --------------------------------------------------------------------------------

    def cleanup(self) -> dict[str, Any]:
        """Delete every token, session and key-value entry of this run; return the counts.

        Tokens and sessions go by the run's user id (which only this run uses), so the ones a
        worker process wrote are found too; keys go one by one.
        """
        removed: dict[str, Any] = {"tokens": 0, "sessions": 0, "kv": 0}
        removed["tokens"] = self.storage.delete_user_tokens(self.user_id)
        removed["sessions"] = self.storage.delete_user_sessions(self.user_id)
        for key in self.population.kv_keys:
            removed["kv"] += int(self.storage.kv_delete(key))
        self.population.kv_keys.clear()
        if self.authtoken_key is not None:
            removed["drf_tokens"] = delete_authtoken(self.authtoken_key, self.authtoken_db)
        return removed
