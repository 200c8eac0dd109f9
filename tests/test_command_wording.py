"""What the commands print, read as a person reads it: counted nouns agree with their number
("1 session", "2 sessions"), no doubled punctuation ("refused.. Check"), no advice given twice.

Every command runs on storages holding exactly one, then exactly two, records of each kind,
and against a Redis storage whose server is down; each line it prints and each error it raises
goes through :func:`wording_problems`, which is tested on its own first (it must be able to
fail).
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_authfw import AuthFramework
from django_authfw.exceptions import AuthError
from django_authfw.records import AuditEvent, SessionData, utcnow
from django_authfw.storage import AuthStorage
from django_authfw.wording import counted, sentence

from .factories import AuthTokenFactory
from .ops_support import SHORT, aliases, wait_past

__all__ = ["aliases"]

# "1 tokens", "1 key-value entries", "1 more seconds": one, then a word ending in s (after up to
# two other words). Words that end in s in the singular are allowed.
_ONE_PLURAL = re.compile(r"(?<![\d.,])\b1 (?:[a-z-]+ ){0,2}?([a-z-]+s)\b")
_SINGULAR_S = {"process", "address", "class", "status", "alias", "access", "success", "pass"}
# "2 token", "0 session": a number other than one, then a counted noun in the singular.
_MANY_SINGULAR = re.compile(
    r"(?<![\d.,])\b(?:0|[2-9]|[1-9][\d,]*\d) (?:more )?"
    r"(token|session|key-value entry|audit event|record|revocation|second|lockout entry|"
    r"attempt|mismatch|user|event|entry)\b(?![-s])"
)
_DOUBLED = re.compile(r"(?<!\.)\.\.(?!\.)|[,;:]\.|\.[,;]|\?\.|!\.|\s\.(?:\s|$)")
_ADVICE = re.compile(r"(?:^|[.:;]\s+)(Check|Run|Set|Give|Pass|Choose) ")


def wording_problems(text: str) -> list[str]:
    """What is wrong with ``text`` as English a person reads: empty when nothing is."""
    problems = []
    for match in _ONE_PLURAL.finditer(text):
        if match.group(1) not in _SINGULAR_S:
            problems.append(f"plural after 1: {match.group(0)!r}")
    problems += [f"singular after a number: {m.group(0)!r}" for m in _MANY_SINGULAR.finditer(text)]
    problems += [f"doubled punctuation: {m.group(0)!r}" for m in _DOUBLED.finditer(text)]
    for line in text.splitlines():
        verbs = [m.group(1) for m in _ADVICE.finditer(line)]
        problems += [
            f"advice given twice ({verb}): {line!r}" for verb in set(verbs) if verbs.count(verb) > 1
        ]
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if s.strip()]
        repeated = {s for s in sentences if sentences.count(s) > 1}
        problems += [f"sentence repeated: {s!r}" for s in repeated]
    return problems


@pytest.mark.parametrize(
    "bad",
    [
        "removed 1 sessions.",
        "Wrote 1 records of 'default'.",
        "kept 1 key-value entries",
        "locked for 1 more seconds",
        "removed 2 token, 0 session.",
        "Storage 'x' is unavailable: Connection refused.. Check that it runs.",
        "failed: bad value.. ",
        "Redis is down. Check that the server is up. Check that its service is running.",
        "The storage failed. Retry. The storage failed. Retry.",
    ],
)
def test_the_checker_catches_bad_wording(bad: str) -> None:
    assert wording_problems(bad), bad


@pytest.mark.parametrize(
    "good",
    [
        "removed 1 token, 1 session, 1 key-value entry.",
        "removed 2 tokens, 0 sessions, 1,200 key-value entries.",
        "Wrote 1 record of 'default' to backup.gz (1 token, 0 sessions).",
        "  ... and 5 more",
        "tokens: 1 read (0.1 s), 1 process, 1 address",
        "Storage 'x' is unavailable: Connection refused. Its settings are AUTHFW['STORAGES']['x'].",
    ],
)
def test_the_checker_passes_good_wording(good: str) -> None:
    assert wording_problems(good) == []


def test_counted_and_sentence() -> None:
    assert counted(1, "key-value entry", "key-value entries") == "1 key-value entry"
    assert counted(0, "token") == "0 tokens"
    assert counted(1_234, "session") == "1,234 sessions"
    assert sentence("Connection refused.") == "Connection refused."
    assert sentence("Connection refused") == "Connection refused."
    assert sentence("Error 111. Connection refused..") == "Error 111. Connection refused."
    assert sentence("Is it up?") == "Is it up?"


# The commands ----------------------------------------------------------------------------------


def fill(storage: AuthStorage, make_user: Callable[..., str], count: int) -> None:
    """``count`` live records of each kind, and ``count`` of each kind that expire at once."""
    user = make_user()
    soon = utcnow() + SHORT
    for i in range(count):
        storage.store_token(AuthTokenFactory.build(user_id=user))
        storage.store_token(
            AuthTokenFactory.build(user_id=user, expires_at=soon, refresh_expires_at=soon)
        )
        storage.store_session(SessionData(session_id=f"live-{uuid.uuid4().hex}", user_id=user))
        storage.store_session(
            SessionData(session_id=f"old-{uuid.uuid4().hex}", user_id=user, expires_at=soon)
        )
        storage.kv_set(f"live:{i}", b"x")
        storage.kv_set(f"old:{i}", b"x", ttl=SHORT)
        storage.append_audit(AuditEvent(action="login", outcome=True, user_id=user))


class Transcript:
    """Everything the commands said: stdout, stderr and the text of each CommandError."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def run(self, *args: str, fails: bool = False) -> str:
        out, err = io.StringIO(), io.StringIO()
        error: CommandError | None = None
        try:
            call_command(*args, stdout=out, stderr=err)
        except CommandError as exc:
            error = exc
        assert (error is not None) == fails, f"{args}: {error or out.getvalue()}"
        if error is not None:
            self.texts.append((" ".join(args), str(error)))
        self.texts.append((" ".join(args), out.getvalue() + err.getvalue()))
        return out.getvalue()

    def problems(self) -> list[str]:
        return [f"{command}: {p}" for command, text in self.texts for p in wording_problems(text)]


def _down_cache(settings: Any) -> dict[str, Any]:
    # A Redis server nobody runs: a loopback port that refuses connections.
    settings.CACHES = {
        **settings.CACHES,
        "authfw-wording-down": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        },
    }
    return {
        "BACKEND": "django_authfw.storage.CacheStorage",
        "OPTIONS": {"cache": "authfw-wording-down", "key_prefix": "authfw-wording-down:"},
    }


def _redis_storage_down() -> dict[str, Any]:
    return {
        "BACKEND": "django_authfw.storage.RedisStorage",
        "OPTIONS": {
            "url": "redis://127.0.0.1:9/0",
            "key_prefix": "authfw-wording-down:",
            "timeout": 0.5,
            "retry_attempts": 1,
            "retry_delay": 0.01,
        },
    }


@pytest.mark.parametrize("count", [1, 2])
def test_every_commands_output_reads_right(
    aliases: Any,
    settings: Any,
    make_user: Callable[..., str],
    tmp_path: Path,
    count: int,
) -> None:
    storages = aliases(
        default="memory",
        src="memory",
        dst="memory",
        copy="memory",
        down=_down_cache(settings),
        redis_down=_redis_storage_down(),
    )
    fill(storages["src"], make_user, count)
    wait_past()
    said = Transcript()
    backup = str(tmp_path / "backup.jsonl.gz")

    said.run("authfw_stats", "--storage", "src")
    said.run("authfw_cleanup", "--storage", "src", "--dry-run")
    said.run("authfw_cleanup", "--storage", "src")
    said.run("authfw_cleanup", "--storage", "src")  # nothing left
    said.run("authfw_backup", backup, "--storage", "src")
    said.run("authfw_restore", backup, "--storage", "dst", "--dry-run")
    said.run("authfw_restore", backup, "--storage", "dst")
    said.run("authfw_restore", backup, "--storage", "dst", fails=True)  # not empty
    said.run("authfw_restore", backup, "--storage", "dst", "--merge")
    said.run("authfw_restore", backup, "--storage", "dst", "--replace")
    said.run("authfw_migrate", "--from", "src", "--to", "copy", "--dry-run")
    said.run("authfw_migrate", "--from", "src", "--to", "copy", "--verify")
    bench = ["--seconds", "0.02", "--tokens", str(count), "--processes", str(count)]
    said.run("authfw_bench", "--storage", "copy", *bench, "--grow-to", str(count + 1))

    # Lockouts: `count` usernames locked out, then lifted.
    framework = AuthFramework()
    for i in range(count):
        for _ in range(settings.AUTHFW.get("LOCKOUT_THRESHOLD", 5)):
            with pytest.raises(AuthError):  # InvalidCredentials, then AccountLocked
                framework.authenticate(f"nobody-{i}", "wrong password")
    said.run("authfw_unlock", "--username", "nobody-0", "--dry-run")
    said.run("authfw_unlock", "--username", "nobody-0", "--ip", "127.0.0.1")
    said.run("authfw_unlock", "--username", "nobody-0")

    # A Redis server that is down, behind a django-redis cache and behind RedisStorage.
    for alias in ("down", "redis_down"):
        said.run("authfw_stats", "--storage", alias, fails=True)
        said.run("authfw_cleanup", "--storage", alias, fails=True)
        said.run("authfw_backup", str(tmp_path / f"{alias}.gz"), "--storage", alias, fails=True)
        said.run("authfw_restore", backup, "--storage", alias, fails=True)
        said.run("authfw_migrate", "--from", "src", "--to", alias, fails=True)
    settings.AUTHFW = {**settings.AUTHFW, "LOCKOUT_STORAGE": "redis_down"}
    said.run("authfw_unlock", "--username", "nobody-0", fails=True)

    assert said.problems() == [], "\n".join(said.problems())
    # The plurals were really exercised: the outputs name the counts in words.
    everything = "\n".join(text for _, text in said.texts)
    noun = "token" if count == 1 else "tokens"
    assert f"{count} {noun}" in everything
