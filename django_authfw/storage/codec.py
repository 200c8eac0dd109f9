"""JSON form of records for stores that keep text (Redis), and the time arithmetic they share.

Values are compact JSON with ISO 8601 timestamps, so ``redis-cli GET auth:token:<id>`` shows a
readable record. Field order is fixed (the order of the dataclass fields), which lets a store
compare two encodings byte for byte: the compare-and-set scripts rely on it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..exceptions import InvalidInput, StorageError
from ..records import AuditEvent, AuthToken, SessionData

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exact (no float rounding)."""
    return (moment - EPOCH) // _ONE_US


def remaining_ms(deadline: datetime, now: datetime) -> int:
    """Milliseconds from ``now`` until ``deadline``, rounded up; <= 0 when already past.

    Rounding up means a key never vanishes before its record is over; readers still compare
    the record's own timestamp, so the sub-millisecond tail is invisible.
    """
    return -(-((deadline - now) // _ONE_US) // 1000)


def ttl_ms(ttl: timedelta) -> int:
    """A duration in milliseconds, rounded up; <= 0 for a zero or negative duration."""
    return -(-(ttl // _ONE_US) // 1000)


def _dt(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    # ISO 8601's "Z" for UTC: 5 bytes less per timestamp; fromisoformat reads it back as UTC.
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _parse_dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def dumps(payload: dict[str, Any], what: str) -> bytes:
    """Compact UTF-8 JSON; a value JSON cannot hold raises :class:`InvalidInput`."""
    try:
        return json.dumps(
            payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must hold only JSON-serialisable values: {exc}") from exc


_raw_decode = json.JSONDecoder().raw_decode


def _load_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """:func:`_loads` for the hot path: the decoder's scanner directly (what ``json.loads``
    does after detecting the encoding of bytes, which here are always UTF-8)."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        value, end = _raw_decode(text)
    except ValueError:
        return _loads(raw, what)  # raises the error of invalid JSON
    if end != len(text) and text[end:].strip():
        return _loads(raw, what)
    if not isinstance(value, dict):
        raise StorageError(f"A stored {what} is not a JSON object; delete the key or restore it.")
    return value


def _loads(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StorageError(
            f"A stored {what} is not valid JSON; delete the key or restore it."
        ) from exc
    if not isinstance(value, dict):
        raise StorageError(f"A stored {what} is not a JSON object; delete the key or restore it.")
    return value


# The JSON of each kind is derived from its schema (dataclasses.fields() and their metadata,
# see django_authfw.records.spec): fields in declaration order, except where ``json_rank``
# keeps a field where records written before had it, so stored records stay byte-identical
# (the compare-and-set scripts compare encodings byte for byte).


_NO_DEFAULT = object()


def _json_fields(kind: type[Any]) -> tuple[tuple[str, bool, Any, Callable[[], Any] | None], ...]:
    """``(name, is_time, default, make_default)`` per field, in JSON order.

    ``default`` is the value a field may be left out at (``_NO_DEFAULT`` if none; never a
    time, whose factory gives a new value every call), ``make_default`` rebuilds it for a reader.
    """
    ranked = []
    for index, field in enumerate(dataclasses.fields(kind)):
        rank = field.metadata["json_rank"]
        default: Any = _NO_DEFAULT
        make: Callable[[], Any] | None = None
        if field.default is not dataclasses.MISSING:
            default = field.default
            make = functools.partial(_same, default)
        elif field.default_factory in (list, dict):
            default, make = field.default_factory(), field.default_factory
        entry = (field.name, field.metadata["kind"] == "time", default, make)
        ranked.append((index if rank is None else rank, entry))
    return tuple(entry for _, entry in sorted(ranked, key=lambda pair: pair[0]))


def _same(value: Any) -> Any:
    return value


def _encode(
    record: Any,
    fields: tuple[tuple[str, bool, Any, Callable[[], Any] | None], ...],
    what: str,
    *,
    compact: bool,
    skip: str = "",
) -> bytes:
    payload: dict[str, Any] = {}
    for name, is_time, default, _make in fields:
        value = getattr(record, name)
        # Compact: a field holding its default is left out, and a reader restores it.
        if name == skip or (compact and default is not _NO_DEFAULT and value == default):
            continue
        payload[name] = _dt(value) if is_time else value
    return dumps(payload, what)


def _decode(
    kind: type[Any],
    fields: tuple[tuple[str, bool, Any, Callable[[], Any] | None], ...],
    data: dict[str, Any],
) -> Any:
    values: dict[str, Any] = {}
    for name, is_time, _default, make in fields:
        if name in data:
            value = data[name]
            values[name] = _parse_dt(value) if is_time and value is not None else value
        elif make is not None:
            # Left out (compact), or a field added to the schema after the record was written.
            values[name] = make()
        else:
            raise KeyError(name)
    return kind(**values)


_TOKEN = _json_fields(AuthToken)
_SESSION = _json_fields(SessionData)
_EVENT = _json_fields(AuditEvent)


# Tokens have a compact form of their own (the Redis record is most of a token's memory there):
# shorter names (each field's ``json_name``, see records.spec), times as integer microseconds
# since the Unix epoch, digests as unpadded url-safe base64 (43 characters instead of 64), and
# fields left out where the reader can restore them: those at their default, ``updated`` while
# it equals ``created``, ``id`` when it is the record's key id (the caller passes it), and
# ``family`` when it is the token id (a login's first token names its family). Still JSON
# readable in ``redis-cli``. Records written before (the field names, ISO 8601 times, hex
# digests, every id) are read as well: a ``created_at`` marks them.

_DIGEST_FIELDS = frozenset(("access_digest", "refresh_digest"))
# (field name, JSON name, is a time, is a digest, default or _NO_DEFAULT, rebuilds default)
_TOKEN_FIELDS = {field.name: field for field in dataclasses.fields(AuthToken)}
_COMPACT_TOKEN = tuple(
    (
        name,
        _TOKEN_FIELDS[name].metadata["json_name"] or name,
        is_time,
        name in _DIGEST_FIELDS,
        default,
        make,
    )
    for name, is_time, default, make in _TOKEN
)


def _b64_digest(hexdigest: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hexdigest)).rstrip(b"=").decode()


def _hex_digest(text: str) -> str:
    if len(text) != 43:
        raise ValueError(f"a digest of {len(text)} characters")
    # binascii directly: base64.urlsafe_b64decode checks and translates in Python.
    return binascii.a2b_base64(text.replace("-", "+").replace("_", "/") + "=").hex()


def from_epoch_us(value: int) -> datetime:
    """The aware UTC datetime ``value`` microseconds after the Unix epoch (exact)."""
    return EPOCH + timedelta(0, 0, value)


# JSON name -> field name, and the fields the compact form converts.
_FIELD_OF = {json_name: name for name, json_name, *_rest in _COMPACT_TOKEN}
_COMPACT_TIMES = tuple(name for name, _json, is_time, *_rest in _COMPACT_TOKEN if is_time)


def encode_token(token: AuthToken, key_id: str | None = None) -> bytes:
    """The token's compact JSON; ``key_id`` is the id of the key it is stored under (its
    ``token_id`` is left out when they are the same)."""
    payload: dict[str, Any] = {}
    unchanged = token.updated_at == token.created_at  # never changed since it was issued
    for name, json_name, is_time, is_digest, default, _make in _COMPACT_TOKEN:
        value = getattr(token, name)
        if name == "family_id":
            # Left out when it is the token id; so an empty one (the default) is written.
            if value != token.token_id:
                payload[json_name] = value
            continue
        if default is not _NO_DEFAULT and value == default:
            continue
        if is_time:
            if name == "updated_at" and unchanged:
                continue
            payload[json_name] = epoch_us(value)
        elif is_digest:
            payload[json_name] = _b64_digest(value)
        elif name == "token_id" and value == key_id:
            continue
        else:
            payload[json_name] = value
    return dumps(payload, "a token's permissions, roles and metadata")


def decode_token(raw: bytes | str, key_id: str | None = None) -> AuthToken:
    """A token from :func:`encode_token`'s JSON (or the earlier, longer form)."""
    data = _load_object(raw, "token")
    try:
        if "created_at" in data:  # the earlier form
            if "updated_at" not in data:
                data["updated_at"] = data["created_at"]
            token: AuthToken = _decode(AuthToken, _TOKEN, data)
            return token
        # Verification's path on Redis: only the fields present are touched; the record's
        # defaults fill the rest.
        values = {_FIELD_OF[name]: value for name, value in data.items()}
        for name in _COMPACT_TIMES:
            value = values.get(name)
            if value is not None:
                values[name] = from_epoch_us(value)
        values["access_digest"] = _hex_digest(values["access_digest"])
        refresh = values.get("refresh_digest")
        if refresh is not None:
            values["refresh_digest"] = _hex_digest(refresh)
        if "token_id" not in values:
            if key_id is None:
                raise KeyError("id")
            values["token_id"] = key_id
        if "family_id" not in values:
            values["family_id"] = values["token_id"]
        if "updated_at" not in values:
            values["updated_at"] = values["created_at"]
        return AuthToken(**values)
    except (KeyError, TypeError, ValueError, OverflowError, binascii.Error) as exc:
        raise StorageError(f"A stored token lacks or garbles field {exc}; restore it.") from exc


def encode_session(session: SessionData) -> bytes:
    return _encode(session, _SESSION, "session data", compact=False)


def decode_session(raw: bytes | str) -> SessionData:
    data = _loads(raw, "session")
    try:
        session: SessionData = _decode(SessionData, _SESSION, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"A stored session lacks or garbles field {exc}; restore it.") from exc
    return session


def encode_event(event: AuditEvent) -> bytes:
    return _encode(event, _EVENT, "audit metadata", compact=False)


def decode_event(raw: bytes | str) -> AuditEvent:
    data = _loads(raw, "audit event")
    try:
        event: AuditEvent = _decode(AuditEvent, _EVENT, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"A stored audit event lacks field {exc}; restore it.") from exc
    return event


def clone_json(value: Any) -> Any:
    """A deep copy of plain JSON data (dicts, lists, scalars), much faster than ``deepcopy``."""
    if isinstance(value, dict):
        return {key: clone_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone_json(item) for item in value]
    return value
