"""Signal receivers: a user who is deleted, deactivated or changes password loses all access.

Connected (in ``AppConfig.ready``) to ``pre_save``, ``post_save`` and ``pre_delete`` of
``AUTH_USER_MODEL``. The ending runs *before* the database write on purpose: if a storage is
down, the receiver raises :class:`~django_authfw.exceptions.StorageUnavailable` and the save or
delete does not happen, rather than leaving a deleted or deactivated user with live tokens.
Until the save commits, a login elsewhere still reads the old row and may be issued a token, so
a second pass runs once the change is committed (``transaction.on_commit``); it is audited only
if it ended something.

What counts as a password change: any save whose hash differs from the one in the database
(``set_password``, ``set_unusable_password``, a hash assigned directly, with or without
``update_fields``), except a hash upgrade: the save that re-hashes the *same* password after it
was verified against the stored hash, made by this app's login or by Django's synchronous
``AbstractBaseUser.check_password``. An upgrade is recognised only by where the save comes from
(see :func:`_verified_hash`) and only when the verified hash is the stored one; anything else,
including the upgrade of Django's async ``acheck_password`` (whose save runs in another thread
and cannot be traced to it), ends the user's tokens: failing closed costs one login.

Like Django's own signals, ``QuerySet.update()`` (and so ``bulk_update()``) bypasses these
receivers: deactivate users or change passwords through ``save()`` (the admin does), or call
``AuthFramework.revoke_user_tokens`` and ``end_user_sessions`` yourself after a bulk update.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save, pre_delete, pre_save

from . import actions
from .passwords import rehash_in_progress
from .users import record_id_of

if TYPE_CHECKING:
    from types import FrameType

    from django.contrib.auth.base_user import AbstractBaseUser
    from django.db.models import Model


def _concrete(model: type[Model], name: str) -> bool:
    try:
        field = model._meta.get_field(name)
    except Exception:
        return False
    return bool(getattr(field, "concrete", False))


# Django's synchronous hash-upgrade path: AbstractBaseUser.check_password defines ``setter``,
# which hashers.check_password(password, encoded, setter) calls once the password matched
# ``encoded``; the setter then saves with update_fields=["password"].
_DJANGO_SETTER = (
    "django.contrib.auth.base_user",
    "AbstractBaseUser.check_password.<locals>.setter",
)
_DJANGO_CHECK = ("django.contrib.auth.hashers", "check_password")
_MAX_FRAMES = 40
# Set on an instance whose save ended access (pre_save) until post_save reads it.
_ENDED = "_authfw_access_ended"


def _is(frame: FrameType, where: tuple[str, str]) -> bool:
    return (frame.f_globals.get("__name__"), frame.f_code.co_qualname) == where


def _verified_hash(instance: AbstractBaseUser) -> str | None:
    """The hash the new one was verified against, if this save is a known hash upgrade.

    Our own login marks its upgrade save (``passwords.rehash_in_progress``). Django's leaves no
    mark, so the stack is read: the save must run inside Django's ``setter`` for this very
    instance, called by ``hashers.check_password``, whose ``encoded`` is the verified hash. Any
    other shape (another Django version, a wrapper) returns None: a change, which fails closed.
    """
    ours = rehash_in_progress(instance)
    if ours is not None:
        return ours
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        if _is(frame, _DJANGO_SETTER) and frame.f_locals.get("self") is instance:
            caller = frame.f_back
            if caller is None or not _is(caller, _DJANGO_CHECK):
                return None
            encoded = caller.f_locals.get("encoded")
            return encoded if isinstance(encoded, str) else None
        frame = frame.f_back
    return None


def _is_hash_upgrade(
    instance: AbstractBaseUser, stored: str, update_fields: Iterable[str] | None
) -> bool:
    """Whether this save only re-hashes the password already stored (not a change)."""
    if update_fields is None or set(update_fields) != {"password"}:
        return False
    verified = _verified_hash(instance)
    # The new hash came from a password that matched ``verified``; it is the same password
    # only if ``verified`` is what the database holds (not a hash assigned just before).
    return verified is not None and verified == stored


def user_pre_save(
    sender: type[AbstractBaseUser],
    instance: AbstractBaseUser,
    raw: bool = False,
    using: str | None = None,
    update_fields: Iterable[str] | None = None,
    **kwargs: Any,
) -> None:
    """End the user's tokens and sessions when this save deactivates them or changes password."""
    if instance.pk is None:
        return
    watched = [name for name in ("password", "is_active") if _concrete(sender, name)]
    if update_fields is not None:
        watched = [name for name in watched if name in set(update_fields)]
    if not watched:
        return
    stored = sender._base_manager.using(using).filter(pk=instance.pk).values(*watched).first()
    if stored is None:  # a new row with a preset primary key
        return
    deactivated = "is_active" in stored and bool(stored["is_active"]) and not instance.is_active
    password_changed = (
        "password" in stored
        and stored["password"] != instance.password
        and not _is_hash_upgrade(instance, stored["password"], update_fields)
    )
    if not (deactivated or password_changed):
        return
    from .access import end_user_access

    action = actions.USER_DEACTIVATED if deactivated else actions.PASSWORD_CHANGE
    metadata = {
        "reason": "deactivated" if deactivated else "password_change",
        "password_changed": password_changed,
    }
    end_user_access(record_id_of(instance), action=action, metadata=metadata)
    # A login that read the old row can still store a token after this pass and before the
    # change is committed (until then it sees the old password and is_active). user_post_save
    # runs a second pass once the change is committed.
    instance.__dict__[_ENDED] = (action, metadata)


def _end_again(user_id: str, action: str, metadata: dict[str, Any]) -> None:
    from .access import end_user_access

    end_user_access(
        user_id,
        action=action,
        metadata={**metadata, "after_commit": True},
        audit_nothing_done=False,
    )


def user_post_save(
    sender: type[AbstractBaseUser],
    instance: AbstractBaseUser,
    created: bool = False,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    """Once a change that ended access is committed, end what was issued in between.

    Best effort: a storage that fails now is logged (``robust``), since the row is written.
    """
    ended = instance.__dict__.pop(_ENDED, None)
    if ended is None or created:
        return
    transaction.on_commit(
        functools.partial(_end_again, record_id_of(instance), *ended), using=using, robust=True
    )


def user_pre_delete(
    sender: type[AbstractBaseUser], instance: AbstractBaseUser, **kwargs: Any
) -> None:
    """Delete the user's tokens and sessions in every storage before the user row goes."""
    if instance.pk is None:
        return
    from .access import end_user_access

    end_user_access(
        record_id_of(instance),
        action=actions.USER_DEACTIVATED,
        delete=True,
        metadata={"reason": "deleted"},
    )


# A lazy "app_label.Model" sender: connected once the user model is registered, whatever
# AUTH_USER_MODEL names.
pre_save.connect(
    user_pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="authfw_user_pre_save"
)
post_save.connect(
    user_post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="authfw_user_post_save"
)
pre_delete.connect(
    user_pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="authfw_user_pre_delete"
)
