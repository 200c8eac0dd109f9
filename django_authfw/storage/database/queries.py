"""The queries of DatabaseStorage on large tables: upserts, batched deletes, keyset pages, and
the bulk imports of migration and restore.

Each keeps transactions short and avoids ``OFFSET``, so cleanup, migration and backup stay cheap
on tables with millions of rows. Bulk imports take validated field dicts (see :mod:`.rows`) and
write all of them in one transaction or, on any error, nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db import connections, transaction
from django.db.models import Field, ForeignKey, Model, Q, QuerySet
from django.db.models.deletion import Collector

from .errors import MissingUsers

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Expiry:
    """The column that ends a row's life, and whether NULL there means "never"."""

    column: str
    nullable: bool = False

    def alive(self, now: datetime) -> Q:
        """Rows still alive at ``now``, a time already in the ORM's form (``to_db``)."""
        after = Q(**{f"{self.column}__gt": now})
        return Q(**{f"{self.column}__isnull": True}) | after if self.nullable else after


RETAINED = Expiry("retain_until")  # tokens: kept until the later of their two expiries
# Sessions and key-value entries end at expires_at; NULL there means they never expire.
EXPIRES = Expiry("expires_at", nullable=True)


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

    Each round deletes one batch in its own short transaction (autocommit), so no lock is held
    for long and live traffic goes on between rounds. The filter is applied again in the
    DELETE itself, so a row changed in between (a session touched and no longer expired) is
    kept. On PostgreSQL and SQLite a round is one statement,
    ``DELETE ... WHERE <filter> AND pk IN (SELECT pk ... WHERE <filter> LIMIT n)``: the keys
    never travel to Python and back. Elsewhere (MySQL refuses ``LIMIT`` in an ``IN``
    subquery) a round selects the keys, then deletes them; so does a model the ORM would not
    delete with one statement either (a project listens to its delete signals, or a model of
    its own has a cascading foreign key to it): the ORM's ``delete()`` sends the signals and
    follows the cascades, as before.
    """
    alias = queryset.db
    queryset = queryset.order_by()
    if connections[alias].vendor in ("postgresql", "sqlite") and Collector(
        using=alias, origin=None
    ).can_fast_delete(queryset):
        return _delete_by_subquery(queryset, batch_size)
    max_params = connections[alias].features.max_query_params
    if max_params is not None:  # SQLite and Oracle cap the parameters of one statement
        batch_size = min(batch_size, max_params - 10)
    total = 0
    while True:
        pks = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not pks:
            return total
        deleted, _ = queryset.filter(pk__in=pks).delete()
        total += deleted
        if len(pks) < batch_size:
            return total


def _delete_by_subquery(queryset: QuerySet[Any], batch_size: int) -> int:
    """:func:`delete_in_batches` as one statement per round (PostgreSQL, SQLite).

    The filter's SQL comes from the ORM (``WHERE`` of ``queryset``), so it is the same
    condition the other databases use; the statement is compiled once and run until a round
    picks fewer than ``batch_size`` rows.
    """
    model = queryset.model
    alias = queryset.db
    connection = connections[alias]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    pk = quote(model._meta.pk.column)
    select_sql, params = queryset.values_list("pk").query.sql_with_params()
    # select_sql is "SELECT <table>.<pk> FROM <table> WHERE <filter>"; its WHERE is reused.
    where = select_sql[select_sql.index(" WHERE ") + 7 :] if " WHERE " in select_sql else "1=1"
    if connection.vendor == "postgresql":
        # A round that deletes fewer rows than it picked is not the last: another clean-up
        # (a second host's cron job) or a writer may have taken or changed some of the picked
        # rows while this statement waited on their locks, and the table may still hold whole
        # batches of expired rows. So the statement also says how many it picked, and the
        # clean-up ends on a round that picked fewer than batch_size, as select-then-delete
        # does. (SQLite runs one writer at a time: there a round deletes what it picked.)
        sql = (  # names quoted by the backend, the filter compiled by the ORM with parameters
            f"WITH picked AS (SELECT {pk} FROM {table} WHERE {where} LIMIT %s), "  # noqa: S608
            f"gone AS (DELETE FROM {table} WHERE {where} AND {pk} IN (SELECT {pk} FROM picked) "
            f"RETURNING 1) SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM gone)"
        )
        args = [*params, batch_size, *params]
    else:
        sql = (  # names quoted by the backend, the filter compiled by the ORM with parameters
            f"DELETE FROM {table} WHERE {where} AND {pk} IN "  # noqa: S608
            f"(SELECT {pk} FROM {table} WHERE {where} LIMIT %s)"
        )
        args = [*params, *params, batch_size]
    total = 0
    while True:
        # One statement: its own transaction in autocommit, no BEGIN/COMMIT round trips.
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            if connection.vendor == "postgresql":
                picked, deleted = cursor.fetchone()
            else:
                picked = deleted = int(cursor.rowcount)
        total += int(deleted)
        if int(picked) < batch_size:
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
    # One statement cannot upsert a row twice (PostgreSQL: "ON CONFLICT DO UPDATE command
    # cannot affect row a second time"): of rows with the same key the last wins, as when
    # they are imported one by one.
    unique = list({row[pk_name]: row for row in rows}.values())
    with transaction.atomic(using=db):
        if any(field.name == "user" for field in model._meta.concrete_fields):
            check_users_exist(model, db, {row["user_id"] for row in unique}, kind)
        if connections[db].vendor in ("postgresql", "sqlite"):
            _upsert_rows(db, model, unique)
        else:
            upsert(db, model, [model(**row) for row in unique], update)
    return len(rows)


def _upsert_rows(db: str, model: type[Model], rows: list[dict[str, Any]]) -> None:
    """``INSERT ... VALUES (...), (...) ON CONFLICT (pk) DO UPDATE`` of ``rows`` (field dicts
    with the same keys), as many rows per statement as the database's parameter limit allows.

    What :func:`upsert` makes ``bulk_create`` write, without building a model instance per row
    or compiling the statement again for each batch: each value goes through its field's
    ``get_db_prep_save``, as the ORM sends it.
    """
    connection = connections[db]
    quote = connection.ops.quote_name
    names = list(rows[0])
    fields = [concrete_field(model, name) for name in names]
    columns = [quote(column(model, name)) for name in names]
    pk = quote(str(model._meta.pk.column))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != pk)
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    max_params = connection.features.max_query_params or 30_000
    per_statement = max(1, min(1000, max_params // len(columns)))
    prepare = [field.get_db_prep_save for field in fields]
    head = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) VALUES "  # noqa: S608
    tail = f" ON CONFLICT ({pk}) DO UPDATE SET {updates}"
    statements: dict[int, str] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            sql = statements.get(len(chunk))
            if sql is None:
                sql = statements[len(chunk)] = head + ", ".join([one] * len(chunk)) + tail
            params = [
                prep(row[name], connection)
                for row in chunk
                for name, prep in zip(names, prepare, strict=True)
            ]
            cursor.execute(sql, params)


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
