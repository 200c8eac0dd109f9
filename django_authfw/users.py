"""Finding users: by username or instance, by the id records carry, and their grants.

A method of the framework that names a user takes the username (the value of the user model's
``USERNAME_FIELD``) or a user instance. Records carry ``user_id``, ``str(user.pk)``.

Every query on the user tables runs inside :func:`database_errors`, so a user database that
cannot be reached raises :class:`~django_authfw.exceptions.StorageUnavailable` (a 503 at the HTTP
surfaces), like the storages do, never the driver's raw ``OperationalError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import router

from .exceptions import InvalidInput
from .storage.database.errors import database_errors
from .storage.database.fast_sql import find_instance
from .tokens import check_id

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

_P = ParamSpec("_P")
_R = TypeVar("_R")


def user_model() -> type[AbstractBaseUser]:
    return cast("type[AbstractBaseUser]", get_user_model())


def _manager() -> Any:
    # _default_manager, as ModelBackend uses: custom user models name their manager freely.
    return user_model()._default_manager


def _in_connection_thread(function: Callable[_P, _R]) -> Callable[_P, Awaitable[_R]]:
    # The whole lookup runs in the thread that owns the ORM's connection (as Django's own async
    # ORM methods do, one hop each), so that database_errors can close that connection if an
    # error left it unusable; closing from the event loop's thread would reach another one.
    return sync_to_async(function)


def _reading() -> AbstractContextManager[None]:
    """Translate database errors of a read on the user model's database."""
    return database_errors(router.db_for_read(user_model()))


def _reading_of(user: AbstractBaseUser) -> AbstractContextManager[None]:
    """Translate database errors of queries about ``user`` (its permissions and groups)."""
    return database_errors(user._state.db or router.db_for_read(user_model()))


def user_id_of(user: AbstractBaseUser) -> str:
    """The id records carry for ``user``: its primary key as a string."""
    if user.pk is None:
        raise InvalidInput("The user has not been saved yet; save it before issuing tokens.")
    return record_id_of(user)


def record_id_of(user: AbstractBaseUser) -> str:
    """``str(user.pk)`` in its one canonical spelling: the key as its field reads it back
    (``"07"`` assigned to an integer key is ``"7"``, a UUID given as hex is dashed), since the
    stores other than the database index a user's records by this exact string."""
    pk = user.pk
    # The user model's key field, not type(user)'s: request.user is often a lazy wrapper.
    field = user_model()._meta.pk
    if field is not None:
        # A key that cannot be read back is left as it is: no user has it.
        with suppress(ValidationError, ValueError, TypeError):
            pk = field.to_python(pk)
    return str(pk)


def can_authenticate(user: AbstractBaseUser) -> bool:
    """Whether the user may log in (``is_active``; models without it are allowed, as Django)."""
    return bool(getattr(user, "is_active", True))


def get_by_username(username: str) -> AbstractBaseUser | None:
    """The user whose ``USERNAME_FIELD`` is ``username``, or None."""
    try:
        with _reading():
            return cast("AbstractBaseUser", _manager().get_by_natural_key(username))
    except user_model().DoesNotExist:
        return None


async def aget_by_username(username: str) -> AbstractBaseUser | None:
    """Async twin of :func:`get_by_username`."""
    return await _in_connection_thread(get_by_username)(username)


def _is_instance(user: object) -> bool:
    return isinstance(user, user_model())


def _unknown(username: str) -> InvalidInput:
    return InvalidInput(f"No user with username {username!r}; pass an existing username or user.")


def resolve_user(user: object) -> AbstractBaseUser:
    """Return the user named by a username or given as an instance; InvalidInput otherwise."""
    if _is_instance(user):
        return cast("AbstractBaseUser", user)
    username = check_id(user, "username")
    found = get_by_username(username)
    if found is None:
        raise _unknown(username)
    return found


async def aresolve_user(user: object) -> AbstractBaseUser:
    """Async twin of :func:`resolve_user`."""
    if _is_instance(user):
        return cast("AbstractBaseUser", user)
    username = check_id(user, "username")
    found = await aget_by_username(username)
    if found is None:
        raise _unknown(username)
    return found


def resolve_user_id(user: object) -> str:
    """The record id of a user given by username or instance (an instance costs no query)."""
    if _is_instance(user):
        return user_id_of(cast("AbstractBaseUser", user))
    return user_id_of(resolve_user(user))


async def aresolve_user_id(user: object) -> str:
    """Async twin of :func:`resolve_user_id`."""
    if _is_instance(user):
        return user_id_of(cast("AbstractBaseUser", user))
    return user_id_of(await aresolve_user(user))


def load_active_user(user_id: str) -> AbstractBaseUser | None:
    """The user with this record id (``str(user.pk)`` exactly) if it still exists and may log
    in, else None.

    One SELECT by primary key through the default manager, compiled once per connection (the
    lookup of every request whose token's storage does not read the user with the token).
    """
    model = user_model()
    pk_field = model._meta.pk
    assert pk_field is not None
    try:
        pk = pk_field.to_python(user_id)
    except (ValueError, TypeError, ValidationError):
        # A record id that cannot be a primary key of this model (e.g. after a model swap).
        return None
    if str(pk) != user_id:
        # Another spelling of a key ("01" for 1, an upper-case UUID: an import's). The signal
        # receivers end a user's tokens by str(user.pk), so such a token would outlive a
        # password change or deactivation: it names no user.
        return None
    db = router.db_for_read(model)
    with database_errors(db):
        user = find_instance(db, model, pk)
    if user is None or not can_authenticate(user):
        return None
    return cast("AbstractBaseUser", user)


async def aload_active_user(user_id: str) -> AbstractBaseUser | None:
    """Async twin of :func:`load_active_user`."""
    return await _in_connection_thread(load_active_user)(user_id)


def unchanged_since_check(user: AbstractBaseUser) -> bool:
    """Whether the user's row still holds the password hash (and ``is_active``) of ``user``.

    Read from the database writes go to, after a login stored its token: a password change or
    deactivation committed while the password was being checked is seen here (one committed
    later is caught by the signal receivers' second pass).
    """
    model = type(user)
    fields = ["password", *(["is_active"] if hasattr(user, "is_active") else [])]
    with _reading_of(user):
        row = (
            model._base_manager.using(router.db_for_write(model, instance=user))
            .filter(pk=user.pk)
            .values(*fields)
            .first()
        )
    return row is not None and row["password"] == user.password and bool(row.get("is_active", True))


async def aunchanged_since_check(user: AbstractBaseUser) -> bool:
    """Async twin of :func:`unchanged_since_check`."""
    return await _in_connection_thread(unchanged_since_check)(user)


def grants_of(user: AbstractBaseUser) -> tuple[list[str], list[str]]:
    """Sorted permission names (``app_label.codename``) and sorted group names of ``user``.

    User models without ``PermissionsMixin`` have neither: both lists are empty.
    """
    get_all = getattr(user, "get_all_permissions", None)
    groups = getattr(user, "groups", None)
    with _reading_of(user):
        permissions = sorted(get_all()) if get_all is not None else []
        roles = sorted(groups.values_list("name", flat=True)) if groups is not None else []
    return permissions, roles


async def agrants_of(user: AbstractBaseUser) -> tuple[list[str], list[str]]:
    """Async twin of :func:`grants_of` (permissions and groups in one thread hop)."""
    return await _in_connection_thread(grants_of)(user)
