"""Bulk imports for DatabaseStorage (migration, restore): upserts in one transaction.

Callers pass validated field dicts (see :mod:`.database_convert`); each function writes all of
them or, on any error, nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Model

from .database_errors import MissingUsers
from .database_queries import concrete_field, upsert, user_foreign_key

# Rows per IN (...) list: within the parameter limit of every database Django supports.
_IN_CHUNK = 500


def check_users_exist(model: type[Model], db: str, user_pks: set[Any], kind: str) -> None:
    """Raise :class:`MissingUsers` unless every key in ``user_pks`` is a user in database ``db``.

    ``model``'s ``user`` foreign key gives the user model and the key column. The base manager
    is used, so a custom default manager that hides some users does not hide them here.
    """
    field = user_foreign_key(model)
    user_model = field.related_model
    assert isinstance(user_model, type)  # a ForeignKey's related model is resolved by now
    target = field.target_field.attname
    found: set[Any] = set()
    pks = list(user_pks)
    for start in range(0, len(pks), _IN_CHUNK):
        found.update(
            user_model._base_manager.using(db)
            .filter(**{f"{target}__in": pks[start : start + _IN_CHUNK]})
            .values_list(target, flat=True)
        )
    missing = sorted(str(pk) for pk in user_pks - found)
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise MissingUsers(
            f"Cannot import {kind}: {len(missing)} user id(s) do not exist in database {db!r} "
            f"({shown}). Create or migrate those users first, or leave their {kind} out; "
            "nothing was imported.",
            missing,
        )


def import_rows(db: str, model: type[Model], rows: list[dict[str, Any]], kind: str) -> int:
    """Upsert ``rows`` (field dicts keyed by field name or attname) by primary key.

    Rows of a model with a ``user`` foreign key are checked with :func:`check_users_exist`
    first. Returns how many rows were written.
    """
    if not rows:
        return 0
    pk_name = model._meta.pk.name
    update = [concrete_field(model, name).name for name in rows[0] if name != pk_name]
    with transaction.atomic(using=db):
        if any(field.name == "user" for field in model._meta.concrete_fields):
            check_users_exist(model, db, {row["user_id"] for row in rows}, kind)
        upsert(db, model, [model(**row) for row in rows], update)
    return len(rows)


def import_new_events(db: str, model: type[Model], rows_by_event_id: dict[str, Any]) -> int:
    """Insert the audit rows whose ``event_id`` is not stored yet; return how many."""
    new = dict(rows_by_event_id)
    if not new:
        return 0
    manager = model._default_manager.db_manager(db)
    ids = list(new)
    with transaction.atomic(using=db):
        for start in range(0, len(ids), _IN_CHUNK):
            known = (
                manager.filter(event_id__in=ids[start : start + _IN_CHUNK])
                .order_by()
                .values_list("event_id", flat=True)
            )
            for event_id in known:
                del new[event_id]
        # Oldest first, so ids grow with time as they do for appended events.
        rows = sorted(new.values(), key=lambda row: row["created_at"])
        # ignore_conflicts: an event imported concurrently by another process is not an error.
        manager.bulk_create([model(**row) for row in rows], ignore_conflicts=True)
    return len(rows)
