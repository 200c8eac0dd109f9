"""``request.user`` for a request that presented a verified Bearer token.

Three shapes, cheapest first, chosen by :func:`user_for` (used by the middleware and the DRF
class):

* **read with the token**: a :class:`~django_authfw.storage.DatabaseStorage` whose tokens live
  in the user model's database reads the token and its user in one SELECT, so the user is
  there already (``AnonymousUser`` if it may not log in);
* **the token as snapshot** (``AUTHFW["USER_SNAPSHOT"] = True``, for the other storages): a
  :class:`TokenUser` answers ``pk`` (and the primary key's attribute, ``id``),
  ``is_authenticated``, ``is_anonymous`` and ``is_active`` from the verified token, with no
  query, and loads the user on first use of anything else;
* **lazy**: the user is loaded (one query) the first time ``request.user`` is used.

Why a live token is a snapshot of its user: the token carries the user's primary key
(``user_id``), and the signal receivers (:mod:`django_authfw.signals`) revoke or delete every
token of a user whose account is deactivated, deleted or given a new password, before the change
is saved. So while a token verifies, its user existed and was active, unless the change bypassed
``save()`` and ``delete()``: ``QuerySet.update()``, ``bulk_update()``, raw SQL, another program
writing the table, or tokens imported (``authfw_migrate``, ``authfw_restore``) for a user who is
inactive now. Then the snapshot's three answers stay those of the token until it is revoked or
expires (at most ``ACCESS_TOKEN_TTL``), while every other attribute is read fresh. That bound is
why the snapshot is opt-in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.utils.functional import LazyObject, SimpleLazyObject, empty

from .conf import conf
from .records import NOT_LOADED, AuthToken
from .users import user_model

UserOrAnonymous = AbstractBaseUser | AnonymousUser

if TYPE_CHECKING:  # generic in django-stubs only
    _LazyUser = LazyObject[UserOrAnonymous]
else:
    _LazyUser = LazyObject


def usable(user: AbstractBaseUser | None) -> UserOrAnonymous:
    """``user``, or ``AnonymousUser`` for None or an inactive user.

    As ``ModelBackend.user_can_authenticate``: a custom user model without ``is_active`` is
    active.
    """
    if user is None or not getattr(user, "is_active", True):
        return AnonymousUser()
    return user


class TokenUser(_LazyUser):
    """The user of a verified token: ``pk``, its attribute (``id``), ``is_authenticated``,
    ``is_anonymous`` and ``is_active`` come from the token; anything else loads the user
    (once), and from then on every answer is the loaded user's (``AnonymousUser`` if it is gone
    or inactive by now).

    Truthy without a load, as a user is. ``isinstance``, ``==`` and ``hash`` load the user.
    """

    # Plain attribute lookup: LazyObject's own __getattribute__ (which hides its proxy
    # methods from explicit lookups such as hasattr(user, "__len__")) costs a Python call on
    # every attribute read, a dozen per request here; a user model has those methods anyway.
    __getattribute__ = object.__getattribute__

    def __init__(self, pk: Any, pk_attname: str, load: Callable[[], UserOrAnonymous]) -> None:
        self.__dict__["_snapshot"] = (pk, pk_attname)
        self.__dict__["_load"] = load
        super().__init__()

    def _setup(self) -> None:
        self._wrapped = self.__dict__["_load"]()

    @property
    def loaded(self) -> bool:
        """Whether the user has been loaded (something beyond the snapshot was asked)."""
        return self._wrapped is not empty

    @property
    def pk(self) -> Any:
        if self._wrapped is empty:
            return self.__dict__["_snapshot"][0]
        return self._wrapped.pk

    @property
    def is_authenticated(self) -> bool:
        if self._wrapped is empty:
            return True
        return bool(self._wrapped.is_authenticated)

    @property
    def is_anonymous(self) -> bool:
        if self._wrapped is empty:
            return False
        return bool(self._wrapped.is_anonymous)

    @property
    def is_active(self) -> bool:
        if self._wrapped is empty:
            return True
        return bool(getattr(self._wrapped, "is_active", True))

    def __bool__(self) -> bool:
        return True

    # LazyObject's copies build ``type(self)()`` while nothing is loaded, which this __init__
    # refuses: a copy of an unloaded TokenUser is another with the same snapshot and loader.
    def __copy__(self) -> Any:
        if self._wrapped is empty:
            pk, pk_attname = self.__dict__["_snapshot"]
            return TokenUser(pk, pk_attname, self.__dict__["_load"])
        return copy.copy(self._wrapped)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        if self._wrapped is empty:
            pk, pk_attname = self.__dict__["_snapshot"]
            result = TokenUser(copy.deepcopy(pk, memo), pk_attname, self.__dict__["_load"])
            memo[id(self)] = result
            return result
        return copy.deepcopy(self._wrapped, memo)

    def __getattr__(self, name: str) -> Any:
        if self._wrapped is empty:
            pk, pk_attname = self.__dict__["_snapshot"]
            if name == pk_attname:
                return pk
            self._setup()
        return getattr(self._wrapped, name)


def snapshot(record: AuthToken, load: Callable[[], UserOrAnonymous]) -> TokenUser | None:
    """A :class:`TokenUser` for ``record``, or None if its ``user_id`` is not ``str(pk)`` of a
    primary key of the user model (then the caller loads the user)."""
    pk_field = user_model()._meta.pk
    assert pk_field is not None
    try:
        pk = pk_field.to_python(record.user_id)
    except (ValidationError, ValueError, TypeError):
        return None
    if str(pk) != record.user_id:
        # Another spelling of a key ("01" for 1, an upper-case UUID), from an import: the
        # receivers end a user's tokens by str(user.pk), so this one may outlive a change that
        # ends theirs. Only a loaded user may answer for it.
        return None
    return TokenUser(pk, pk_field.attname, load)


def user_for(
    record: AuthToken, user: Any, load: Callable[[], UserOrAnonymous]
) -> UserOrAnonymous | TokenUser | SimpleLazyObject[UserOrAnonymous]:
    """``request.user`` for a verified ``record``.

    ``user`` is what the verification read with the token: a user, None, or ``NOT_LOADED``;
    ``load`` loads the token's user (``usable`` already applied).
    """
    if user is not NOT_LOADED:
        return usable(user)
    if conf.USER_SNAPSHOT:
        found = snapshot(record, load)
        if found is not None:
            return found
    return SimpleLazyObject(load)
