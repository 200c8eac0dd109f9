"""``authfw_stats`` on every backend: JSON with the documented keys, and the table."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from django_authfw.exceptions import StorageUnavailable
from django_authfw.records import StorageStatistics
from django_authfw.storage import InMemoryStorage

from . import ops_support
from .ops_support import populate

aliases = ops_support.aliases  # the fixture, shared by the operations tests

KEYS = set(StorageStatistics.__annotations__)


def test_json_output(backend: str, aliases: Any, make_user: Callable[..., str]) -> None:
    second = "memory" if backend != "memory" else "locmem"
    storages = aliases(main=backend, spare=second)
    data = populate(storages["main"], make_user, scale=2)
    out = io.StringIO()
    call_command("authfw_stats", "--json", stdout=out)
    parsed = json.loads(out.getvalue())
    assert list(parsed) == ["main", "spare"]
    assert (
        set(parsed["main"])
        == KEYS
        == {
            "backend",
            "total_tokens",
            "active_tokens",
            "expired_tokens",
            "revoked_tokens",
            "active_sessions",
            "total_sessions",
            "kv_entries",
            "audit_events",
            "database_size_mb",
            "memory_used_bytes",
        }
    )
    main = parsed["main"]
    assert main["total_tokens"] == len(data.tokens)
    assert main["revoked_tokens"] == 1
    assert main["expired_tokens"] == 1  # access expired, kept for reuse detection
    assert main["active_tokens"] == len(data.tokens) - 2
    assert main["active_sessions"] == main["total_sessions"] == len(data.sessions)
    assert main["kv_entries"] == len(data.kv)
    assert main["audit_events"] == len(data.audit)
    assert parsed["spare"]["total_tokens"] == 0
    if backend == "database" and connection.vendor == "postgresql":
        assert isinstance(main["database_size_mb"], float)
        assert main["database_size_mb"] > 0
    if backend == "redis":
        assert isinstance(main["memory_used_bytes"], int)
        assert main["memory_used_bytes"] > 0

    out = io.StringIO()
    call_command("authfw_stats", "--json", "--storage", "spare", stdout=out)
    assert list(json.loads(out.getvalue())) == ["spare"]


def test_table_output(backend: str, aliases: Any, make_user: Callable[..., str]) -> None:
    storages = aliases(main=backend)
    data = populate(storages["main"], make_user)
    out = io.StringIO()
    call_command("authfw_stats", "--storage", "main", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["main"]
    rows = {line[:20].strip(): line[20:].strip() for line in lines[2:]}
    assert rows["tokens"] == str(len(data.tokens))
    assert rows["audit events"] == str(len(data.audit))
    assert rows["backend"] == storages["main"].statistics()["backend"]


def test_unknown_alias(aliases: Any) -> None:
    aliases(main="memory")
    with pytest.raises(CommandError, match="Unknown storage alias 'x'"):
        call_command("authfw_stats", "--storage", "x")


class DownStorage(InMemoryStorage):
    """A storage whose service is unreachable."""

    def statistics(self) -> StorageStatistics:
        raise StorageUnavailable("connection refused")


def test_storage_down(aliases: Any) -> None:
    aliases(main="memory", down={"BACKEND": "tests.test_stats_command.DownStorage"})
    with pytest.raises(CommandError, match=r"Storage 'down' is unavailable.*Check that"):
        call_command("authfw_stats", "--json", stdout=io.StringIO())
