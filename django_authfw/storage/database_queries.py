"""Query patterns DatabaseStorage uses on large tables: upserts, batched deletes, keyset pages.

Each keeps transactions short and avoids ``OFFSET``, so cleanup, migration and backup stay cheap
on tables with millions of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.db import connections, transaction
from django.db.models import Field, ForeignKey, Model, Q, QuerySet

T = TypeVar("T")


def concrete_field(model: type[Model], name: str) -> Field[Any, Any]:
    """The concrete field ``name`` (or attname, like ``user_id``) of ``model``."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field):
        raise TypeError(f"{model.__name__}.{name} is not a concrete field")
    return field


def user_foreign_key(model: type[Model]) -> ForeignKey[Any, Any]:
    """The ``user`` foreign key of a storage model (tokens, sessions)."""
    field = model._meta.get_field("user")
    if not isinstance(field, ForeignKey):
        raise TypeError(f"{model.__name__}.user is not a foreign key")
    return field


def column(model: type[Model], name: str) -> str:
    """Database column of field ``name``."""
    name_in_db = concrete_field(model, name).column
    if name_in_db is None:
        raise TypeError(f"{model.__name__}.{name} has no column")
    return name_in_db


def upsert(alias: str, model: type[Model], objs: Sequence[Model], update_fields: list[str]) -> None:
    """Insert ``objs``, or overwrite ``update_fields`` of rows with the same primary key.

    One ``INSERT ... ON CONFLICT (pk) DO UPDATE`` per batch where the database has it
    (PostgreSQL, SQLite); elsewhere ``update_or_create`` per row, in one transaction.
    """
    if not objs:
        return
    manager = model._default_manager.db_manager(alias)
    pk_name = model._meta.pk.name
    if connections[alias].features.supports_update_conflicts_with_target:
        manager.bulk_create(
            objs, update_conflicts=True, unique_fields=[pk_name], update_fields=update_fields
        )
        return
    # MySQL's ON DUPLICATE KEY would also fire on the unique digest columns and overwrite
    # another row, so it is not used.
    with transaction.atomic(using=alias):
        for obj in objs:
            defaults = {
                name: getattr(obj, concrete_field(model, name).attname) for name in update_fields
            }
            manager.update_or_create(pk=obj.pk, defaults=defaults)


def delete_in_batches(queryset: QuerySet[Any], batch_size: int) -> int:
    """Delete the rows of ``queryset`` ``batch_size`` at a time; return how many were deleted.

    Each round selects a batch of primary keys (the caller's filter should use an index) and
    deletes them in its own short transaction; the filter is applied again in the DELETE, so a
    row changed in between (a session touched and no longer expired) is kept.
    """
    alias = queryset.db
    max_params = connections[alias].features.max_query_params
    if max_params is not None:  # SQLite and Oracle cap the parameters of one statement
        batch_size = min(batch_size, max_params - 10)
    queryset = queryset.order_by()
    total = 0
    while True:
        pks = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not pks:
            return total
        deleted, _ = queryset.filter(pk__in=pks).delete()
        total += deleted
        if len(pks) < batch_size:
            return total


def iterate_by_pk(
    queryset: QuerySet[Any],
    columns: Sequence[str],
    convert: Callable[[tuple[Any, ...]], T],
    batch_size: int,
) -> Iterator[list[T]]:
    """Yield converted rows of ``queryset`` in primary-key order, ``batch_size`` per list.

    Keyset pagination (``WHERE pk > last``), not ``OFFSET``: every page is one indexed range
    scan, and no transaction stays open between pages.
    """
    pk_name = queryset.model._meta.pk.name
    ordered = queryset.order_by(pk_name)
    pk_index = list(columns).index(pk_name)
    last: Any = None
    while True:
        page = ordered if last is None else ordered.filter(pk__gt=last)
        rows = list(page.values_list(*columns)[:batch_size])
        if not rows:
            return
        yield [convert(row) for row in rows]
        if len(rows) < batch_size:
            return
        last = rows[-1][pk_index]


def iterate_by_time(
    queryset: QuerySet[Any],
    columns: Sequence[str],
    convert: Callable[[tuple[Any, ...]], T],
    batch_size: int,
    time_field: str = "created_at",
) -> Iterator[list[T]]:
    """Like :func:`iterate_by_pk`, oldest first: keyset on ``(time_field, pk)``."""
    pk_name = queryset.model._meta.pk.name
    ordered = queryset.order_by(time_field, pk_name)
    selected = (time_field, pk_name, *columns)
    last: tuple[datetime, Any] | None = None
    while True:
        if last is None:
            page = ordered
        else:
            moment, last_pk = last
            page = ordered.filter(
                Q(**{f"{time_field}__gt": moment}) | Q(**{time_field: moment, "pk__gt": last_pk})
            )
        rows = list(page.values_list(*selected)[:batch_size])
        if not rows:
            return
        yield [convert(row[2:]) for row in rows]
        if len(rows) < batch_size:
            return
        last = (rows[-1][0], rows[-1][1])
