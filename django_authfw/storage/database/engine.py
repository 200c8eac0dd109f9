"""DatabaseStorage: the storage contract on Django models (PostgreSQL, SQLite, ...).

Reads go to ``router.db_for_read`` and writes to ``router.db_for_write`` of each model, unless the
``using`` option names one database alias for everything::

    AUTHFW = {"STORAGES": {"default": {
        "BACKEND": "django_authfw.storage.DatabaseStorage",
        "OPTIONS": {"using": "auth_db"},
    }}}

Models (:mod:`.models`) are imported inside the methods (as
``django.contrib.sessions.backends.db`` does), so this module imports before the app registry
is ready. Reads use ``values_list`` and build records
directly: no model instances, no user loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import connections, router, transaction
from django.db.models import Count, Model, Q, QuerySet
from django.db.models.manager import BaseManager

from ...exceptions import StorageError
from ...records import (
    NOT_LOADED,
    AuditEvent,
    AuthToken,
    KVEntry,
    SessionData,
    StorageStatistics,
    utcnow,
)
from ..base import AuthStorage, _in_thread
from . import fast_sql, json_rows
from . import rows as convert
from .counters import incr_locked, incr_upsert, supports_upsert
from .errors import MissingUsers, database_errors
from .queries import (
    EXPIRES,
    RETAINED,
    Expiry,
    concrete_field,
    delete_in_batches,
    import_new_events,
    import_rows,
    iterate_by_pk,
    iterate_by_time,
    upsert,
)

if TYPE_CHECKING:
    from .models import AuditLog, Session, Token
    from .models import KVEntry as KVRow

__all__ = ["DatabaseStorage", "MissingUsers"]

_BYTES_PER_MB = 1024 * 1024


def _token_model() -> type[Token]:
    from .models import Token

    return Token


def _session_model() -> type[Session]:
    from .models import Session

    return Session


def _kv_model() -> type[KVRow]:
    from .models import KVEntry

    return KVEntry


def _audit_model() -> type[AuditLog]:
    from .models import AuditLog

    return AuditLog


def _plain_manager(model: type[Model]) -> bool:
    """Whether ``model``'s default manager returns every row (Django's ``UserManager`` does).

    The join reads the user through the token table, which no user manager filters; a manager
    that may hide users (a soft-delete model's ``get_queryset().filter(deleted=False)``) is
    honoured by loading the user through it instead (``load_active_user``), as
    ``ModelBackend.get_user`` does.
    """
    manager = model._default_manager
    return (
        type(manager).get_queryset is BaseManager.get_queryset
        and getattr(manager, "_queryset_class", None) is QuerySet
    )


class DatabaseStorage(AuthStorage):
    """Tokens, sessions, key-value entries and the audit log in the ``django_authfw`` tables.

    Options:

    * ``using``: a ``DATABASES`` alias that receives every query (default: ask the database
      routers, which without routers means ``"default"``);
    * ``fast_sql`` (default True): run the hot statements (token lookup, insert and
      revocation; session and key-value reads) as SQL written once, on PostgreSQL on a
      server-binding cursor (:mod:`.fast_sql`, which lists what that bypasses); False runs
      them through the ORM.
    * ``prepare`` (default True; PostgreSQL with psycopg 3 and ``fast_sql``): keep those
      statements prepared on the server, once per connection, whatever the alias's
      ``prepare_threshold`` (unless its ``OPTIONS`` set it, ``None`` included, which is
      respected). Set False behind a pooler that cannot keep prepared statements (PgBouncer
      before 1.21 in transaction mode).
    """

    def __init__(
        self,
        *,
        using: str | None = None,
        fast_sql: bool = True,
        prepare: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(fast_sql, bool):
            raise TypeError(f"DatabaseStorage 'fast_sql' must be True or False, not {fast_sql!r}.")
        if not isinstance(prepare, bool):
            raise TypeError(f"DatabaseStorage 'prepare' must be True or False, not {prepare!r}.")
        self.fast_sql = fast_sql
        self.prepare = prepare
        if using is not None:
            if not isinstance(using, str) or not using:
                raise TypeError(f"DatabaseStorage 'using' must be a database alias, not {using!r}.")
            if using not in connections:
                known = ", ".join(sorted(connections)) or "none"
                raise StorageError(
                    f"DatabaseStorage(using={using!r}): no such alias in DATABASES "
                    f"(configured: {known})."
                )
        self.using = using

    # Where queries go -----------------------------------------------------------------------

    def _read_db(self, model: type[Model]) -> str:
        return self.using or router.db_for_read(model)

    def _write_db(self, model: type[Model]) -> str:
        return self.using or router.db_for_write(model)

    @staticmethod
    def _models() -> tuple[type[Model], ...]:
        return (_token_model(), _session_model(), _kv_model(), _audit_model())

    # Tokens ---------------------------------------------------------------------------------

    def _store_token(self, token: AuthToken) -> None:
        """Insert a newly issued token (its ``token_id`` and digests must be new)."""
        model = _token_model()
        fields = convert.token_fields(model, token)
        db = self._write_db(model)
        with database_errors(db):
            if self.fast_sql:
                fast_sql.insert_row(db, model, fields, prepare=self.prepare)
            else:
                model.objects.using(db).create(**fields)

    def _find_token(self, column: str, value: str) -> AuthToken | None:
        """The token whose unique ``column`` is ``value``, unless past ``retain_until``.

        One SELECT on the column's unique index.
        """
        row = self._find_unexpired(_token_model(), column, value, convert.TOKEN_COLUMNS, RETAINED)
        return None if row is None else convert.token_from_row(row)

    def _find_unexpired(
        self,
        model: type[Model],
        column: str,
        value: str,
        columns: tuple[str, ...],
        expiry: Expiry,
    ) -> tuple[Any, ...] | None:
        """``columns`` of the row whose unique ``column`` is ``value``, unless ``expiry`` passed."""
        db = self._read_db(model)
        now = utcnow()
        with database_errors(db):
            if self.fast_sql:
                row = fast_sql.find_unexpired(
                    db, model, column, value, columns, now, expiry, prepare=self.prepare
                )
                return None if row is None else tuple(row)
            rows = list(
                model._default_manager.using(db)
                .filter(Q(**{column: value}), expiry.alive(convert.to_db(now)))
                .values_list(*columns)[:1]
            )
        return rows[0] if rows else None

    def _get_token(self, token_id: str) -> AuthToken | None:
        return self._find_token("token_id", token_id)

    def _get_tokens(self, token_ids: Iterable[str]) -> dict[str, AuthToken]:
        """Many tokens by id: one ``WHERE token_id IN (...)`` per 500 ids (migration's
        ``missing_only`` and ``verify`` compare whole batches with it)."""
        model = _token_model()
        db = self._read_db(model)
        ids = list(dict.fromkeys(token_ids))
        found: dict[str, AuthToken] = {}
        for start in range(0, len(ids), 500):
            alive = RETAINED.alive(convert.to_db(utcnow()))
            with database_errors(db):
                rows = list(
                    model._default_manager.using(db)
                    .filter(Q(token_id__in=ids[start : start + 500]), alive)
                    .values_list(*convert.TOKEN_COLUMNS)
                )
            for row in rows:
                token = convert.token_from_row(row)
                found[token.token_id] = token
        return found

    def _get_token_by_access(self, access_digest: str) -> AuthToken | None:
        """The hot path: one SELECT on the unique ``access_token`` index; no write, no user."""
        return self._find_token("access_token", access_digest)

    def lookup_access(self, access_digest: str) -> AuthToken | None:
        """Verification's lookup (the digest is well-formed): the engine method itself."""
        return self._find_token("access_token", access_digest)

    def lookup_access_with_user(self, access_digest: str) -> tuple[AuthToken | None, Any]:
        """The token and its user in one SELECT (the token row joined to its user's row), when
        the tokens are read from the user model's database; otherwise the token alone and
        ``NOT_LOADED`` (so also when the user model's default manager may hide users: see
        :func:`_plain_manager`). The user is built as the ORM builds one (``Model.from_db``), with
        every concrete field loaded."""
        model = _token_model()
        user_model = get_user_model()
        db = self._read_db(model)
        if router.db_for_read(user_model) != db or not _plain_manager(user_model):
            return self._find_token("access_token", access_digest), NOT_LOADED
        names = [field.attname for field in user_model._meta.concrete_fields]
        columns = convert.TOKEN_COLUMNS + tuple(f"user__{name}" for name in names)
        row = self._find_unexpired(model, "access_token", access_digest, columns, RETAINED)
        if row is None:
            return None, NOT_LOADED
        split = len(convert.TOKEN_COLUMNS)
        user = user_model.from_db(db, names, row[split:])
        return convert.token_from_row(row[:split]), user

    async def alookup_access_with_user(self, access_digest: str) -> tuple[AuthToken | None, Any]:
        return await _in_thread(self.lookup_access_with_user, access_digest)

    def _get_token_by_refresh(self, refresh_digest: str) -> AuthToken | None:
        return self._find_token("refresh_token", refresh_digest)

    def _update_token(self, token: AuthToken) -> bool:
        """Replace every field of a stored, unexpired token in one UPDATE."""
        model = _token_model()
        fields = convert.token_fields(model, token)
        token_id = fields.pop("token_id")
        db = self._write_db(model)
        now = convert.to_db(utcnow())
        with database_errors(db):
            updated = (
                model.objects.using(db)
                .filter(token_id=token_id, retain_until__gt=now)
                .update(**fields)
            )
        return updated > 0

    def _revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None) -> bool:
        """``UPDATE ... WHERE revoked_at IS NULL``: the row count tells which caller won."""
        revoked_at = convert.to_db(at)
        model = _token_model()
        db = self._write_db(model)
        now = utcnow()
        with database_errors(db):
            if self.fast_sql:
                updated = fast_sql.revoke_row(
                    db,
                    model,
                    token_id,
                    at=revoked_at,
                    replaced_by=replaced_by,
                    now=now,
                    prepare=self.prepare,
                )
            else:
                updated = (
                    model.objects.using(db)
                    .filter(
                        token_id=token_id,
                        revoked_at__isnull=True,
                        retain_until__gt=convert.to_db(now),
                    )
                    .update(revoked_at=revoked_at, replaced_by=replaced_by, updated_at=revoked_at)
                )
        return updated == 1

    def _revoke_user_tokens(self, user_id: str, *, at: datetime, family_id: str | None) -> int:
        """Revoke the user's unrevoked tokens (of one family, if given) in one UPDATE."""
        model = _token_model()
        user_pk = convert.user_pk(model, user_id)
        revoked_at = convert.to_db(at)
        if user_pk is None:
            return 0
        db = self._write_db(model)
        now = convert.to_db(utcnow())
        query = Q(user_id=user_pk, revoked_at__isnull=True, retain_until__gt=now)
        if family_id is not None:
            query &= Q(family_id=family_id)
        with database_errors(db):
            return (
                model.objects.using(db)
                .filter(query)
                .update(revoked_at=revoked_at, updated_at=revoked_at)
            )

    def _delete_token(self, token_id: str) -> bool:
        """One DELETE; a row already past ``retain_until`` counts as gone (cleanup removes it)."""
        model = _token_model()
        db = self._write_db(model)
        now = convert.to_db(utcnow())
        with database_errors(db):
            deleted, _ = (
                model.objects.using(db).filter(token_id=token_id, retain_until__gt=now).delete()
            )
        return deleted > 0

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        model = _token_model()
        user_pk = convert.user_pk(model, user_id)
        if user_pk is None:
            return []
        db = self._read_db(model)
        now = convert.to_db(utcnow())
        with database_errors(db):
            rows = list(
                model.objects.using(db)
                .filter(user_id=user_pk, retain_until__gt=now)
                .order_by("created_at", "token_id")
                .values_list(*convert.TOKEN_COLUMNS)
            )
        return [convert.token_from_row(row) for row in rows]

    def _delete_for_user(self, model: type[Any], user_id: str) -> int:
        """Delete every row of ``model`` that belongs to the user; return how many."""
        user_pk = convert.user_pk(model, user_id)
        if user_pk is None:
            return 0
        db = self._write_db(model)
        with database_errors(db):
            deleted: int = model.objects.using(db).filter(user_id=user_pk).delete()[0]
        return deleted

    def _delete_user_tokens(self, user_id: str) -> int:
        return self._delete_for_user(_token_model(), user_id)

    # Sessions -------------------------------------------------------------------------------

    def _store_session(self, session: SessionData) -> None:
        """Insert or replace a session in one upsert statement."""
        model = _session_model()
        fields = convert.session_fields(model, session)
        db = self._write_db(model)
        # Field names, not attnames, for bulk_create: "user", not "user_id".
        update = [concrete_field(model, name).name for name in fields if name != "session_id"]
        with database_errors(db):
            upsert(db, model, [model(**fields)], update)

    def _get_session(self, session_id: str) -> SessionData | None:
        row = self._find_unexpired(
            _session_model(), "session_id", session_id, convert.SESSION_COLUMNS, EXPIRES
        )
        return None if row is None else convert.session_from_row(row)

    def _touch_session(self, session_id: str, *, at: datetime, expires_at: datetime | None) -> bool:
        changes: dict[str, Any] = {"last_accessed": convert.to_db(at)}
        if expires_at is not None:
            changes["expires_at"] = convert.to_db(expires_at)
        model = _session_model()
        db = self._write_db(model)
        now = convert.to_db(utcnow())
        with database_errors(db):
            updated = (
                model.objects.using(db)
                .filter(EXPIRES.alive(now), session_id=session_id)
                .update(**changes)
            )
        return updated > 0

    def _delete_session(self, session_id: str) -> bool:
        """One DELETE; an expired session counts as gone (cleanup removes it)."""
        model = _session_model()
        db = self._write_db(model)
        now = convert.to_db(utcnow())
        with database_errors(db):
            deleted, _ = (
                model.objects.using(db).filter(EXPIRES.alive(now), session_id=session_id).delete()
            )
        return deleted > 0

    def _list_user_sessions(self, user_id: str) -> list[SessionData]:
        model = _session_model()
        user_pk = convert.user_pk(model, user_id)
        if user_pk is None:
            return []
        db = self._read_db(model)
        now = convert.to_db(utcnow())
        with database_errors(db):
            rows = list(
                model.objects.using(db)
                .filter(EXPIRES.alive(now), user_id=user_pk)
                .order_by("created_at", "session_id")
                .values_list(*convert.SESSION_COLUMNS)
            )
        return [convert.session_from_row(row) for row in rows]

    def _delete_user_sessions(self, user_id: str) -> int:
        return self._delete_for_user(_session_model(), user_id)

    def count_active_sessions(self) -> int:
        model = _session_model()
        db = self._read_db(model)
        now = convert.to_db(utcnow())
        with database_errors(db):
            return model.objects.using(db).filter(EXPIRES.alive(now)).count()

    # Key-value ------------------------------------------------------------------------------

    def _kv_set(self, key: str, value: bytes, ttl: timedelta | None) -> None:
        now = utcnow()
        entry = KVEntry(key=key, value=value, created_at=now, expires_at=now + ttl if ttl else None)
        model = _kv_model()
        db = self._write_db(model)
        with database_errors(db):
            upsert(
                db,
                model,
                [model(**convert.kv_fields(entry))],
                ["value", "created_at", "expires_at"],
            )

    def _kv_get(self, key: str) -> bytes | None:
        row = self._find_unexpired(_kv_model(), "key", key, ("value",), EXPIRES)
        return None if row is None else bytes(row[0])

    def _kv_delete(self, key: str) -> bool:
        """One DELETE; an expired entry counts as gone (cleanup removes it)."""
        model = _kv_model()
        db = self._write_db(model)
        now = convert.to_db(utcnow())
        with database_errors(db):
            deleted, _ = model.objects.using(db).filter(EXPIRES.alive(now), key=key).delete()
        return deleted > 0

    def _kv_incr(self, key: str, ttl: timedelta | None) -> int:
        """Atomic on every database; one upsert statement on PostgreSQL and SQLite.

        A value that is not a canonical integer raises :class:`InvalidInput` and is left alone.
        """
        now = utcnow()
        expires_at = now + ttl if ttl else None
        model = _kv_model()
        db = self._write_db(model)
        with database_errors(db):
            if supports_upsert(db):
                return incr_upsert(db, model, key, now, expires_at)
            return incr_locked(db, model, key, now, expires_at)

    # Audit log ------------------------------------------------------------------------------

    def _append_audit(self, event: AuditEvent) -> None:
        model = _audit_model()
        fields = convert.audit_fields(event)
        db = self._write_db(model)
        with database_errors(db):
            model.objects.using(db).create(**fields)

    def _audit_queryset(
        self,
        db: str,
        *,
        user_id: str | None,
        action: str | None,
        outcome: bool | None,
        since: datetime | None,
        until: datetime | None,
    ) -> QuerySet[AuditLog]:
        query = Q()
        if user_id is not None:
            query &= Q(user_id=user_id)
        if action is not None:
            query &= Q(action=action)
        if outcome is not None:
            query &= Q(outcome=outcome)
        if since is not None:
            query &= Q(created_at__gte=convert.to_db(since))
        if until is not None:
            query &= Q(created_at__lt=convert.to_db(until))
        return _audit_model().objects.using(db).filter(query)

    def _query_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        outcome: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int,
        offset: int,
    ) -> list[AuditEvent]:
        db = self._read_db(_audit_model())
        queryset = self._audit_queryset(
            db, user_id=user_id, action=action, outcome=outcome, since=since, until=until
        )
        if limit == 0:
            return []
        with database_errors(db):
            rows = list(
                queryset.order_by("-created_at", "-id").values_list(*convert.AUDIT_COLUMNS)[
                    offset : offset + limit
                ]
            )
        return [convert.audit_from_row(row) for row in rows]

    def _count_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        outcome: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        db = self._read_db(_audit_model())
        queryset = self._audit_queryset(
            db, user_id=user_id, action=action, outcome=outcome, since=since, until=until
        )
        with database_errors(db):
            return queryset.count()

    def _delete_audit_before(self, cutoff: datetime) -> int:
        """Delete in batches of 1000 on the ``created_at`` index; short transactions."""
        before = convert.to_db(cutoff)
        model = _audit_model()
        db = self._write_db(model)
        with database_errors(db):
            return delete_in_batches(model.objects.using(db).filter(created_at__lt=before), 1000)

    # Maintenance ----------------------------------------------------------------------------

    def _cleanup(self, model: type[Any], expiry_field: str, batch_size: int, dry_run: bool) -> int:
        """Delete rows whose ``expiry_field`` has passed, ``batch_size`` keys per transaction."""
        db = self._write_db(model)
        now = convert.to_db(utcnow())
        queryset = model.objects.using(db).filter(**{f"{expiry_field}__lte": now})
        with database_errors(db):
            if dry_run:
                count: int = queryset.count()
                return count
            return delete_in_batches(queryset, batch_size)

    def _cleanup_expired_tokens(self, *, batch_size: int, dry_run: bool) -> int:
        """Delete tokens past ``retain_until``, ``batch_size`` primary keys per transaction."""
        return self._cleanup(_token_model(), "retain_until", batch_size, dry_run)

    def _cleanup_expired_sessions(self, *, batch_size: int, dry_run: bool) -> int:
        """Delete expired sessions, ``batch_size`` primary keys per transaction."""
        return self._cleanup(_session_model(), "expires_at", batch_size, dry_run)

    def _cleanup_expired_kv(self, *, batch_size: int, dry_run: bool) -> int:
        """Delete expired key-value entries, ``batch_size`` primary keys per transaction."""
        return self._cleanup(_kv_model(), "expires_at", batch_size, dry_run)

    def statistics(self) -> StorageStatistics:
        """Counts with one aggregate query per table, and the size of the tables.

        Tokens count until ``retain_until``, as :meth:`iter_tokens` yields them:
        ``total_tokens = active_tokens + expired_tokens + revoked_tokens``, where expired
        tokens are unrevoked ones whose access token's lifetime is over (kept for refresh and
        reuse detection). ``total_sessions`` counts every stored session, expired ones not yet
        cleaned up included; ``kv_entries`` counts unexpired entries. ``database_size_mb`` is
        the size of the four tables with their indexes on PostgreSQL, None elsewhere.
        """
        now = convert.to_db(utcnow())
        token_model = _token_model()
        token_db = self._read_db(token_model)
        with database_errors(token_db):
            tokens = (
                token_model.objects.using(token_db)
                .filter(retain_until__gt=now)
                .aggregate(
                    total=Count("pk"),
                    revoked=Count("pk", filter=Q(revoked_at__isnull=False)),
                    expired=Count("pk", filter=Q(revoked_at__isnull=True, expires_at__lte=now)),
                )
            )
        session_model = _session_model()
        session_db = self._read_db(session_model)
        with database_errors(session_db):
            sessions = session_model.objects.using(session_db).aggregate(
                total=Count("pk"), active=Count("pk", filter=EXPIRES.alive(now))
            )
        kv_model = _kv_model()
        kv_db = self._read_db(kv_model)
        with database_errors(kv_db):
            kv_entries = kv_model.objects.using(kv_db).filter(EXPIRES.alive(now)).count()
        audit_model = _audit_model()
        audit_db = self._read_db(audit_model)
        with database_errors(audit_db):
            audit_events = audit_model.objects.using(audit_db).count()
        return {
            "backend": f"database:{connections[token_db].vendor}",
            "total_tokens": tokens["total"],
            "active_tokens": tokens["total"] - tokens["revoked"] - tokens["expired"],
            "expired_tokens": tokens["expired"],
            "revoked_tokens": tokens["revoked"],
            "active_sessions": sessions["active"],
            "total_sessions": sessions["total"],
            "kv_entries": kv_entries,
            "audit_events": audit_events,
            "database_size_mb": self._database_size_mb(),
            "memory_used_bytes": None,
        }

    def _database_size_mb(self) -> float | None:
        """Total size of our tables and their indexes, or None if not all are on PostgreSQL."""
        tables_by_db: dict[str, list[str]] = {}
        for model in self._models():
            tables_by_db.setdefault(self._read_db(model), []).append(model._meta.db_table)
        if any(connections[db].vendor != "postgresql" for db in tables_by_db):
            return None
        size = 0
        for db, tables in tables_by_db.items():
            connection = connections[db]
            names = [connection.ops.quote_name(table) for table in tables]
            with database_errors(db), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT COALESCE(SUM(pg_total_relation_size(to_regclass(name))), 0) "
                    "FROM unnest(%s::text[]) AS tables(name)",
                    [names],
                )
                size += int(cursor.fetchone()[0])
        return round(size / _BYTES_PER_MB, 3)

    def flush(self) -> None:
        """Delete every row of the four tables (per database, in one transaction)."""
        models_by_db: dict[str, list[type[Model]]] = {}
        for model in self._models():
            models_by_db.setdefault(self._write_db(model), []).append(model)
        for db, models in models_by_db.items():
            with database_errors(db), transaction.atomic(using=db):
                for model in models:
                    model._default_manager.using(db).all().delete()

    # Batched iteration and bulk import --------------------------------------------------------

    def _iter_tokens(self, *, batch_size: int) -> Iterator[list[AuthToken]]:
        """Yield tokens in primary-key order (keyset pages); rows past ``retain_until`` are
        skipped, as they are invisible everywhere else."""
        model = _token_model()
        db = self._read_db(model)
        now = convert.to_db(utcnow())
        queryset = model.objects.using(db).filter(retain_until__gt=now)
        with database_errors(db):
            yield from iterate_by_pk(
                queryset, convert.TOKEN_COLUMNS, convert.token_from_row, batch_size
            )

    def _iter_sessions(self, *, batch_size: int) -> Iterator[list[SessionData]]:
        """Yield unexpired sessions in primary-key order (keyset pages)."""
        model = _session_model()
        db = self._read_db(model)
        now = convert.to_db(utcnow())
        queryset = model.objects.using(db).filter(EXPIRES.alive(now))
        with database_errors(db):
            yield from iterate_by_pk(
                queryset, convert.SESSION_COLUMNS, convert.session_from_row, batch_size
            )

    def _iter_kv(self, *, batch_size: int) -> Iterator[list[KVEntry]]:
        """Yield unexpired key-value entries in key order (keyset pages)."""
        model = _kv_model()
        db = self._read_db(model)
        now = convert.to_db(utcnow())
        queryset = model.objects.using(db).filter(EXPIRES.alive(now))
        with database_errors(db):
            yield from iterate_by_pk(queryset, convert.KV_COLUMNS, convert.kv_from_row, batch_size)

    def _iter_audit(self, *, batch_size: int) -> Iterator[list[AuditEvent]]:
        """Yield audit events oldest first, keyset pages on ``(created_at, id)``."""
        model = _audit_model()
        db = self._read_db(model)
        with database_errors(db):
            yield from iterate_by_time(
                model.objects.using(db), convert.AUDIT_COLUMNS, convert.audit_from_row, batch_size
            )

    def iter_rows(self, kind: str, *, batch_size: int = 1000) -> Iterator[list[tuple[Any, ...]]]:
        """The rows :meth:`iter_tokens` (``kind`` "token"), :meth:`iter_sessions` ("session"),
        :meth:`iter_kv` ("kv") or :meth:`iter_audit` ("audit") read, in the same order and
        pages, before they become records.

        Each row holds the record's fields in declaration order as the database driver returns
        them; :func:`.rows.column_readers` says how each becomes the record's value. Backups
        use it to encode rows straight to JSON, without building a record per row.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError("batch_size must be a positive integer")
        now = convert.to_db(utcnow())
        if kind == "audit":
            model: type[Model] = _audit_model()
            db = self._read_db(model)
            with database_errors(db):
                yield from iterate_by_time(
                    model._default_manager.using(db), convert.AUDIT_COLUMNS, tuple, batch_size
                )
            return
        if kind == "token":
            model, columns, alive = _token_model(), convert.TOKEN_COLUMNS, RETAINED.alive(now)
        elif kind == "session":
            model, columns, alive = _session_model(), convert.SESSION_COLUMNS, EXPIRES.alive(now)
        elif kind == "kv":
            model, columns, alive = _kv_model(), convert.KV_COLUMNS, EXPIRES.alive(now)
        else:
            raise ValueError(f"unknown record kind {kind!r}")
        db = self._read_db(model)
        queryset = model._default_manager.using(db).filter(alive)
        with database_errors(db):
            yield from iterate_by_pk(queryset, columns, tuple, batch_size)

    def iter_token_json(self, *, batch_size: int = 1000) -> Iterator[list[tuple[str, str]]] | None:
        """The tokens :meth:`iter_tokens` yields, as pages of ``(user_id, JSON object)``
        built by the database (:mod:`.json_rows`); None where the database cannot."""
        model = _token_model()
        db = self._read_db(model)
        pages = json_rows.token_json_pages(db, model, convert.to_db(utcnow()), batch_size)
        if pages is None:
            return None
        return _mapping_errors(db, pages)

    def _import_tokens(self, tokens: list[AuthToken]) -> int:
        """Upsert tokens by ``token_id`` in one transaction; return how many were written.

        Every token must belong to a user that exists in the target database: otherwise
        :class:`MissingUsers` (a :class:`StorageError` carrying ``missing_user_ids``) is raised
        and nothing is written. The whole iterable is read first; pass it in batches.
        """
        model = _token_model()
        rows = [convert.token_fields(model, token) for token in tokens]
        db = self._write_db(model)
        with database_errors(db):
            return import_rows(db, model, rows, "tokens")

    def _import_sessions(self, sessions: list[SessionData]) -> int:
        """Upsert sessions by ``session_id``; missing users raise :class:`MissingUsers`, as
        for :meth:`import_tokens`."""
        model = _session_model()
        rows = [convert.session_fields(model, session) for session in sessions]
        db = self._write_db(model)
        with database_errors(db):
            return import_rows(db, model, rows, "sessions")

    def _import_kv(self, entries: list[KVEntry]) -> int:
        """Upsert key-value entries by ``key`` in one transaction; return how many."""
        model = _kv_model()
        rows = [convert.kv_fields(entry) for entry in entries]
        db = self._write_db(model)
        with database_errors(db):
            return import_rows(db, model, rows, "key-value entries")

    def _import_audit(self, events: list[AuditEvent]) -> int:
        """Insert the events whose ``event_id`` is not stored yet; return how many."""
        model = _audit_model()
        rows: dict[str, dict[str, Any]] = {}
        for event in events:
            fields = convert.audit_fields(event)
            rows.setdefault(fields["event_id"], fields)  # the first of duplicate ids wins
        db = self._write_db(model)
        with database_errors(db):
            return import_new_events(db, model, rows)


def _mapping_errors(db: str, pages: Iterator[Any]) -> Iterator[Any]:
    """``pages``, with database errors raised as the storage's errors."""
    with database_errors(db):
        yield from pages
