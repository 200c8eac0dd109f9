"""Password checks through Django's hashers, with equal work for unknown users.

Every check runs the hasher exactly once, whatever the outcome: for an existing user the
stored hash is verified; for an unknown user (or an unusable stored hash, which Django's
``verify_password`` handles) the default hasher hashes the attempt once, as
``ModelBackend.authenticate`` does. Timing then does not tell whether an account exists.

Async variants run the hashing in a worker thread (``thread_sensitive=False``) so that a slow
Argon2 run never blocks the event loop, and so that several hashes run in parallel.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.contrib.auth.hashers import make_password, verify_password
from django.db import router, transaction
from django.views.decorators.debug import sensitive_variables

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser


@sensitive_variables("password")
def _verify(password: str, encoded: str | None) -> tuple[bool, bool]:
    if encoded is None:
        # Unknown user: one run of the default hasher, the same work as a wrong password.
        make_password(password)
        return False, False
    correct, must_update = verify_password(password, encoded)
    return bool(correct), bool(must_update)


# Set only while _save_rehash saves: (id(user), the hash the password was verified against, the
# new hash). The signal receivers read it to tell this save from a change of password.
_REHASHING: ContextVar[tuple[int, str, str] | None] = ContextVar("authfw_rehashing", default=None)


def _save_rehash(user: AbstractBaseUser, verified: str, encoded: str) -> None:
    model = type(user)
    using = user._state.db or router.db_for_write(model)
    with transaction.atomic(using=using):
        # The row stays locked until the upgrade is saved: a password change made while the new
        # hash was computed (a slow hasher's run) wins, and one made now waits for this save and
        # then overwrites it; an upgrade never writes the old password back over a new one.
        current = (
            model._base_manager.using(using)
            .select_for_update()
            .filter(pk=user.pk)
            .values_list("password", flat=True)
            .first()
        )
        if current != verified:
            return
        user.password = encoded
        # As in AbstractBaseUser.check_password's setter: no raw password is kept on the
        # instance, so Django's password_changed() hooks do not run for an upgrade.
        user._password = None  # type: ignore[attr-defined]
        marker = _REHASHING.set((id(user), verified, encoded))
        try:
            user.save(update_fields=["password"])
        finally:
            _REHASHING.reset(marker)


def rehash_in_progress(user: AbstractBaseUser) -> str | None:
    """The hash that was verified, if ``user`` is being saved by this module's hash upgrade.

    The new hash was made from a password that matched that hash, so the save is a rehash of
    the same password, not a change; the receiver still compares it with the stored hash.
    """
    marker = _REHASHING.get()
    if marker is None or marker[0] != id(user) or marker[2] != user.password:
        return None
    return marker[1]


@sensitive_variables("password")
def check_user_password(user: AbstractBaseUser | None, password: str) -> bool:
    """Whether ``password`` is the user's; ``user=None`` costs the same hashing work.

    A correct password stored with an outdated hasher or work factor is re-hashed and saved,
    as Django's ``check_password`` does.
    """
    encoded = user.password if user is not None else None
    correct, must_update = _verify(password, encoded)
    if user is not None and encoded is not None and correct and must_update:
        _save_rehash(user, encoded, make_password(password))
    return correct


@sensitive_variables("password")
async def acheck_user_password(user: AbstractBaseUser | None, password: str) -> bool:
    """Async twin of :func:`check_user_password`; hashing runs off the event loop."""
    encoded = user.password if user is not None else None
    correct, must_update = await sync_to_async(_verify, thread_sensitive=False)(password, encoded)
    if user is not None and encoded is not None and correct and must_update:
        new_hash = await sync_to_async(make_password, thread_sensitive=False)(password)
        await sync_to_async(_save_rehash)(user, encoded, new_hash)
    return correct


@sensitive_variables("password")
async def ahash_password(password: str) -> str:
    """``make_password`` in a worker thread (the event loop never runs a hasher)."""
    return str(await sync_to_async(make_password, thread_sensitive=False)(password))
