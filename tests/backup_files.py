"""Editing backup files the way an attacker or a broken disk would, for the backup tests.

Every helper keeps the lines it does not change byte for byte, so that a signature which still
matches after an edit would be a real defect, not an artefact of re-serialising.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

KIND_COUNT_KEYS = {"token": "tokens", "session": "sessions", "kv": "kv", "audit": "audit"}


def raw_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines(keepends=True)


def write_raw(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(gzip.compress(b"".join(lines)))


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def rewrite(
    source: Path,
    target: Path,
    edit: Callable[[list[bytes]], None],
    *,
    trailer_edit: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Copy a backup with ``edit`` applied to its header and record lines, then recompute
    what anybody can recompute: the counts and the SHA-256 of the trailer. The ``hmac`` (if
    any) is left as it was; ``trailer_edit`` may change the trailer last."""
    lines = raw_lines(source)
    body, trailer = lines[:-1], json.loads(lines[-1])
    edit(body)
    counts = dict.fromkeys(KIND_COUNT_KEYS.values(), 0)
    for line in body[1:]:
        counts[KIND_COUNT_KEYS[json.loads(line)["kind"]]] += 1
    trailer["counts"] = counts
    trailer["sha256"] = hashlib.sha256(b"".join(body)).hexdigest()
    if trailer_edit is not None:
        trailer_edit(trailer)
    write_raw(target, [*body, dumps(trailer)])


def to_version_1(source: Path, target: Path) -> None:
    """The same records as a version 1 file (before signing): no usernames, no signature."""

    def edit(body: list[bytes]) -> None:
        header = json.loads(body[0])
        header["version"] = 1
        header.pop("user_model", None)
        header.pop("username_field", None)
        body[0] = dumps(header)
        for i, line in enumerate(body[1:], start=1):
            obj = json.loads(line)
            obj.pop("username", None)
            body[i] = dumps({"kind": obj["kind"], "record": obj["record"]})

    rewrite(source, target, edit, trailer_edit=lambda trailer: trailer.pop("hmac", None))


def token_line_indexes(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if i and json.loads(line).get("kind") == "token"]
