"""Database tables of :class:`~django_authfw.storage.DatabaseStorage`.

Defined here, in the storage layer that queries them, and exported to Django by
``django_authfw.models`` (the module the app registry loads), so that the storage imports
nothing above the records layer.

Four tables (tokens, sessions, key-value entries, audit log), their columns and index names
fixed by the migrations: token columns hold SHA-256 digests (never the raw secret), tokens and
sessions point at ``AUTH_USER_MODEL``, and table names carry ``AUTHFW["TABLE_PREFIX"]`` (default
``auth_``). Beyond the classic token-table layout there are refresh-token expiry, rotation
families, revocation, and ``retain_until`` so that cleanup is one indexed range delete.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from ...actions import event_title
from ...conf import conf
from ...tokens import digest, shown_session_id


class Token(models.Model):
    """An issued token pair, stored by digest."""

    token_id = models.CharField(primary_key=True, max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        db_column="user_id",
        db_index=False,  # indexed below under a fixed name (Meta.indexes)
        related_name="authfw_tokens",
    )
    # Unique through Meta.constraints rather than unique=True: on PostgreSQL a field-level
    # unique CharField also gets a varchar_pattern_ops "_like" index, which LIKE queries would
    # need and digest lookups never make; every insert would maintain it for nothing.
    access_token = models.CharField(
        "access token digest", max_length=64, help_text="SHA-256 hex digest."
    )
    # NULL when there is no refresh token: unique constraints allow many NULLs, not many "".
    refresh_token = models.CharField(  # noqa: DJ001
        "refresh token digest", max_length=64, null=True, blank=True
    )
    token_type = models.CharField(max_length=50, default="Bearer")
    family_id = models.CharField(max_length=255, blank=True)
    expires_at = models.DateTimeField()
    refresh_expires_at = models.DateTimeField(null=True, blank=True)
    retain_until = models.DateTimeField(
        help_text="The later of both expiries; cleanup deletes the row after this."
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # NULL (not "") for "none", as the records' None: no rotation happened / no user known.
    replaced_by = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    permissions = models.JSONField(default=list, blank=True)
    roles = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = conf.table("tokens")
        verbose_name = "token"
        # Each index serves a query named beside it (plans in docs/performance.md, "Indexes");
        # every index costs each token issue a write. The primary key's varchar_pattern_ops
        # "_like" index Django adds on PostgreSQL serves no query (no LIKE on ids) and is
        # dropped by migration 0004, as is idx_tokens_family_id (a login's family is found
        # among its user's few tokens, on idx_tokens_user_id).
        indexes = [
            # list/revoke/delete a user's tokens, a login's family, the user FK's cascade
            models.Index(fields=["user"], name="idx_tokens_user_id"),
            # the admin's "active" filter
            models.Index(fields=["expires_at"], name="idx_tokens_expires_at"),
            # cleanup: tokens past retain_until
            models.Index(fields=["retain_until"], name="idx_tokens_retain_until"),
        ]
        constraints = [
            # idx_tokens_access_token, unique: the index of the verification path.
            models.UniqueConstraint(fields=["access_token"], name="idx_tokens_access_token"),
            models.UniqueConstraint(fields=["refresh_token"], name="idx_tokens_refresh_token"),
        ]

    def __str__(self) -> str:
        return f"{self.token_type} {self.access_token[:8]}… ({self.token_id})"


class SessionIdDigestField(models.CharField):  # type: ignore[type-arg]
    """``Session.id_digest``: computed from the row's ``session_id`` whenever Django writes
    the row (``save``, ``create``, ``bulk_create``, ``update_or_create``), so that a row written
    through the ORM rather than the storage (an app's data migration, a test fixture) is not
    left with ``""``, which the admin cannot open and a second such row would collide on. A
    ``QuerySet.update`` has no instance: :class:`SessionQuerySet` sets the column there.
    """

    def pre_save(self, model_instance: models.Model, add: bool) -> str:
        value = digest(str(model_instance.pk))
        setattr(model_instance, self.attname, value)
        return value

    def deconstruct(self) -> Any:
        # Migrations see a plain CharField: the computation is no part of the schema.
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.CharField", args, kwargs


class SessionQuerySet(models.QuerySet["Session"]):
    """``update()`` keeps ``id_digest`` the digest of ``session_id`` when it changes the id."""

    def update(self, **kwargs: Any) -> int:
        for name in ("session_id", "pk"):
            if name in kwargs:
                value = kwargs[name]
                if not isinstance(value, str):
                    # An expression (F(), Concat()) has no value here to digest.
                    raise ValueError(
                        "Session ids can be changed by update() to a plain string only, so "
                        "that id_digest is set to its digest; save() the row instead."
                    )
                kwargs["id_digest"] = digest(value)
        return super().update(**kwargs)

    update.alters_data = True  # type: ignore[attr-defined]


class Session(models.Model):
    """A server-side session with JSON data."""

    session_id = models.CharField(primary_key=True, max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        db_column="user_id",
        db_index=False,
        related_name="authfw_sessions",
    )
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    last_accessed = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True, default="")
    # The SHA-256 (hex) of session_id: how the admin addresses a session (its links, change
    # page, checkboxes), since the id itself is the session's credential and the admin must not
    # put it in a page. A database-only derived value, not part of SessionData: every write
    # sets it (rows.session_fields; the field's pre_save and SessionQuerySet.update for rows
    # written through the ORM) and migration 0005 filled the rows written before it.
    id_digest = SessionIdDigestField("session id digest", max_length=64, editable=False)

    objects = SessionQuerySet.as_manager()

    class Meta:
        db_table = conf.table("sessions")
        verbose_name = "session"
        indexes = [
            models.Index(fields=["user"], name="idx_sessions_user_id"),
            models.Index(fields=["expires_at"], name="idx_sessions_expires_at"),
        ]
        constraints = [
            # The admin's lookup of one session (a constraint, not unique=True: see
            # Token.access_token).
            models.UniqueConstraint(fields=["id_digest"], name="idx_sessions_id_digest"),
        ]

    def __str__(self) -> str:
        # The id is the session's credential: the admin's titles and breadcrumbs show its
        # first characters only, as they show a token's digest.
        return shown_session_id(self.session_id)


class KVEntry(models.Model):
    """A key-value entry; ``expires_at`` NULL means it persists."""

    key = models.CharField(primary_key=True, max_length=255)
    value = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = conf.table("kv_store")
        verbose_name = "key-value entry"
        verbose_name_plural = "key-value entries"
        indexes = [models.Index(fields=["expires_at"], name="idx_kv_expires_at")]

    def __str__(self) -> str:
        return self.key


class AuditLog(models.Model):
    """One audit event. Rows are appended, never changed; deleted only by retention."""

    id = models.BigAutoField(primary_key=True)
    # Room for any id scheme an imported log uses (uuid4().hex is 32, a dashed UUID 36).
    event_id = models.CharField(max_length=64)  # unique: see Meta.constraints
    # NULL for "no user" / "no resource", as the records' None (not the same as "").
    user_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    action = models.CharField(max_length=100)
    resource = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    outcome = models.BooleanField(help_text="True for success, False for failure.")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = conf.table("audit_log")
        verbose_name = "audit event"
        ordering = ["-created_at", "-id"]
        indexes = [
            # (created_at, id) orders the log and drives keyset pagination of iter_audit.
            models.Index(fields=["created_at", "id"], name="idx_audit_created_at"),
            models.Index(fields=["action", "created_at"], name="idx_audit_action"),
            # The admin's search (django_authfw.admin): an exact user id or address, newest
            # first, stays an index range on millions of rows; query_audit(user_id=...) too.
            # The guide's idx_audit_user_id, with created_at after user_id (migration 0004).
            models.Index(fields=["user_id", "created_at"], name="idx_audit_user_id"),
            models.Index(fields=["ip_address", "created_at"], name="idx_audit_ip_created"),
            # The admin's dashboard (django_authfw.dashboard_queries): events per action,
            # outcome and period (ranges of the first), and the failed logins per username
            # (resource) and address, each read from the index alone (an index-only scan on
            # PostgreSQL), never from the table.
            models.Index(
                fields=["action", "outcome", "created_at"], name="idx_audit_action_outcome"
            ),
            models.Index(
                fields=["created_at", "resource", "ip_address"],
                name="idx_audit_login_failures",
                condition=models.Q(action="login", outcome=False),
            ),
        ]
        constraints = [
            # A constraint, not unique=True, for the reason given on Token.access_token.
            models.UniqueConstraint(fields=["event_id"], name="idx_audit_event_id"),
        ]

    def __str__(self) -> str:
        # "Login failed", "Password change succeeded": the admin's titles and breadcrumbs.
        return f"{event_title(self.action, self.outcome)} ({self.created_at:%Y-%m-%d %H:%M:%S})"
