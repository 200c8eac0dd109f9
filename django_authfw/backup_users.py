"""Users in backups: records name users by primary key, backups also by natural key.

A record carries ``user_id``, ``str(user.pk)`` of the database it came from. Primary keys are
not portable: user 2 of one database is, in general, somebody else in another (or in the same
one, after users were deleted and re-created). So a backup line of a token, session or audit
event also carries the user's natural key, the value of the user model's ``USERNAME_FIELD``,
and a restore finds the user by it (:class:`UserMap`), never by the id alone.

Users are read from the database the storage keeps them in: a ``DatabaseStorage`` with a
``using`` alias has its foreign keys to the user table of that database; any other storage (and
a ``DatabaseStorage`` without ``using``) sees the users Django's routers give for the user
model, as the framework does when it loads a user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db import router

from .storage.base import AuthStorage
from .storage.database.errors import database_errors
from .users import user_model

Pair = tuple[str, str | None]
"""A backed-up user: ``(user_id, username)``."""

Outcome = Literal["same", "remapped", "missing", "id_taken", "no_username"]
"""What a restore does with the user of one record:

* ``same``: the target has this username under the same id; the record is kept as it is;
* ``remapped``: the target has this username under another id; the record moves to that id;
* ``missing``: the target has no user with this username (nor, by this id, anyone);
* ``id_taken``: the target has no user with this username, and the backup's id belongs to
  somebody else there: the case that would hand a token to the wrong person;
* ``no_username``: the backup does not know the user's username (the user no longer existed
  when the backup was written).
"""


def username_field() -> str:
    """The name of the user model's natural key field (``USERNAME_FIELD``)."""
    return str(user_model().USERNAME_FIELD)  # type: ignore[attr-defined]


def user_model_label() -> str:
    return str(user_model()._meta.label_lower)


def user_database(storage: AuthStorage) -> str:
    """The database alias holding the users ``storage`` refers to (see the module docstring)."""
    using = getattr(storage, "using", None)
    if isinstance(using, str) and using:
        return using
    return str(router.db_for_read(user_model()))


def _manager(db: str) -> Any:
    return user_model()._default_manager.db_manager(db)


def _as_pks(user_ids: Iterable[str]) -> list[Any]:
    """The primary keys named by ``user_ids``; ids that cannot be one of this model are left out."""
    pk_field = user_model()._meta.pk
    assert pk_field is not None
    pks = []
    for user_id in user_ids:
        try:
            pks.append(pk_field.to_python(user_id))
        except (ValidationError, ValueError, TypeError):
            continue
    return pks


# Below every database's limit of parameters per query (SQLite before 3.32: 999).
CHUNK = 500


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def usernames_by_id(db: str, user_ids: Iterable[str]) -> dict[str, str]:
    """``{str(pk): username}`` for the users of ``user_ids`` that exist in ``db`` (one query
    per :data:`CHUNK` ids)."""
    found: dict[str, str] = {}
    for chunk in _chunks(_as_pks(set(user_ids))):
        with database_errors(db):
            rows = _manager(db).filter(pk__in=chunk).values_list("pk", username_field())
            found.update((str(pk), str(name)) for pk, name in rows)
    return found


def ids_by_username(db: str, usernames: Iterable[str]) -> dict[str, str]:
    """``{username: str(pk)}`` for the ``usernames`` that exist in ``db`` (one query per
    :data:`CHUNK` names)."""
    field = username_field()
    found: dict[str, str] = {}
    for chunk in _chunks(list(set(usernames))):
        with database_errors(db):
            rows = _manager(db).filter(**{f"{field}__in": chunk}).values_list(field, "pk")
            found.update((str(name), str(pk)) for name, pk in rows)
    return found


@dataclass(frozen=True, slots=True)
class Mapping:
    """Where the records of one backed-up user go."""

    outcome: Outcome
    target_user_id: str | None
    """The id the records get in the target (None: they cannot be given to anyone)."""
    holder_of_id: str | None = None
    """For ``id_taken``: the username that holds the backup's id in the target."""


class UserMap:
    """Maps ``(user_id, username)`` pairs of a backup to users of the target database.

    :meth:`resolve` looks up a whole batch in at most two queries per :data:`CHUNK` users;
    nothing is cached across batches, so memory does not grow with the number of users.
    """

    def __init__(self, db: str) -> None:
        self.db = db

    def resolve(
        self, pairs: Iterable[tuple[str, str | None]]
    ) -> dict[tuple[str, str | None], Mapping]:
        """The :class:`Mapping` of every distinct ``(backup user_id, username)`` pair."""
        distinct = set(pairs)
        found = ids_by_username(self.db, (name for _id, name in distinct if name is not None))
        # Only for the users not found by name: whether their old id is somebody else's here.
        unknown_ids = [user_id for user_id, name in distinct if name is None or name not in found]
        holders = usernames_by_id(self.db, unknown_ids)
        result: dict[Pair, Mapping] = {}
        for user_id, name in distinct:
            if name is None:
                result[(user_id, name)] = Mapping("no_username", None, holders.get(user_id))
            elif name in found:
                target = found[name]
                result[(user_id, name)] = Mapping(
                    "same" if target == user_id else "remapped", target
                )
            elif user_id in holders:
                result[(user_id, name)] = Mapping("id_taken", None, holders[user_id])
            else:
                result[(user_id, name)] = Mapping("missing", None)
        return result
