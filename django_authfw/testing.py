"""The storage contract test suite, shipped so that a backend you write passes the same tests
every backend of this package passes.

Subclass :class:`StorageContractTests` together with a Django test case class and name the
storage factory, as Django's own tests reuse ``SessionTestsMixin`` for every session engine::

    from django.test import TestCase

    from django_authfw.testing import StorageContractTests
    from myproject.storage import MyStorage


    class MyStorageContractTests(StorageContractTests, TestCase):
        storage_factory = MyStorage  # any callable without arguments returning a fresh storage

Every test gets a fresh storage from the factory and flushes and closes it afterwards.

Why ``unittest`` style and not pytest fixtures: a mixin of plain ``unittest`` test methods runs
unchanged under Django's own test runner (``manage.py test``) and under pytest with
pytest-django (which collects ``unittest.TestCase`` classes and gives ``django.test.TestCase``
its database), while pytest fixtures would tie every user to pytest. This module therefore
imports nothing from pytest, and it asserts with ``self.assert*``, whose messages are as
informative under both runners (pytest rewrites plain ``assert`` only in test modules, and this
is not one). Like ``SessionTestsMixin`` the class is not itself a ``TestCase`` (and its name
does not start with ``Test``), so neither runner collects it on its own.

What the suite needs from a backend, beyond the methods of
:class:`~django_authfw.storage.AuthStorage`:

* **Expiry on the package's clock.** A backend that decides expiry itself (compares
  ``expires_at`` with the current time on each read) must read the time through
  :func:`django_authfw.records.utcnow` (imported by name or through the module): the suite
  holds that clock still and moves it by hand, so no test sleeps. A backend whose server
  expires records by TTL (Redis) sets ``native_expiry = True`` on the storage (or on the test
  class): the clock tests are then skipped, and :meth:`~StorageContractTests.test_records_expire`
  waits out one real, short TTL instead.
* **The engine methods, not the public ones.** The input tests (bad ids, a number for a TTL,
  a ``bytearray`` value, a malformed address, a raw token for a digest, ...) expect every
  backend to give the same answer, :class:`~django_authfw.exceptions.InvalidInput` with nothing
  changed. :class:`~django_authfw.storage.AuthStorage` gives it when the backend implements the
  ``_``-prefixed engine methods (``_store_token``, ``_kv_set``, ...) behind its validating
  public front; a backend that overrides a public method fails them.
* **Users.** :meth:`~StorageContractTests.make_user_id` creates a real user of
  ``AUTH_USER_MODEL`` (the database backend keeps a foreign key to it), so the test case needs
  database access (``django.test.TestCase``). Override it to return plain ids otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from asgiref.sync import async_to_sync

from . import records, tokens
from .exceptions import InvalidInput, TokenRevoked
from .records import AuditEvent, AuthToken, KVEntry, SessionData, replace, utcnow

if TYPE_CHECKING:
    import unittest

    from .storage import AuthStorage

    _TestCaseBase = unittest.TestCase
else:
    _TestCaseBase = object

__all__ = ["ControlledClock", "StorageContractTests", "make_session", "make_token"]

# The one real TTL the Redis flavours wait out (test_records_expire); short, but long enough
# that the writes before it finish well inside it on a loaded machine.
REAL_TTL = timedelta(milliseconds=300)
# A clock step: far longer than any rounding of a backend, far shorter than the one-hour
# default_ttl a session without expires_at gets on the cache backends.
STEP = timedelta(seconds=10)
SECOND = timedelta(seconds=1)


# Records -------------------------------------------------------------------------------------


def make_token(user_id: str, **fields: Any) -> AuthToken:
    """A token record as the framework issues it (digests of fresh secrets, the id derived
    from the access digest, the family named after it), not yet stored."""
    now = utcnow()
    access_digest = fields.get("access_digest") or tokens.digest(
        tokens.new_secret(tokens.ACCESS_PREFIX)
    )
    token_id = fields.get("token_id") or tokens.token_id_for(access_digest)
    values: dict[str, Any] = {
        "token_id": token_id,
        "user_id": user_id,
        "access_digest": access_digest,
        "refresh_digest": tokens.digest(tokens.new_secret(tokens.REFRESH_PREFIX)),
        "expires_at": now + timedelta(hours=1),
        "refresh_expires_at": now + timedelta(days=1),
        "family_id": token_id,
        "created_at": now,
        "updated_at": now,
        "permissions": ["auth.view_user"],
        "roles": ["staff"],
        "metadata": {"client": "contract-tests"},
    }
    values.update(fields)
    return AuthToken(**values)


def make_session(user_id: str, **fields: Any) -> SessionData:
    """A session record with data, an address and an expiry in an hour, not yet stored."""
    now = utcnow()
    values: dict[str, Any] = {
        "session_id": f"s-{uuid.uuid4().hex}",
        "user_id": user_id,
        "data": {"cart": [1, 2], "theme": "dark"},
        "created_at": now,
        "last_accessed": now,
        "expires_at": now + timedelta(hours=1),
        "ip_address": "203.0.113.7",
        "user_agent": "contract-tests",
    }
    values.update(fields)
    return SessionData(**values)


# The clock -----------------------------------------------------------------------------------


class ControlledClock:
    """:func:`django_authfw.records.utcnow`, held still and moved by hand (``advance``)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


def _install_clock(clock: Callable[[], datetime]) -> Callable[[], None]:
    """Put ``clock`` wherever ``records.utcnow`` is bound, and its timestamp wherever
    ``records.now_ts`` is; return the function that undoes it.

    Every module that imported them by name holds its own reference, so each such binding in
    ``sys.modules`` is swapped (this package's storages, a user's backend, this module).
    """
    replacements: dict[str, tuple[Any, Any]] = {
        "utcnow": (records.utcnow, clock),
        "now_ts": (records.now_ts, lambda: clock().timestamp()),
    }
    swapped: list[tuple[dict[str, Any], str, Any]] = []
    for module in list(sys.modules.values()):
        try:
            namespace = vars(module)
        except TypeError:  # a placeholder that is not a module
            continue
        for name, (original, replacement) in replacements.items():
            if namespace.get(name) is original:
                namespace[name] = replacement
                swapped.append((namespace, name, original))

    def restore() -> None:
        for namespace, name, original in swapped:
            namespace[name] = original

    return restore


# The suite -----------------------------------------------------------------------------------


class StorageContractTests(_TestCaseBase):
    """The storage contract; mix into a ``TestCase`` and set :attr:`storage_factory`."""

    # A callable without arguments returning a fresh, empty storage (the class itself will do).
    storage_factory: ClassVar[Callable[[], AuthStorage] | None] = None
    # Whether the backend's server removes expired records by TTL; None reads the storage's
    # own ``native_expiry`` attribute (False when it has none).
    native_expiry: ClassVar[bool | None] = None

    maxDiff = None  # records are long: show the whole difference
    storage: AuthStorage
    _clock: ControlledClock | None

    def setUp(self) -> None:
        super().setUp()
        self._clock = None
        self.storage = self.build_storage()

    def build_storage(self) -> AuthStorage:
        """A fresh storage from the factory, flushed and closed when the test ends."""
        factory = type(self).storage_factory
        if factory is None:
            raise NotImplementedError(
                f"{type(self).__name__} must set storage_factory to a callable that returns a "
                "fresh AuthStorage, e.g. storage_factory = MyStorage."
            )
        storage = factory()
        # Cleanups run last-in first-out: flush, then close.
        self.addCleanup(storage.close)
        self.addCleanup(storage.flush)
        return storage

    def make_user_id(self) -> str:
        """The id of a new real user, as records carry it (the primary key as a string)."""
        from django.contrib.auth import get_user_model

        model = get_user_model()
        user = model._default_manager.create(
            **{model.USERNAME_FIELD: f"contract-{uuid.uuid4().hex[:20]}"}
        )
        return str(user.pk)

    # Expiry helpers -------------------------------------------------------------------------

    def expires_by_server_ttl(self) -> bool:
        declared = type(self).native_expiry
        if declared is not None:
            return declared
        return bool(getattr(self.storage, "native_expiry", False))

    def expected_cleanup(self, removed: int) -> int:
        """Backends with native expiry (Redis TTLs) drop records themselves; cleanup finds none."""
        return 0 if self.expires_by_server_ttl() else removed

    def hold_clock(self) -> ControlledClock:
        """Hold the package's clock still until the test ends; skip on server-TTL backends."""
        if self.expires_by_server_ttl():
            self.skipTest(
                "records expire by the server's TTL, which the package's clock does not move; "
                "test_records_expire waits out a real TTL instead"
            )
        if self._clock is None:
            self._clock = ControlledClock(utcnow())
            self.addCleanup(_install_clock(self._clock))
        return self._clock

    # Tokens ---------------------------------------------------------------------------------

    def test_store_and_get_token_round_trip(self) -> None:
        token = make_token(self.make_user_id())
        self.storage.store_token(token)
        self.assertEqual(self.storage.get_token(token.token_id), token)
        self.assertEqual(self.storage.get_token_by_access(token.access_digest), token)
        assert token.refresh_digest is not None
        self.assertEqual(self.storage.get_token_by_refresh(token.refresh_digest), token)

    def test_unknown_token_lookups_give_none(self) -> None:
        self.assertIsNone(self.storage.get_token("no-such-token"))
        self.assertIsNone(self.storage.get_token_by_access("0" * 64))
        self.assertIsNone(self.storage.get_token_by_refresh("0" * 64))

    def test_token_without_refresh(self) -> None:
        token = make_token(self.make_user_id(), refresh_digest=None, refresh_expires_at=None)
        self.storage.store_token(token)
        self.assertEqual(self.storage.get_token_by_access(token.access_digest), token)

    def test_access_expired_token_is_kept_until_refresh_expires(self) -> None:
        token = make_token(self.make_user_id(), expires_at=utcnow() - timedelta(minutes=1))
        self.storage.store_token(token)
        found = self.storage.get_token_by_access(token.access_digest)
        self.assertIsNotNone(found)
        assert found is not None
        self.assertTrue(found.is_expired())
        self.assertEqual(self.storage.list_user_tokens(token.user_id), [token])

    def test_token_past_retain_until_is_invisible(self) -> None:
        user = self.make_user_id()
        clock = self.hold_clock()
        token = make_token(
            user, expires_at=clock.now + STEP, refresh_expires_at=clock.now + 2 * STEP
        )
        self.storage.store_token(token)
        clock.advance(2 * STEP - SECOND)  # access expired, refresh not: kept for reuse checks
        found = self.storage.get_token_by_access(token.access_digest)
        self.assertEqual(found, token)
        assert found is not None
        self.assertTrue(found.is_expired())
        clock.advance(2 * SECOND)  # past retain_until
        self.assertIsNone(self.storage.get_token(token.token_id))
        self.assertIsNone(self.storage.get_token_by_access(token.access_digest))
        assert token.refresh_digest is not None
        self.assertIsNone(self.storage.get_token_by_refresh(token.refresh_digest))
        self.assertEqual(self.storage.list_user_tokens(token.user_id), [])

    def test_update_token(self) -> None:
        token = make_token(self.make_user_id())
        self.storage.store_token(token)
        changed = replace(token, metadata={"note": "changed"}, permissions=[], updated_at=utcnow())
        self.assertIs(self.storage.update_token(changed), True)
        self.assertEqual(self.storage.get_token(token.token_id), changed)
        self.assertEqual(self.storage.get_token_by_access(token.access_digest), changed)
        missing = make_token(token.user_id)
        self.assertIs(self.storage.update_token(missing), False)
        self.assertIsNone(self.storage.get_token(missing.token_id))

    def test_revoke_token_once(self) -> None:
        token = make_token(self.make_user_id())
        self.storage.store_token(token)
        at = utcnow()
        self.assertIs(self.storage.revoke_token(token.token_id, at=at, replaced_by="next-id"), True)
        self.assertIs(self.storage.revoke_token(token.token_id, at=utcnow()), False)
        stored = self.storage.get_token_by_access(token.access_digest)
        assert stored is not None
        self.assertEqual(stored.revoked_at, at)
        self.assertEqual(stored.replaced_by, "next-id")
        self.assertIs(self.storage.revoke_token("no-such-token", at=at), False)

    def test_a_revoked_token_fails_verification_at_once(self) -> None:
        """Whatever a storage does for speed, the verification right after a revocation sees
        it (no cache may serve the token as it was), and so does a fresh verification."""
        from .framework import AuthFramework

        framework = AuthFramework(storage=self.storage)
        raw = tokens.new_secret(tokens.ACCESS_PREFIX)
        token = make_token(self.make_user_id(), access_digest=tokens.digest(raw))
        self.storage.store_token(token)
        self.assertEqual(framework.verify_token(raw), token)
        self.assertIs(self.storage.revoke_token(token.token_id, at=utcnow()), True)
        with self.assertRaises(TokenRevoked):
            framework.verify_token(raw)
        with self.assertRaises(TokenRevoked):
            AuthFramework(storage=self.storage).verify_token(raw)

    def test_tokens_with_ids_of_their_own(self) -> None:
        """Tokens imported from elsewhere keep ids that are not derived from their digests
        (tokens.token_id_for): every lookup, change and removal works on them too."""
        user = self.make_user_id()
        token = make_token(user, token_id=f"imported-{uuid.uuid4().hex}", family_id="fam")
        other = make_token(user)
        self.assertEqual(self.storage.import_tokens([token, other]), 2)
        assert token.refresh_digest is not None
        self.assertEqual(self.storage.get_token(token.token_id), token)
        self.assertEqual(self.storage.get_token_by_access(token.access_digest), token)
        self.assertEqual(self.storage.get_token_by_refresh(token.refresh_digest), token)
        self.assertEqual(
            self.storage.list_user_tokens(user),
            sorted([token, other], key=lambda t: (t.created_at, t.token_id)),
        )
        # Upserting the same id with new digests replaces the token: the old ones find nothing.
        moved = replace(
            token,
            access_digest=tokens.digest(tokens.new_secret(tokens.ACCESS_PREFIX)),
            refresh_digest=tokens.digest(tokens.new_secret(tokens.REFRESH_PREFIX)),
        )
        self.assertEqual(self.storage.import_tokens([moved]), 1)
        self.assertEqual(self.storage.get_token(token.token_id), moved)
        self.assertIsNone(self.storage.get_token_by_access(token.access_digest))
        self.assertIsNone(self.storage.get_token_by_refresh(token.refresh_digest))
        self.assertEqual(self.storage.get_token_by_access(moved.access_digest), moved)
        self.assertEqual(len(self.storage.list_user_tokens(user)), 2)
        self.assertIs(self.storage.revoke_token(token.token_id, at=utcnow()), True)
        revoked = self.storage.get_token(token.token_id)
        self.assertIsNotNone(revoked and revoked.revoked_at)
        self.assertIs(self.storage.delete_token(token.token_id), True)
        self.assertIsNone(self.storage.get_token(token.token_id))
        self.assertIsNone(self.storage.get_token_by_access(moved.access_digest))
        self.assertEqual(self.storage.list_user_tokens(user), [other])

    def test_revoke_user_tokens(self) -> None:
        alice, bob = self.make_user_id(), self.make_user_id()
        family = "family-1"
        a1 = make_token(alice, family_id=family)
        a2 = make_token(alice, family_id=family)
        a3 = make_token(alice)
        b1 = make_token(bob, family_id=family)
        for token in (a1, a2, a3, b1):
            self.storage.store_token(token)
        at = utcnow()
        self.assertEqual(self.storage.revoke_user_tokens(alice, at=at, family_id=family), 2)
        self.assertIsNone(self._stored_token(a3.token_id).revoked_at)
        self.assertEqual(self.storage.revoke_user_tokens(alice, at=at), 1)
        self.assertEqual(self.storage.revoke_user_tokens(alice, at=at), 0)
        self.assertTrue(all(t.revoked_at == at for t in self.storage.list_user_tokens(alice)))
        self.assertIsNone(self._stored_token(b1.token_id).revoked_at)
        # Every lookup sees the revocation: the hot path most of all.
        for token in (a1, a2, a3):
            by_access = self.storage.get_token_by_access(token.access_digest)
            by_refresh = self.storage.get_token_by_refresh(token.refresh_digest or "")
            self.assertEqual(by_access and by_access.revoked_at, at, token.token_id)
            self.assertEqual(by_refresh and by_refresh.revoked_at, at, token.token_id)

    def _stored_token(self, token_id: str) -> AuthToken:
        token = self.storage.get_token(token_id)
        self.assertIsNotNone(token, token_id)
        assert token is not None
        return token

    def test_delete_token(self) -> None:
        token = make_token(self.make_user_id())
        self.storage.store_token(token)
        self.assertIs(self.storage.delete_token(token.token_id), True)
        self.assertIs(self.storage.delete_token(token.token_id), False)
        self.assertIsNone(self.storage.get_token(token.token_id))
        self.assertIsNone(self.storage.get_token_by_access(token.access_digest))
        self.assertEqual(self.storage.list_user_tokens(token.user_id), [])

    def test_list_and_delete_user_tokens(self) -> None:
        alice, bob = self.make_user_id(), self.make_user_id()
        start = utcnow()
        alices = [make_token(alice, created_at=start + timedelta(seconds=i)) for i in range(3)]
        bobs = make_token(bob)
        for token in [*reversed(alices), bobs]:
            self.storage.store_token(token)
        self.assertEqual(self.storage.list_user_tokens(alice), alices)
        self.assertEqual(self.storage.list_user_tokens("999999"), [])
        self.assertEqual(self.storage.delete_user_tokens(alice), 3)
        self.assertEqual(self.storage.list_user_tokens(alice), [])
        self.assertIsNone(self.storage.get_token_by_access(alices[0].access_digest))
        self.assertEqual(self.storage.list_user_tokens(bob), [bobs])

    def test_cleanup_expired_tokens(self) -> None:
        user = self.make_user_id()
        clock = self.hold_clock()
        live = make_token(user, created_at=clock.now - 2 * SECOND)
        refresh_alive = make_token(user, created_at=clock.now - SECOND, expires_at=clock.now)
        soon = [
            make_token(user, expires_at=clock.now + STEP, refresh_expires_at=clock.now + STEP)
            for _ in range(3)
        ]
        for token in [live, refresh_alive, *soon]:
            self.storage.store_token(token)
        self.assertEqual(self.storage.cleanup_expired_tokens(), 0)  # nothing is over yet
        clock.advance(STEP + SECOND)
        self.assertEqual(self.storage.cleanup_expired_tokens(dry_run=True), 3)
        self.assertEqual(self.storage.cleanup_expired_tokens(batch_size=2), 3)
        self.assertEqual(self.storage.cleanup_expired_tokens(), 0)
        self.assertEqual(
            {t.token_id for batch in self.storage.iter_tokens() for t in batch},
            {live.token_id, refresh_alive.token_id},
        )
        self.assertEqual(self.storage.list_user_tokens(user), [live, refresh_alive])

    # Sessions -------------------------------------------------------------------------------

    def test_session_round_trip(self) -> None:
        session = make_session(self.make_user_id())
        self.storage.store_session(session)
        self.assertEqual(self.storage.get_session(session.session_id), session)
        self.assertIsNone(self.storage.get_session("no-such-session"))
        changed = replace(session, data={"theme": "light"})
        self.storage.store_session(changed)
        self.assertEqual(self.storage.get_session(session.session_id), changed)

    def test_session_without_expiry_and_ipv6(self) -> None:
        session = make_session(self.make_user_id(), expires_at=None, ip_address="2001:db8::1")
        self.storage.store_session(session)
        self.assertEqual(self.storage.get_session(session.session_id), session)

    def test_expired_session_is_invisible(self) -> None:
        user = self.make_user_id()
        clock = self.hold_clock()
        session = make_session(user, expires_at=clock.now + STEP)
        self.storage.store_session(session)
        clock.advance(STEP - SECOND)
        self.assertEqual(self.storage.get_session(session.session_id), session)
        self.assertEqual(self.storage.count_active_sessions(), 1)
        clock.advance(2 * SECOND)
        self.assertIsNone(self.storage.get_session(session.session_id))
        self.assertEqual(self.storage.list_user_sessions(user), [])
        self.assertEqual(self.storage.count_active_sessions(), 0)
        self.assertIs(self.storage.touch_session(session.session_id, at=clock.now), False)

    def test_touch_session(self) -> None:
        session = make_session(self.make_user_id())
        self.storage.store_session(session)
        at = utcnow() + timedelta(seconds=5)
        new_expiry = utcnow() + timedelta(hours=2)
        self.assertIs(
            self.storage.touch_session(session.session_id, at=at, expires_at=new_expiry), True
        )
        touched = self.storage.get_session(session.session_id)
        assert touched is not None
        self.assertEqual(touched.last_accessed, at)
        self.assertEqual(touched.expires_at, new_expiry)
        self.assertEqual(touched.data, session.data)
        later = at + timedelta(seconds=5)
        self.assertIs(self.storage.touch_session(session.session_id, at=later), True)
        again = self.storage.get_session(session.session_id)
        assert again is not None
        self.assertEqual(again.last_accessed, later)
        self.assertEqual(again.expires_at, new_expiry)
        self.assertIs(self.storage.touch_session("no-such-session", at=at), False)

    def test_touched_session_lives_to_its_new_expiry(self) -> None:
        user = self.make_user_id()
        clock = self.hold_clock()
        session = make_session(user, expires_at=clock.now + STEP)
        self.storage.store_session(session)
        self.assertIs(
            self.storage.touch_session(
                session.session_id, at=clock.now, expires_at=clock.now + 3 * STEP
            ),
            True,
        )
        clock.advance(2 * STEP)  # past the first expiry
        self.assertIsNotNone(self.storage.get_session(session.session_id))
        self.assertEqual(self.storage.count_active_sessions(), 1)
        clock.advance(STEP + SECOND)
        self.assertIsNone(self.storage.get_session(session.session_id))

    def test_user_sessions(self) -> None:
        alice, bob = self.make_user_id(), self.make_user_id()
        start = utcnow()
        alices = [make_session(alice, created_at=start + timedelta(seconds=i)) for i in range(3)]
        bobs = make_session(bob)
        for session in [*reversed(alices), bobs]:
            self.storage.store_session(session)
        self.assertEqual(self.storage.list_user_sessions(alice), alices)
        self.assertEqual(self.storage.count_active_sessions(), 4)
        self.assertIs(self.storage.delete_session(alices[0].session_id), True)
        self.assertIs(self.storage.delete_session(alices[0].session_id), False)
        self.assertEqual(self.storage.delete_user_sessions(alice), 2)
        self.assertEqual(self.storage.list_user_sessions(alice), [])
        self.assertEqual(self.storage.list_user_sessions(bob), [bobs])

    def test_cleanup_expired_sessions(self) -> None:
        user = self.make_user_id()
        clock = self.hold_clock()
        keep = make_session(user)
        for i in range(3):
            self.storage.store_session(
                make_session(user, session_id=f"old-{i}", expires_at=clock.now + STEP)
            )
        self.storage.store_session(keep)
        self.assertEqual(self.storage.cleanup_expired_sessions(), 0)
        clock.advance(STEP + SECOND)
        self.assertEqual(self.storage.cleanup_expired_sessions(dry_run=True), 3)
        self.assertEqual(self.storage.cleanup_expired_sessions(batch_size=2), 3)
        self.assertEqual(self.storage.cleanup_expired_sessions(), 0)
        self.assertEqual([s for batch in self.storage.iter_sessions() for s in batch], [keep])

    # Key-value ------------------------------------------------------------------------------

    def test_kv_round_trip(self) -> None:
        self.storage.kv_set("greeting", b"hello")
        self.storage.kv_set("binary", bytes(range(256)))
        self.assertEqual(self.storage.kv_get("greeting"), b"hello")
        self.assertEqual(self.storage.kv_get("binary"), bytes(range(256)))
        self.storage.kv_set("greeting", b"")
        self.assertEqual(self.storage.kv_get("greeting"), b"")
        self.assertIsNone(self.storage.kv_get("missing"))
        self.assertIs(self.storage.kv_delete("greeting"), True)
        self.assertIs(self.storage.kv_delete("greeting"), False)
        self.assertIsNone(self.storage.kv_get("greeting"))

    def test_kv_ttl(self) -> None:
        clock = self.hold_clock()
        self.storage.kv_set("short", b"1", ttl=STEP)
        self.storage.kv_set("forever", b"2")
        clock.advance(STEP - SECOND)
        self.assertEqual(self.storage.kv_get("short"), b"1")
        self.assertEqual(self.storage.cleanup_expired_kv(), 0)
        clock.advance(2 * SECOND)
        self.assertIsNone(self.storage.kv_get("short"))
        self.assertEqual(self.storage.kv_get("forever"), b"2")
        self.assertEqual(self.storage.cleanup_expired_kv(dry_run=True), 1)
        self.assertEqual(self.storage.cleanup_expired_kv(), 1)
        self.assertEqual([e.key for batch in self.storage.iter_kv() for e in batch], ["forever"])

    def test_kv_set_without_ttl_makes_an_entry_persist(self) -> None:
        clock = self.hold_clock()
        self.storage.kv_set("k", b"1", ttl=STEP)
        self.storage.kv_set("k", b"2")  # no ttl: it persists, whatever expiry it had
        clock.advance(STEP + SECOND)
        self.assertEqual(self.storage.kv_get("k"), b"2")
        self.storage.kv_set("k", b"3", ttl=STEP)  # and a new ttl replaces no expiry
        clock.advance(STEP + SECOND)
        self.assertIsNone(self.storage.kv_get("k"))

    def test_kv_incr(self) -> None:
        clock = self.hold_clock()
        self.assertEqual(self.storage.kv_incr("fails", ttl=STEP), 1)
        clock.advance(STEP - SECOND)
        self.assertEqual(self.storage.kv_incr("fails", ttl=timedelta(hours=1)), 2)
        self.assertEqual(self.storage.kv_get("fails"), b"2")
        clock.advance(2 * SECOND)  # the first ttl holds: a fixed window
        self.assertIsNone(self.storage.kv_get("fails"))
        self.assertEqual(self.storage.kv_incr("fails", ttl=timedelta(hours=1)), 1)
        self.assertEqual(self.storage.kv_incr("plain"), 1)
        clock.advance(timedelta(days=1))
        self.assertEqual(self.storage.kv_incr("plain"), 2)  # no ttl: it persists

    def test_kv_entry_iteration_carries_expiry(self) -> None:
        self.storage.kv_set("ttl", b"x", ttl=timedelta(hours=1))
        entries = [e for batch in self.storage.iter_kv() for e in batch]
        self.assertEqual(len(entries), 1)
        self.assertIsInstance(entries[0], KVEntry)
        expires = entries[0].expires_at
        assert expires is not None
        self.assertLess(abs((expires - utcnow()) - timedelta(hours=1)), timedelta(seconds=5))

    # Expiry end to end: a real TTL on server-expiry backends, the clock elsewhere -----------

    def test_records_expire(self) -> None:
        """Every kind expires: on Redis the one test that waits out a real TTL."""
        user = self.make_user_id()
        server_ttl = self.expires_by_server_ttl()
        clock = None if server_ttl else self.hold_clock()
        now = utcnow()
        token = make_token(user, expires_at=now + REAL_TTL, refresh_expires_at=now + REAL_TTL)
        session = make_session(user, expires_at=now + REAL_TTL)
        self.storage.store_token(token)
        self.storage.store_session(session)
        self.storage.kv_set("short", b"1", ttl=REAL_TTL)
        self.storage.kv_set("forever", b"2")
        self.assertEqual(self.storage.kv_incr("window", ttl=REAL_TTL), 1)
        self.assertEqual(self.storage.kv_incr("window", ttl=timedelta(hours=1)), 2)
        if clock is None:
            time.sleep((REAL_TTL + timedelta(milliseconds=100)).total_seconds())
        else:
            clock.advance(REAL_TTL + SECOND)
        self.assertIsNone(self.storage.get_token(token.token_id))
        self.assertIsNone(self.storage.get_token_by_access(token.access_digest))
        self.assertIsNone(self.storage.get_token_by_refresh(token.refresh_digest or ""))
        self.assertEqual(self.storage.list_user_tokens(user), [])
        self.assertEqual(_flat(self.storage.iter_tokens()), [])
        self.assertIsNone(self.storage.get_session(session.session_id))
        self.assertEqual(self.storage.list_user_sessions(user), [])
        self.assertEqual(self.storage.count_active_sessions(), 0)
        self.assertIs(self.storage.touch_session(session.session_id, at=utcnow()), False)
        self.assertEqual(_flat(self.storage.iter_sessions()), [])
        self.assertIsNone(self.storage.kv_get("short"))
        self.assertIsNone(self.storage.kv_get("window"))  # the first ttl held: a fixed window
        self.assertEqual([e.key for e in _flat(self.storage.iter_kv())], ["forever"])
        self.assertEqual(self.storage.kv_incr("window", ttl=timedelta(hours=1)), 1)
        self.assertEqual(self.storage.cleanup_expired_tokens(), self.expected_cleanup(1))
        self.assertEqual(self.storage.cleanup_expired_sessions(), self.expected_cleanup(1))
        self.assertEqual(self.storage.cleanup_expired_kv(), self.expected_cleanup(1))

    # Audit ----------------------------------------------------------------------------------

    def test_audit_append_query_count(self) -> None:
        start = utcnow() - timedelta(minutes=10)
        events = [
            AuditEvent(
                action="login" if i % 2 else "register",
                outcome=i % 3 != 0,
                user_id=str(i % 2),
                ip_address="198.51.100.1" if i % 2 else "2001:db8::2",
                user_agent="ua",
                created_at=start + timedelta(minutes=i),
                metadata={"i": i},
            )
            for i in range(6)
        ]
        for event in events:
            self.storage.append_audit(event)
        newest_first = list(reversed(events))
        self.assertEqual(self.storage.query_audit(), newest_first)
        self.assertEqual(self.storage.query_audit(limit=2), newest_first[:2])
        self.assertEqual(self.storage.query_audit(limit=2, offset=2), newest_first[2:4])
        self.assertEqual(
            self.storage.query_audit(action="login"),
            [e for e in newest_first if e.action == "login"],
        )
        self.assertEqual(
            self.storage.query_audit(user_id="0", outcome=False),
            [e for e in newest_first if e.user_id == "0" and not e.outcome],
        )
        since, until = start + timedelta(minutes=2), start + timedelta(minutes=4)
        self.assertEqual(self.storage.query_audit(since=since, until=until), [events[3], events[2]])
        self.assertEqual(self.storage.count_audit(), 6)
        self.assertEqual(self.storage.count_audit(action="login", outcome=True), 2)
        self.assertEqual(self.storage.delete_audit_before(start + timedelta(minutes=3)), 3)
        self.assertEqual(self.storage.count_audit(), 3)

    # Iteration, import, statistics, flush ---------------------------------------------------

    def test_iterate_in_batches_and_import(self) -> None:
        other = self.build_storage()
        user = self.make_user_id()
        stored_tokens = [make_token(user) for _ in range(25)]
        for token in stored_tokens:
            self.storage.store_token(token)
        sessions = [make_session(user, session_id=f"s{i}") for i in range(12)]
        for session in sessions:
            self.storage.store_session(session)
        self.storage.kv_set("k1", b"v1")
        self.storage.kv_set("k2", b"v2", ttl=timedelta(hours=1))
        events = [AuditEvent(action="login", outcome=True, user_id=user) for _ in range(7)]
        for event in events:
            self.storage.append_audit(event)

        self.storage.revoke_token(stored_tokens[0].token_id, at=utcnow())  # iterated too
        stored_tokens[0] = self._stored_token(stored_tokens[0].token_id)
        token_batches = list(self.storage.iter_tokens(batch_size=10))
        self.assertTrue(all(0 < len(batch) <= 10 for batch in token_batches))
        copied = [t for batch in token_batches for t in batch]
        self.assertEqual(
            sorted(t.token_id for t in copied), sorted(t.token_id for t in stored_tokens)
        )
        session_batches = list(self.storage.iter_sessions(batch_size=5))
        self.assertTrue(all(0 < len(batch) <= 5 for batch in session_batches))
        kv = [e for batch in self.storage.iter_kv(batch_size=1) for e in batch]
        audit = [e for batch in self.storage.iter_audit(batch_size=3) for e in batch]
        self.assertEqual(audit, events)  # oldest first

        for _ in range(2):  # a second import changes nothing
            self.assertEqual(other.import_tokens(copied), 25)
            other.import_sessions([s for b in session_batches for s in b])
            other.import_kv(kv)
            other.import_audit(audit)
        for token in stored_tokens:
            self.assertEqual(other.get_token_by_access(token.access_digest), token)
        self.assertEqual(other.list_user_tokens(user), self.storage.list_user_tokens(user))
        self.assertEqual(other.list_user_sessions(user), self.storage.list_user_sessions(user))
        self.assertEqual(other.kv_get("k2"), b"v2")
        self.assertIsNone({e.key: e.expires_at for e in kv}["k1"])
        self.assertEqual(other.count_audit(), 7)
        self.assertEqual(other.import_audit(audit), 0)

    def test_import_replaces_what_the_target_holds(self) -> None:
        """Imports upsert: a restore brings back a revocation, new session data, a new value."""
        user = self.make_user_id()
        token = make_token(user)
        session = make_session(user)
        self.storage.store_token(token)
        self.storage.store_session(session)
        self.storage.kv_set("k", b"old")
        revoked = replace(token, revoked_at=utcnow(), replaced_by="next-id", updated_at=utcnow())
        changed = replace(session, data={"theme": "light"})
        self.assertEqual(self.storage.import_tokens([revoked]), 1)
        self.storage.import_sessions([changed])
        self.storage.import_kv([KVEntry(key="k", value=b"new")])
        self.assertEqual(self.storage.get_token_by_access(token.access_digest), revoked)
        self.assertEqual(self.storage.get_session(session.session_id), changed)
        self.assertEqual(self.storage.kv_get("k"), b"new")

    # Import batches: more records than one write batch, duplicates, mixed states ------------

    BIG_BATCH = 1203  # more than a Redis pipeline (500) or a database chunk holds, not a multiple

    def test_import_more_records_than_a_write_batch(self) -> None:
        """A batch larger than any backend writes at once: every record lands, with its
        indexes and pointers, revoked and live ones alike, with and without refresh, with ids
        of their own (imported from elsewhere) and ids derived from their digest."""
        users = [self.make_user_id(), self.make_user_id()]
        now = utcnow()
        batch = []
        for i in range(self.BIG_BATCH):
            fields: dict[str, Any] = {}
            if i % 3 == 0:
                fields.update(refresh_digest=None, refresh_expires_at=None)
            if i % 4 == 0:
                fields.update(revoked_at=now, updated_at=now)
            if i % 5 == 0:
                fields["token_id"] = f"ext-{uuid.uuid4().hex}"
            batch.append(make_token(users[i % 2], **fields))
        self.assertEqual(self.storage.import_tokens(batch), len(batch))
        self.assertEqual(self.storage.import_tokens(batch), len(batch))  # upserts: the same
        for token in batch:
            self.assertEqual(self.storage.get_token_by_access(token.access_digest), token)
            self.assertEqual(self.storage.get_token(token.token_id), token)
            if token.refresh_digest:
                self.assertEqual(self.storage.get_token_by_refresh(token.refresh_digest), token)
        for user in users:
            mine = sorted(t.token_id for t in batch if t.user_id == user)
            listed = self.storage.list_user_tokens(user)
            self.assertEqual(sorted(t.token_id for t in listed), mine)
        # More live tokens than one write batch, revoked at once.
        live = [t for t in batch if t.user_id == users[0] and t.revoked_at is None]
        self.assertEqual(self.storage.revoke_user_tokens(users[0], at=now), len(live))
        self.assertTrue(all(t.is_revoked for t in self.storage.list_user_tokens(users[0])))
        self.assertEqual(self.storage.revoke_user_tokens(users[0], at=now), 0)
        self.assertTrue(any(not t.is_revoked for t in self.storage.list_user_tokens(users[1])))

        sessions = [make_session(users[i % 2]) for i in range(self.BIG_BATCH)]
        self.assertEqual(self.storage.import_sessions(sessions), len(sessions))
        for session in sessions[::7]:
            self.assertEqual(self.storage.get_session(session.session_id), session)
        self.assertEqual(len(self.storage.list_user_sessions(users[1])), len(sessions[1::2]))
        entries = [
            KVEntry(
                key=f"big-{i}",
                value=str(i).encode(),
                expires_at=None if i % 2 else now + timedelta(hours=1),
            )
            for i in range(self.BIG_BATCH)
        ]
        self.assertEqual(self.storage.import_kv(entries), len(entries))
        for entry in entries[::7]:
            self.assertEqual(self.storage.kv_get(entry.key), entry.value)
        events = [
            AuditEvent(action="login", outcome=bool(i % 2), created_at=now + i * SECOND)
            for i in range(self.BIG_BATCH)
        ]
        self.assertEqual(self.storage.import_audit(events), len(events))
        self.assertEqual(self.storage.import_audit(events), 0)
        self.assertEqual(self.storage.count_audit(), len(events))

    def test_import_batch_with_duplicates_and_mixed_states(self) -> None:
        """Within one batch, later copies of a record win, as if imported one by one: a
        token imported live, then revoked, then with another refresh token; one moved to
        another user; a record already over is not written and removes what its id held."""
        users = [self.make_user_id(), self.make_user_id()]
        now = utcnow()
        first = make_token(users[0])
        revoked = replace(first, revoked_at=now, updated_at=now)
        rotated = replace(revoked, refresh_digest=make_token(users[0]).refresh_digest)
        moved = make_token(users[0], token_id=f"ext-{uuid.uuid4().hex}")
        moved_later = replace(moved, user_id=users[1])
        no_refresh = make_token(users[1], refresh_digest=None, refresh_expires_at=None)
        stale = make_token(users[1])
        self.storage.store_token(stale)
        over = replace(
            stale,
            expires_at=now - timedelta(hours=2),
            refresh_expires_at=now - timedelta(hours=1),
        )
        batch = [first, moved, revoked, no_refresh, rotated, moved_later, over]
        self.storage.import_tokens(batch)

        self.assertEqual(self.storage.get_token(first.token_id), rotated)
        self.assertEqual(self.storage.get_token_by_access(first.access_digest), rotated)
        assert rotated.refresh_digest is not None
        assert first.refresh_digest is not None
        self.assertEqual(self.storage.get_token_by_refresh(rotated.refresh_digest), rotated)
        self.assertIsNone(self.storage.get_token_by_refresh(first.refresh_digest))
        self.assertEqual(self.storage.get_token(moved.token_id), moved_later)
        self.assertEqual(self.storage.get_token(no_refresh.token_id), no_refresh)
        self.assertIsNone(self.storage.get_token(stale.token_id))
        self.assertIsNone(self.storage.get_token_by_access(stale.access_digest))
        self.assertEqual(
            sorted(t.token_id for t in self.storage.list_user_tokens(users[0])),
            [first.token_id],
        )
        self.assertEqual(
            sorted(t.token_id for t in self.storage.list_user_tokens(users[1])),
            sorted([moved.token_id, no_refresh.token_id]),
        )
        # The revocation stays consistent: revoking the user again finds nothing to revoke.
        self.assertEqual(self.storage.revoke_user_tokens(users[0], at=now), 0)

        session = make_session(users[0])
        changed = replace(session, data={"theme": "light"}, user_id=users[1])
        gone = make_session(users[1])
        self.storage.store_session(gone)
        ended = replace(gone, expires_at=now - SECOND)
        self.storage.import_sessions([session, ended, changed])
        self.assertEqual(self.storage.get_session(session.session_id), changed)
        self.assertIsNone(self.storage.get_session(gone.session_id))
        self.assertEqual(self.storage.list_user_sessions(users[0]), [])
        self.assertEqual(self.storage.list_user_sessions(users[1]), [changed])

        self.storage.kv_set("gone", b"old")
        self.storage.import_kv(
            [
                KVEntry(key="dup", value=b"1"),
                KVEntry(key="gone", value=b"new", expires_at=now - SECOND),
                KVEntry(key="dup", value=b"2"),
            ]
        )
        self.assertEqual(self.storage.kv_get("dup"), b"2")
        self.assertIsNone(self.storage.kv_get("gone"))

    def test_batch_reads_answer_as_single_reads(self) -> None:
        """``_get_tokens``, ``_get_sessions`` and ``_kv_entries`` (migration's batch reads)
        return what ``get_token``, ``get_session`` and ``kv_get`` return for each id: live
        records only, ids of their own and derived ones, unknown and repeated ids."""
        user = self.make_user_id()
        now = utcnow()
        minted = make_token(user)
        foreign = make_token(user, token_id=f"ext-{uuid.uuid4().hex}", refresh_digest=None)
        revoked = make_token(user, revoked_at=now, updated_at=now)
        for token in (minted, foreign, revoked):
            self.storage.store_token(token)
        ids = [minted.token_id, foreign.token_id, revoked.token_id, "unknown", minted.token_id]
        expected = {i: t for i in ids if (t := self.storage.get_token(i)) is not None}
        self.assertEqual(len(expected), 3)
        self.assertEqual(self.storage._get_tokens(ids), expected)
        self.assertEqual(self.storage._get_tokens([]), {})

        session = make_session(user)
        self.storage.store_session(session)
        self.assertEqual(
            self.storage._get_sessions([session.session_id, "unknown"]),
            {session.session_id: session},
        )
        self.storage.kv_set("plain", b"1")
        self.storage.kv_set("timed", b"2", ttl=timedelta(hours=1))
        entries = self.storage._kv_entries(["plain", "timed", "unknown"])
        if entries is not None:  # None: the backend reads expiries through iter_kv only
            self.assertEqual(sorted(entries), ["plain", "timed"])
            self.assertEqual((entries["plain"].value, entries["plain"].expires_at), (b"1", None))
            timed = entries["timed"]
            assert timed.expires_at is not None
            self.assertEqual(timed.value, b"2")
            self.assertLess(abs(timed.expires_at - (now + timedelta(hours=1))), STEP)

    def test_statistics(self) -> None:
        user = self.make_user_id()
        live = make_token(user)
        revoked = make_token(user)
        access_expired = make_token(user, expires_at=utcnow() - timedelta(seconds=1))
        for token in (live, revoked, access_expired):
            self.storage.store_token(token)
        self.storage.revoke_token(revoked.token_id, at=utcnow())
        self.storage.store_session(make_session(user))
        self.storage.kv_set("a", b"1")
        self.storage.append_audit(AuditEvent(action="login", outcome=True))
        stats = self.storage.statistics()
        self.assertEqual(stats["total_tokens"], 3)
        self.assertEqual(stats["active_tokens"], 1)
        self.assertEqual(stats["revoked_tokens"], 1)
        self.assertEqual(stats["expired_tokens"], 1)
        self.assertEqual(stats["active_sessions"], 1)
        self.assertEqual(stats["kv_entries"], 1)
        self.assertEqual(stats["audit_events"], 1)
        self.assertIsInstance(stats["backend"], str)
        self.assertTrue(stats["backend"])

    def test_flush(self) -> None:
        user = self.make_user_id()
        token = make_token(user)
        self.storage.store_token(token)
        self.storage.store_session(make_session(user))
        self.storage.kv_set("a", b"1")
        self.storage.append_audit(AuditEvent(action="login", outcome=True))
        self.storage.flush()
        self.assertIsNone(self.storage.get_token_by_access(token.access_digest))
        self.assertEqual(self.storage.list_user_tokens(user), [])
        self.assertEqual(self.storage.count_active_sessions(), 0)
        self.assertIsNone(self.storage.kv_get("a"))
        self.assertEqual(self.storage.count_audit(), 0)

    # Copies: what a caller holds never shares a list or dict with what is stored ----------

    def test_records_do_not_share_containers_with_the_store(self) -> None:
        """A caller changing a record it wrote or read, however deep, changes nothing stored.

        Checked on every nested list and dict, on every path a record comes back by: a store
        that keeps the caller's object, or returns its own, fails here. Token records cannot
        be changed at all (they are immutable, so a store may share them); sessions and audit
        events can, so a store copies them.
        """
        user = self.make_user_id()
        token = make_token(
            user, permissions=["read"], roles=["staff"], metadata={"deep": {"list": [1]}}
        )
        session = make_session(user, data={"cart": [1, 2], "deep": {"x": {"y": 1}}})
        event = AuditEvent(action="login", outcome=True, metadata={"deep": {"list": [1]}})
        kept_token, kept_session, kept_event = copy.deepcopy((token, session, event))
        self.storage.store_token(token)
        self.storage.store_session(session)
        self.storage.append_audit(event)
        # The objects written are the caller's: changing them afterwards must not reach the store.
        _scribble_token(token)
        _scribble_session(session)
        _scribble_event(event)

        assert kept_token.refresh_digest is not None
        token_reads: dict[str, Callable[[], AuthToken | None]] = {
            "get_token": lambda: self.storage.get_token(kept_token.token_id),
            "get_token_by_access": lambda: self.storage.get_token_by_access(
                kept_token.access_digest
            ),
            "get_token_by_refresh": lambda: self.storage.get_token_by_refresh(
                kept_token.refresh_digest or ""
            ),
            "list_user_tokens": lambda: _only(self.storage.list_user_tokens(user)),
            "iter_tokens": lambda: _only(_flat(self.storage.iter_tokens())),
        }
        session_reads: dict[str, Callable[[], SessionData | None]] = {
            "get_session": lambda: self.storage.get_session(kept_session.session_id),
            "list_user_sessions": lambda: _only(self.storage.list_user_sessions(user)),
            "iter_sessions": lambda: _only(_flat(self.storage.iter_sessions())),
        }
        event_reads: dict[str, Callable[[], AuditEvent | None]] = {
            "query_audit": lambda: _only(self.storage.query_audit()),
            "iter_audit": lambda: _only(_flat(self.storage.iter_audit())),
        }
        # Each read gives what was written, then is scribbled on; every later read must not see
        # it (a read sharing containers with the store, or with an earlier read, fails).
        for name, read_token in token_reads.items():
            with self.subTest(read=name):
                found = read_token()
                self.assertEqual(found, kept_token)
                assert found is not None
                _scribble_token(found)
        for name, read_session in session_reads.items():
            with self.subTest(read=name):
                found_session = read_session()
                self.assertEqual(found_session, kept_session)
                assert found_session is not None
                _scribble_session(found_session)
        for name, read_event in event_reads.items():
            with self.subTest(read=name):
                found_event = read_event()
                self.assertEqual(found_event, kept_event)
                assert found_event is not None
                _scribble_event(found_event)
        self.assertEqual(self.storage.get_token(kept_token.token_id), kept_token)
        self.assertEqual(self.storage.get_session(kept_session.session_id), kept_session)
        self.assertEqual(self.storage.query_audit(), [kept_event])
        # The object given to update_token is the caller's too.
        updated = copy.deepcopy(kept_token)
        self.assertIs(self.storage.update_token(updated), True)
        _scribble_token(updated)
        self.assertEqual(self.storage.get_token(kept_token.token_id), kept_token)

    def test_imported_records_do_not_share_containers_with_the_caller(self) -> None:
        user = self.make_user_id()
        token = make_token(user, metadata={"deep": {"list": [1]}})
        session = make_session(user, data={"deep": {"x": {"y": 1}}})
        event = AuditEvent(action="login", outcome=True, metadata={"deep": {"list": [1]}})
        kept_token, kept_session, kept_event = copy.deepcopy((token, session, event))
        self.storage.import_tokens([token])
        self.storage.import_sessions([session])
        self.storage.import_audit([event])
        _scribble_token(token)
        _scribble_session(session)
        _scribble_event(event)
        self.assertEqual(self.storage.get_token(kept_token.token_id), kept_token)
        self.assertEqual(self.storage.get_session(kept_session.session_id), kept_session)
        self.assertEqual(self.storage.query_audit(), [kept_event])

    # Bad input ------------------------------------------------------------------------------

    def test_bad_ids_are_refused_and_change_nothing(self) -> None:
        for bad in ["", "x" * 256, "a\x00b", 42, None, b"bytes"]:
            with self.subTest(bad=bad):
                anything: Any = bad
                with self.assertRaises(InvalidInput):
                    self.storage.kv_set(anything, b"v")
                with self.assertRaises(InvalidInput):
                    self.storage.kv_get(anything)
                with self.assertRaises(InvalidInput):
                    self.storage.get_token(anything)
                with self.assertRaises(InvalidInput):
                    self.storage.get_session(anything)
                with self.assertRaises(InvalidInput):
                    self.storage.store_session(make_session("1", session_id=anything))
                self.assertEqual(self.storage.count_active_sessions(), 0)
                self.assertEqual(list(self.storage.iter_kv()), [])

    def test_kv_value_must_be_bytes(self) -> None:
        text: Any = "text"
        with self.assertRaises(InvalidInput):
            self.storage.kv_set("k", text)
        self.assertIsNone(self.storage.kv_get("k"))

    # The input contract: every backend gives the same answer to the same bad input ----------
    #
    # Each call below once gave different answers on different backends (the database refused
    # what the in-memory and cache stores took), so a record stored in one could fail to
    # migrate into another. AuthStorage now checks every argument once, with
    # django_authfw.validate, before any backend sees it; a refused call changes nothing. A
    # backend that overrides a public method instead of its engine method fails here.

    def test_kv_set_refuses_a_number_as_ttl(self) -> None:
        # Refused, not read as seconds: the contract's type is timedelta, and code passing 5
        # once worked on the cache backends only to fail once the project moved to the database.
        for ttl in [5, 2.5, True]:
            with self.subTest(ttl=ttl):
                number: Any = ttl
                with self.assertRaisesRegex(InvalidInput, "timedelta"):
                    self.storage.kv_set("k", b"v", number)
                with self.assertRaisesRegex(InvalidInput, "timedelta"):
                    self.storage.kv_incr("n", number)
                self.assertIsNone(self.storage.kv_get("k"))
                self.assertIsNone(self.storage.kv_get("n"))

    def test_async_kv_set_refuses_a_number_as_ttl(self) -> None:
        number: Any = 5
        with self.assertRaisesRegex(InvalidInput, "timedelta"):
            async_to_sync(self.storage.akv_set)("k", b"v", number)
        self.assertIsNone(self.storage.kv_get("k"))

    def test_kv_set_refuses_a_ttl_already_over_and_keeps_the_entry(self) -> None:
        for ttl in [timedelta(seconds=-5), timedelta(0)]:
            with self.subTest(ttl=ttl):
                self.storage.kv_set("k", b"before")
                with self.assertRaisesRegex(InvalidInput, "positive timedelta"):
                    self.storage.kv_set("k", b"after", ttl)
                with self.assertRaisesRegex(InvalidInput, "positive timedelta"):
                    self.storage.kv_incr("n", ttl)
                self.assertEqual(self.storage.kv_get("k"), b"before")
                self.assertIsNone(self.storage.kv_get("n"))

    def test_kv_set_refuses_a_value_that_is_not_bytes(self) -> None:
        for value in [bytearray(b"v"), memoryview(b"v"), "v"]:
            with self.subTest(value=type(value).__name__):
                not_bytes: Any = value
                with self.assertRaisesRegex(InvalidInput, "must be bytes"):
                    self.storage.kv_set("k", not_bytes)
                with self.assertRaisesRegex(InvalidInput, "must be bytes"):
                    self.storage.import_kv([KVEntry(key="k", value=not_bytes)])
                self.assertIsNone(self.storage.kv_get("k"))

    def test_session_with_a_malformed_address_is_refused(self) -> None:
        session = SessionData(session_id="s1", user_id=self.make_user_id(), ip_address="not-an-ip")
        with self.assertRaisesRegex(InvalidInput, "ip_address"):
            self.storage.store_session(session)
        with self.assertRaisesRegex(InvalidInput, "ip_address"):
            self.storage.import_sessions([session])
        self.assertIsNone(self.storage.get_session("s1"))

    def test_session_address_is_stored_in_canonical_form(self) -> None:
        # PostgreSQL's inet returns the canonical spelling; every backend stores that one.
        session = SessionData(
            session_id="s1", user_id=self.make_user_id(), ip_address="2001:DB8::01"
        )
        self.storage.store_session(session)
        stored = self.storage.get_session("s1")
        assert stored is not None
        self.assertEqual(stored.ip_address, "2001:db8::1")

    def test_audit_event_with_a_malformed_address_is_refused(self) -> None:
        with self.assertRaisesRegex(InvalidInput, "ip_address"):
            self.storage.append_audit(
                AuditEvent(action="login", outcome=True, ip_address="999.1.1.1")
            )
        self.assertEqual(self.storage.count_audit(), 0)

    def test_kv_incr_refuses_a_value_that_is_not_a_canonical_integer(self) -> None:
        for stored in [b"03", b" 3", b"+3", b"3 ", b"-0", b"1.0", b"three"]:
            with self.subTest(stored=stored):
                self.storage.kv_set("n", stored)
                with self.assertRaisesRegex(InvalidInput, "not an integer counter"):
                    self.storage.kv_incr("n")
                self.assertEqual(self.storage.kv_get("n"), stored)

    def test_kv_incr_counts_on_from_a_canonical_integer(self) -> None:
        for stored, result in [(b"0", 1), (b"41", 42), (b"-3", -2)]:
            with self.subTest(stored=stored):
                self.storage.kv_set("n", stored)
                self.assertEqual(self.storage.kv_incr("n"), result)
                self.assertEqual(self.storage.kv_get("n"), str(result).encode())

    def test_query_audit_refuses_an_action_longer_than_any_event_holds(self) -> None:
        with self.assertRaisesRegex(InvalidInput, "action"):
            self.storage.query_audit(action="x" * 200)
        with self.assertRaisesRegex(InvalidInput, "action"):
            self.storage.count_audit(action="x" * 101)
        self.assertEqual(self.storage.query_audit(action="x" * 100), [])
        self.assertEqual(self.storage.count_audit(action="x" * 100), 0)

    def test_audit_event_with_an_action_longer_than_100_is_refused(self) -> None:
        with self.assertRaisesRegex(InvalidInput, "action"):
            self.storage.append_audit(AuditEvent(action="x" * 101, outcome=True))
        self.assertEqual(self.storage.count_audit(), 0)

    def test_token_with_a_raw_secret_for_a_digest_is_refused(self) -> None:
        token = make_token(self.make_user_id(), access_digest="afw_at_raw-secret")
        with self.assertRaisesRegex(InvalidInput, "digest"):
            self.storage.store_token(token)
        self.assertIsNone(self.storage.get_token(token.token_id))

    def test_lookup_by_a_value_that_cannot_be_a_digest_gives_none(self) -> None:
        self.assertIsNone(self.storage.get_token_by_access(""))
        self.assertIsNone(self.storage.get_token_by_refresh("not a digest"))
        nothing: Any = None
        with self.assertRaises(InvalidInput):
            self.storage.get_token_by_access(nothing)

    def test_touch_session_refuses_a_naive_time(self) -> None:
        self.storage.store_session(SessionData(session_id="s1", user_id=self.make_user_id()))
        with self.assertRaisesRegex(InvalidInput, "timezone-aware"):
            self.storage.touch_session("s1", at=utcnow().replace(tzinfo=None))

    # Async twins ----------------------------------------------------------------------------

    def test_async_twins(self) -> None:
        user = self.make_user_id()
        token = make_token(user)
        storage = self.storage

        async def scenario() -> None:
            await storage.astore_token(token)
            self.assertEqual(await storage.aget_token_by_access(token.access_digest), token)
            self.assertEqual(await storage.alist_user_tokens(user), [token])
            self.assertIs(await storage.arevoke_token(token.token_id, at=utcnow()), True)
            await storage.akv_set("k", b"v", ttl=timedelta(minutes=1))
            self.assertEqual(await storage.akv_get("k"), b"v")
            session = make_session(user)
            await storage.astore_session(session)
            self.assertEqual(await storage.aget_session(session.session_id), session)
            await storage.aappend_audit(AuditEvent(action="login", outcome=False))
            self.assertEqual(await storage.acount_audit(outcome=False), 1)
            batches = [batch async for batch in storage.aiter_tokens(batch_size=10)]
            self.assertEqual([t.token_id for b in batches for t in b], [token.token_id])
            self.assertEqual((await storage.astatistics())["total_tokens"], 1)

        async_to_sync(scenario)()


# Helpers of the copy tests -------------------------------------------------------------------


def _flat(batches: Iterator[list[Any]]) -> list[Any]:
    return [item for batch in batches for item in batch]


def _only(items: list[Any]) -> Any:
    """The one record of a list (None if there is not exactly one: the comparison then fails)."""
    return items[0] if len(items) == 1 else None


def _scribble_token(token: AuthToken) -> None:
    """Tokens are immutable, down to their lists and dicts (stores may share them without
    copying): every change is refused."""
    changes: list[Callable[[], object]] = [
        lambda: token.permissions.append("admin"),
        lambda: token.roles.append("root"),
        lambda: token.metadata["deep"]["list"].append(2),
        lambda: token.metadata.update(added=True),
        lambda: setattr(token, "revoked_at", utcnow()),
    ]
    for change in changes:
        try:
            change()
        except (TypeError, dataclasses.FrozenInstanceError):
            continue
        raise AssertionError("a token record (and every list and dict in it) must be immutable")


def _scribble_session(session: SessionData) -> None:
    session.data.setdefault("cart", []).append(3)
    session.data["deep"]["x"]["y"] = 2
    session.data["added"] = True


def _scribble_event(event: AuditEvent) -> None:
    event.metadata["deep"]["list"].append(2)
    event.metadata["added"] = True
