"""The one set of input checks: ids, times, TTLs, counts, addresses, values and whole records.

:class:`~django_authfw.storage.AuthStorage` runs every argument of every storage call through
these functions once, before its backend sees it, so a record one backend accepts every backend
accepts (and migration between any two works). The session API and the storage ``OPTIONS`` use
the same functions. Each raises :class:`~django_authfw.exceptions.InvalidInput` saying what was
wrong; functions that return a value return it in the form every backend stores (an IP address
in its canonical spelling, for example).

The limits are the narrowest any shipped backend has: the database's column sizes. PostgreSQL
text cannot hold NUL, so NUL is refused in every text field, on every backend.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from . import records
from .exceptions import InvalidInput
from .records import AuditEvent, AuthToken, KVEntry, SessionData
from .tokens import MAX_ID_LENGTH, check_id, check_text_chars

__all__ = [
    "ACTION_MAX_LENGTH",
    "EVENT_ID_MAX_LENGTH",
    "MAX_ID_LENGTH",
    "TOKEN_TYPE_MAX_LENGTH",
    "audit_filters",
    "aware",
    "count",
    "counter",
    "digest",
    "event",
    "flag",
    "identifier",
    "ip_address",
    "is_digest",
    "json_value",
    "kv_entry",
    "kv_value",
    "not_a_counter",
    "optional_aware",
    "optional_identifier",
    "record",
    "seconds",
    "session",
    "text",
    "token",
    "ttl",
]

_DIGEST = re.compile(r"[0-9a-f]{64}")
# A counter's stored text: canonical decimal (no sign on zero, no leading zeros or spaces),
# at most 18 digits, the widest every store increments natively (PostgreSQL's bigint text).
_COUNTER = re.compile(r"0|-?[1-9][0-9]{0,17}")
# Times every store holds in UTC and in a local TIME_ZONE (USE_TZ = False) without overflow:
# a day's margin inside Python's range (PostgreSQL accepted years before 1 in UTC, then failed
# reading them back; SQLite and the in-process stores overflowed converting them).
EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
# The widest limit, offset or batch size: every store's integer arguments take it (PostgreSQL's
# bigint, Redis's long long, islice's ssize_t) with room for offset + limit.
MAX_COUNT = 2**31 - 1
# How deep a JSON value may nest: the in-process stores copy it recursively.
MAX_JSON_DEPTH = 100

identifier = check_id


def optional_identifier(value: object, what: str) -> str | None:
    return None if value is None else check_id(value, what)


# Times and durations ------------------------------------------------------------------------


def aware(value: object, what: str) -> datetime:
    """A timezone-aware datetime, returned in UTC (records hold UTC on every backend), or
    :class:`InvalidInput` saying how to fix it."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime, not {type(value).__name__}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be timezone-aware (use django_authfw.records.utcnow()).")
    if value.tzinfo is not UTC:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            value = None
    if value is None or not EARLIEST <= value <= LATEST:
        raise InvalidInput(f"{what} must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} UTC.")
    return value


def optional_aware(value: object, what: str) -> datetime | None:
    return None if value is None else aware(value, what)


def ttl(value: object, what: str = "ttl") -> timedelta | None:
    """A lifetime argument of a call: a positive ``timedelta``, or None for no expiry.

    Numbers are refused, not read as seconds: the contract's type is ``timedelta``, the facade
    (``AuthFramework.kv_set``) never took numbers, and a backend that quietly accepted them made
    code that worked on one backend fail on another.
    """
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise InvalidInput(
            f"{what} must be a positive timedelta or None, not {type(value).__name__} "
            "(for five seconds: timedelta(seconds=5))."
        )
    if value <= timedelta(0):
        raise InvalidInput(
            f"{what} must be a positive timedelta or None, not {value!r}; "
            "to remove an entry, delete it."
        )
    if value > LATEST - records.utcnow():
        raise InvalidInput(f"{what} must end before {LATEST:%Y-%m-%d}; for no expiry pass None.")
    return value


def seconds(value: object, what: str, *, allow_none: bool = False) -> float | None:
    """A configured duration (``OPTIONS``): seconds (int/float) or a ``timedelta``; in seconds."""
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise InvalidInput(
            f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}."
        )
    if not math.isfinite(result) or result < 0:
        raise InvalidInput(f"{what} must be a finite, non-negative duration.")
    return result


# Scalars ------------------------------------------------------------------------------------


def count(value: object, what: str, *, minimum: int = 0) -> int:
    """A limit, offset, batch size or pool size: an int (not a bool) from ``minimum`` to
    :data:`MAX_COUNT`."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_COUNT:
        raise InvalidInput(
            f"{what} must be an integer from {minimum} to {MAX_COUNT}, not {value!r}."
        )
    return value


def flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be True or False, not {value!r}.")
    return value


def text(value: object, what: str, max_length: int | None = None, *, blank: bool = True) -> str:
    """A string without NUL, at most ``max_length`` characters, non-empty unless ``blank``."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}.")
    if not blank and not value:
        raise InvalidInput(f"{what} must not be empty.")
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(f"{what} must be at most {max_length} characters long.")
    check_text_chars(value, what)
    return value


def digest(value: object, what: str) -> str:
    """A SHA-256 hex digest (64 lowercase hex characters), never a raw token."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise InvalidInput(
            f"{what} must be a SHA-256 hex digest (django_authfw.tokens.digest), never a raw token."
        )
    return value


def is_digest(value: object) -> bool:
    """Whether a lookup value can match a stored digest at all (a non-string is an error)."""
    if not isinstance(value, str):
        raise InvalidInput(f"a token digest must be a string, not {type(value).__name__}.")
    return _DIGEST.fullmatch(value) is not None


def ip_address(value: object, what: str = "ip_address") -> str | None:
    """An IPv4 or IPv6 address in canonical form (as PostgreSQL's inet returns it), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string or None, not {type(value).__name__}.")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or getattr(address, "scope_id", None):  # inet has no zone ids
        raise InvalidInput(
            f"{what} must be an IPv4 or IPv6 address (or None), as in REMOTE_ADDR, not {value!r}."
        )
    mapped = getattr(address, "ipv4_mapped", None)
    # PostgreSQL's spelling of a mapped address on every Python (3.13 changed str()).
    canonical = f"::ffff:{mapped}" if mapped is not None else str(address)
    return value if canonical == value else canonical


_FLOAT_EXACT = 2.0**53  # below it, a float's shortest text reads back as the same float


def json_value(value: object, what: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    """A list or dict that every store gives back as it was given: objects with string keys,
    lists, strings, numbers (finite), booleans and None, nested at most
    :data:`MAX_JSON_DEPTH` deep; no tuples or non-string keys (JSON would turn them into lists
    and strings, and two keys could collide), and no NUL or lone surrogates in any string
    (PostgreSQL's jsonb and UTF-8 cannot hold them)."""
    if not isinstance(value, kind):
        raise InvalidInput(f"{what} must be a {kind.__name__}, not {type(value).__name__}.")
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise InvalidInput(f"{what} is nested too deep (at most {MAX_JSON_DEPTH} levels).")
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str):
                        raise InvalidInput(
                            f"{what} must have string keys only, not {type(key).__name__} "
                            f"{key!r}: JSON would give it back as a string."
                        )
                    check_text_chars(key, what)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            check_text_chars(item, what)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{what} must hold only finite numbers, not {item!r}.")
            if abs(item) >= _FLOAT_EXACT:
                # PostgreSQL's jsonb keeps numbers as decimals: 1e23 would come back as the
                # integer 10**23, which is not the float stored.
                raise InvalidInput(
                    f"{what} holds {item!r}, a float too large to come back the same from "
                    f"every store (limit 2**53); store it as an int or a string."
                )
        elif item is not None and not isinstance(item, int):  # bool is an int
            raise InvalidInput(
                f"{what} must hold only JSON values (objects, lists, strings, numbers, "
                f"booleans, None), not {type(item).__name__}."
            )
    return value


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{what} must be a list of strings.")
    for item in value:
        text(item, what)
    return value


def kv_value(value: object) -> bytes:
    """A key-value entry's value: ``bytes`` only.

    A ``bytearray`` or ``memoryview`` is refused rather than copied: the record's type is
    ``bytes``, the facade refuses them too, and ``bytes(value)`` is the caller's one call.
    """
    if not isinstance(value, bytes):
        raise InvalidInput(
            f"a key-value entry's value must be bytes, not {type(value).__name__}; "
            "encode text first (value.encode()) or convert a buffer (bytes(value))."
        )
    return value


def not_a_counter(key: str) -> InvalidInput:
    return InvalidInput(
        f"kv_incr({key!r}): the stored value is not an integer counter; "
        "kv_delete the key or use another one."
    )


def counter(key: str, raw: bytes | memoryview | str) -> int:
    """The integer a stored counter holds; :class:`InvalidInput` unless it is one in canonical
    form (``b"03"``, ``b" 3"`` or ``b"+3"`` are not counters on any backend: Redis's INCR and
    the database's SQL refuse them, so the in-process store does too)."""
    stored = raw if isinstance(raw, str) else bytes(raw).decode("ascii", errors="replace")
    if not _COUNTER.fullmatch(stored):
        raise not_a_counter(key)
    return int(stored)


# Records ------------------------------------------------------------------------------------
# Derived from each record's schema (dataclasses.fields() and their metadata, see
# django_authfw.records.spec): a field added there is checked here without an edit.


def _check_id(value: object, what: str, field_spec: Mapping[str, Any]) -> str:
    return check_id(value, what, field_spec["max_length"] or MAX_ID_LENGTH)


def _check_text(value: object, what: str, field_spec: Mapping[str, Any]) -> str:
    return text(value, what, field_spec["max_length"], blank=field_spec["blank"])


_CHECKS: dict[str, Callable[[object, str, Mapping[str, Any]], object]] = {
    "id": _check_id,
    "text": _check_text,
    "digest": lambda value, what, _: digest(value, what),
    "time": lambda value, what, _: aware(value, what),
    "strings": lambda value, what, _: _strings(value, what),
    "object": lambda value, what, _: json_value(value, what, dict),
    "bool": lambda value, what, _: flag(value, what),
    "ip": lambda value, what, _: ip_address(value, what),
    "bytes": lambda value, what, _: kv_value(value),
}

_Record = TypeVar("_Record", AuthToken, SessionData, KVEntry, AuditEvent)


def record(value: object, kind: type[_Record]) -> _Record:
    """A valid record of ``kind``: every field checked as its schema says.

    Returns the record itself, or a copy if a field had to be put in canonical form (an IP
    address, a time in UTC), so every backend stores the same value.
    """
    if not isinstance(value, kind):
        raise InvalidInput(f"expected {kind.__name__} record, not {type(value).__name__}.")
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(kind):
        current = getattr(value, field.name)
        if current is None and field.metadata["null"]:
            continue
        checked = _CHECKS[field.metadata["kind"]](current, field.name, field.metadata)
        if checked is not current:  # put in canonical form (a time in UTC, an address)
            changes[field.name] = checked
    return dataclasses.replace(value, **changes) if changes else value


def token(value: object) -> AuthToken:
    return record(value, AuthToken)


def session(value: object) -> SessionData:
    """A valid session; its address in canonical form (a copy if that changed it)."""
    return record(value, SessionData)


def kv_entry(value: object) -> KVEntry:
    return record(value, KVEntry)


def event(value: object) -> AuditEvent:
    """A valid audit event; its address in canonical form (a copy if that changed it)."""
    return record(value, AuditEvent)


def _limit(kind: type[Any], name: str) -> int:
    limit: int = next(f for f in dataclasses.fields(kind) if f.name == name).metadata["max_length"]
    return limit


TOKEN_TYPE_MAX_LENGTH = _limit(AuthToken, "token_type")
ACTION_MAX_LENGTH = _limit(AuditEvent, "action")
EVENT_ID_MAX_LENGTH = _limit(AuditEvent, "event_id")


def audit_filters(
    user_id: object,
    action: object,
    outcome: object,
    since: object,
    until: object,
) -> dict[str, Any]:
    """The filters of ``query_audit``/``count_audit``; a value no event can hold is refused."""
    if outcome is not None:
        flag(outcome, "outcome")
    return {
        "user_id": optional_identifier(user_id, "user_id"),
        "action": None if action is None else check_id(action, "action", ACTION_MAX_LENGTH),
        "outcome": outcome,
        "since": optional_aware(since, "since"),
        "until": optional_aware(until, "until"),
    }
