"""Signal receivers: a user who is deleted, deactivated or changes password loses all access.

Connected (in ``AppConfig.ready``) to ``pre_save`` and ``pre_delete`` of ``AUTH_USER_MODEL``.
They run *before* the database write on purpose: if a storage is down, the receiver raises
:class:`~django_authfw.exceptions.StorageUnavailable` and the save or delete does not happen,
rather than leaving a deleted or deactivated user with live tokens.

What counts as a password change: the stored hash differs from the one in the database, except
for the save Django's own ``check_password`` makes when it upgrades a hash to the current hasher
(``save(update_fields=["password"])`` with no raw password set), which is not a change of
password. Like Django's own signals, ``QuerySet.update()`` bypasses these receivers: deactivate
users through ``save()`` (the admin does), or call ``AuthFramework.revoke_user_tokens`` and
``end_user_sessions`` yourself after a bulk update.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models.signals import pre_delete, pre_save

from . import audit as actions

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.db.models import Model


def _concrete(model: type[Model], name: str) -> bool:
    try:
        field = model._meta.get_field(name)
    except Exception:
        return False
    return bool(getattr(field, "concrete", False))


def _is_hash_upgrade(instance: AbstractBaseUser, update_fields: Iterable[str] | None) -> bool:
    # AbstractBaseUser.check_password's setter: set_password, then _password = None (a hash
    # upgrade is "not a password change"), then save(update_fields=["password"]).
    return (
        update_fields is not None
        and set(update_fields) == {"password"}
        and getattr(instance, "_password", None) is None
    )


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
        and not _is_hash_upgrade(instance, update_fields)
    )
    if not (deactivated or password_changed):
        return
    from .framework import end_user_access

    end_user_access(
        str(instance.pk),
        action=actions.USER_DEACTIVATED if deactivated else actions.PASSWORD_CHANGE,
        metadata={
            "reason": "deactivated" if deactivated else "password_change",
            "password_changed": password_changed,
        },
    )


def user_pre_delete(
    sender: type[AbstractBaseUser], instance: AbstractBaseUser, **kwargs: Any
) -> None:
    """Delete the user's tokens and sessions in every storage before the user row goes."""
    if instance.pk is None:
        return
    from .framework import end_user_access

    end_user_access(
        str(instance.pk),
        action=actions.USER_DEACTIVATED,
        delete=True,
        metadata={"reason": "deleted"},
    )


# A lazy "app_label.Model" sender: connected once the user model is registered, whatever
# AUTH_USER_MODEL names.
pre_save.connect(
    user_pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="authfw_user_pre_save"
)
pre_delete.connect(
    user_pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="authfw_user_pre_delete"
)
