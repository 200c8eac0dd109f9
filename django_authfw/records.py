"""Plain records that every storage backend stores and returns.

They hold no ORM or cache state, so a record read from one backend can be written to another
(migration, backup). Times are timezone-aware UTC datetimes; token secrets appear only as
SHA-256 digests.

Each dataclass is the one schema of its kind: its fields, with their types, defaults and, in
each field's ``metadata`` (see :func:`spec`), the kind of value and its limits. Everything else
is derived from ``dataclasses.fields()``: the input checks (:mod:`django_authfw.validate`), the
Redis JSON (:mod:`django_authfw.storage.codec`), database rows
(:mod:`django_authfw.storage.database.rows`), backup lines (:mod:`django_authfw.backup`) and
the in-memory store's copies. Adding a field is an edit here plus a migration for the tables.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, TypedDict

#: What a field holds: ``id`` (non-empty text, at most ``max_length``, 255 by default), ``text``,
#: ``digest`` (SHA-256 hex), ``time`` (aware datetime), ``strings`` (list of text), ``object``
#: (JSON object), ``bool``, ``ip`` (an address) or ``bytes``.
FieldKind = Literal["id", "text", "digest", "time", "strings", "object", "bool", "ip", "bytes"]

MAX_ID_LENGTH = 255  # the id columns' max_length


def spec(
    kind: FieldKind,
    *,
    null: bool = False,
    max_length: int | None = None,
    blank: bool = True,
    column: str | None = None,
    user_key: bool = False,
    json_rank: float | None = None,
    json_name: str | None = None,
) -> dict[str, Any]:
    """A field's ``metadata``: everything about it that is not its name, type or default.

    ``null``: None is allowed. ``max_length``/``blank``: limits of text (the database's column
    sizes, the narrowest store). ``column``: the database column, when not the field's name.
    ``user_key``: the field holds ``str(user.pk)`` (a foreign key in the database).
    ``json_rank``: where the field goes in the Redis JSON when not at its declaration index
    (records written before the schema was derived keep their byte-exact form).
    ``json_name``: the field's shorter name in the compact Redis JSON of tokens.
    """
    return {
        "kind": kind,
        "null": null,
        "max_length": max_length,
        "blank": blank,
        "column": column,
        "user_key": user_key,
        "json_rank": json_rank,
        "json_name": json_name,
    }


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


#: The current time as a POSIX timestamp: the clock of the hot paths, which compare
#: ``AuthToken.expires_ts`` and ``retain_ts`` with it. ``time.time`` itself (no Python frame);
#: the contract suite's held clock replaces it wherever it is bound, as it does ``utcnow``.
now_ts = time.time


def _immutable(*args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(
        "A token record is immutable (stores share it without copying); build a changed copy "
        "with dataclasses.replace(token, ...) instead."
    )


class FrozenList(list[Any]):
    """A list that refuses every change: a token's ``permissions`` and ``roles``.

    A ``list`` subclass, so it compares equal to a list with the same items and JSON encodes
    as one; only the mutating methods raise ``TypeError``.
    """

    __slots__ = ()
    append = extend = insert = remove = pop = clear = sort = reverse = _immutable
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _immutable

    # Filled here, with every item frozen (however built, nothing in it is shared with the
    # caller); __init__, which list would run again on an explicit call to refill it, does
    # nothing.
    def __new__(cls, items: Iterable[Any] = ()) -> FrozenList:
        self = super().__new__(cls)
        list.extend(self, [freeze(item) for item in items])
        return self

    def __init__(self, items: Iterable[Any] = ()) -> None:
        pass

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenList:
        return self

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[Any]]]:
        return FrozenList, (list(self),)


class FrozenDict(dict[str, Any]):
    """A dict that refuses every change: a token's ``metadata`` (nested values frozen too).

    A ``dict`` subclass, so it compares equal to a dict with the same items and JSON encodes
    as one; only the mutating methods raise ``TypeError``.
    """

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable

    # As FrozenList: filled here with every value frozen; __init__ does nothing.
    def __new__(cls, *args: Any, **kwargs: Any) -> FrozenDict:
        self = super().__new__(cls)
        # The common call, FrozenDict(a_dict), reads the dict as it is (no copy first).
        source = args[0] if len(args) == 1 and not kwargs and type(args[0]) is dict else None
        items = (source if source is not None else dict(*args, **kwargs)).items()
        dict.update(self, {key: freeze(value) for key, value in items})
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return FrozenDict, (dict(self),)


_NO_ITEMS = FrozenList()
_NO_KEYS = FrozenDict()


def freeze(value: Any) -> Any:
    """``value`` with every list and dict in it (however deep) made a :class:`FrozenList` or
    :class:`FrozenDict`; anything else is returned as it is (the input checks refuse what
    JSON cannot hold)."""
    kind = type(value)
    if kind is FrozenList or kind is FrozenDict:
        return value
    if kind is list and not value:  # most tokens: one shared empty list (it cannot change)
        return _NO_ITEMS
    if kind is dict and not value:
        return _NO_KEYS
    if isinstance(value, list):
        return FrozenList(value)  # which freezes the items
    if isinstance(value, dict):
        return FrozenDict(value)
    return value


class _Deadlines:
    # Slots of AuthToken that are not fields: its two deadlines as POSIX timestamps, computed
    # once (the record is immutable), so that the hot path compares numbers, not datetimes.
    __slots__ = ("expires_ts", "retain_ts")
    expires_ts: float
    retain_ts: float


@dataclass(frozen=True, slots=True)
class AuthToken(_Deadlines):
    """One issued token pair: an access token and, optionally, its refresh token.

    ``access_digest`` and ``refresh_digest`` are SHA-256 hex digests of the raw secrets, which
    are only ever returned to the client once (see :class:`django_authfw.tokens.IssuedToken`).
    ``family_id`` ties together every token produced by refreshing one login, so a replayed
    refresh token can revoke the whole family. ``replaced_by`` is the ``token_id`` of the token a
    refresh rotated this one into.

    Immutable, down to its lists and dicts (:class:`FrozenList`, :class:`FrozenDict`): a store
    can hand the same record to every reader without copying it, and nobody can change a
    stored token by changing what they read. ``dataclasses.replace`` makes a changed copy.
    ``expires_ts`` and ``retain_ts`` are ``expires_at`` and :attr:`retain_until` as POSIX
    timestamps (derived, not fields).
    """

    token_id: str = field(metadata=spec("id", json_name="id"))
    user_id: str = field(metadata=spec("id", user_key=True, json_name="user"))
    access_digest: str = field(metadata=spec("digest", column="access_token", json_name="access"))
    expires_at: datetime = field(metadata=spec("time", json_rank=7.1, json_name="expires"))
    refresh_digest: str | None = field(
        default=None,
        metadata=spec("digest", null=True, column="refresh_token", json_name="refresh"),
    )
    refresh_expires_at: datetime | None = field(
        default=None,
        metadata=spec("time", null=True, json_rank=7.2, json_name="refresh_expires"),
    )
    token_type: str = field(
        default="Bearer", metadata=spec("text", max_length=50, blank=False, json_name="type")
    )
    family_id: str = field(
        default="", metadata=spec("text", max_length=MAX_ID_LENGTH, json_name="family")
    )
    created_at: datetime = field(default_factory=utcnow, metadata=spec("time", json_name="created"))
    updated_at: datetime = field(default_factory=utcnow, metadata=spec("time", json_name="updated"))
    revoked_at: datetime | None = field(
        default=None, metadata=spec("time", null=True, json_name="revoked")
    )
    replaced_by: str | None = field(default=None, metadata=spec("id", null=True))
    permissions: list[str] = field(default_factory=list, metadata=spec("strings"))
    roles: list[str] = field(default_factory=list, metadata=spec("strings"))
    metadata: dict[str, Any] = field(default_factory=dict, metadata=spec("object"))

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "permissions", freeze(self.permissions))
        setattr_(self, "roles", freeze(self.roles))
        setattr_(self, "metadata", freeze(self.metadata))
        # Times that are not datetimes are left for the input checks to refuse.
        expires = self.expires_at
        if isinstance(expires, datetime) and expires.tzinfo is not None:
            setattr_(self, "expires_ts", expires.timestamp())
            retain = self.refresh_expires_at
            later = (
                retain
                if isinstance(retain, datetime) and retain.tzinfo is not None and retain > expires
                else expires
            )
            setattr_(self, "retain_ts", later.timestamp())

    def __reduce__(self) -> tuple[type[AuthToken], tuple[Any, ...]]:
        # Through __init__, so a copy or an unpickled record gets its deadlines too.
        return AuthToken, tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the access token's lifetime is over (at ``now``, default: this moment)."""
        if now is None:
            return now_ts() >= self.expires_ts
        return now >= self.expires_at

    @property
    def retain_until(self) -> datetime:
        """When the record may be forgotten: the later of the access and refresh expiries.

        A rotated or revoked token is kept until then so that a replayed refresh token is
        recognised as reuse rather than as an unknown token.
        """
        if self.refresh_expires_at and self.refresh_expires_at > self.expires_at:
            return self.refresh_expires_at
        return self.expires_at

    def is_active(self, now: datetime | None = None) -> bool:
        return not self.is_revoked and not self.is_expired(now)


@dataclass(slots=True)
class SessionData:
    """A server-side session: arbitrary JSON ``data`` belonging to one user."""

    session_id: str = field(metadata=spec("id"))
    user_id: str = field(metadata=spec("id", user_key=True))
    data: dict[str, Any] = field(default_factory=dict, metadata=spec("object"))
    created_at: datetime = field(default_factory=utcnow, metadata=spec("time"))
    last_accessed: datetime = field(default_factory=utcnow, metadata=spec("time"))
    expires_at: datetime | None = field(default=None, metadata=spec("time", null=True))
    ip_address: str | None = field(default=None, metadata=spec("ip", null=True))
    user_agent: str = field(default="", metadata=spec("text"))

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at


@dataclass(slots=True)
class KVEntry:
    """A key-value entry; ``value`` is raw bytes, ``expires_at`` None means it persists."""

    key: str = field(metadata=spec("id"))
    value: bytes = field(metadata=spec("bytes"))
    created_at: datetime = field(default_factory=utcnow, metadata=spec("time"))
    expires_at: datetime | None = field(default=None, metadata=spec("time", null=True))

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at


@dataclass(slots=True)
class AuditEvent:
    """One auth decision: who, what, whether it succeeded, from where.

    ``event_id`` is unique in every backend, so migrating or restoring the log twice adds nothing.
    ``user_id`` is the user's primary key as a string when the user is known; ``metadata`` may
    carry the attempted username for failures, never a password or a token.
    """

    action: str = field(metadata=spec("text", max_length=100, blank=False))
    outcome: bool = field(metadata=spec("bool"))
    user_id: str | None = field(default=None, metadata=spec("id", null=True))
    resource: str | None = field(
        default=None, metadata=spec("text", null=True, max_length=MAX_ID_LENGTH)
    )
    ip_address: str | None = field(default=None, metadata=spec("ip", null=True))
    user_agent: str = field(default="", metadata=spec("text"))
    created_at: datetime = field(default_factory=utcnow, metadata=spec("time"))
    metadata: dict[str, Any] = field(default_factory=dict, metadata=spec("object"))
    # uuid4().hex is 32 characters; the column holds 64.
    event_id: str = field(
        default_factory=lambda: uuid.uuid4().hex,
        metadata=spec("id", max_length=64, json_rank=-1),
    )


class _NotLoaded:
    """The type of :data:`NOT_LOADED`."""

    _instance: _NotLoaded | None = None

    def __new__(cls) -> _NotLoaded:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_LOADED"

    def __bool__(self) -> bool:
        return False


#: What a token lookup that also reads users gives for the user when it could not read it in
#: the same query (``AuthStorage.lookup_access_with_user``): the caller loads it if needed.
NOT_LOADED = _NotLoaded()


class StorageStatistics(TypedDict):
    """What :meth:`AuthStorage.statistics` returns; keys as docs/commands.md lists them."""

    backend: str
    total_tokens: int
    active_tokens: int
    expired_tokens: int
    revoked_tokens: int
    active_sessions: int
    total_sessions: int
    kv_entries: int
    audit_events: int
    database_size_mb: float | None
    memory_used_bytes: int | None


class CleanupCounts(TypedDict):
    """What :meth:`AuthStorage.cleanup_expired` returns: records removed per kind."""

    tokens: int
    sessions: int
    kv: int


def replace(record: Any, **changes: Any) -> Any:
    """Return a copy of a record with some fields changed (``dataclasses.replace``)."""
    return dataclasses.replace(record, **changes)
