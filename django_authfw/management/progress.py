"""Helpers shared by the ``authfw_*`` management commands.

Option parsing for storage aliases and batch sizes, turning storage errors into a
:class:`~django.core.management.CommandError` that says what to check, and a one-line progress
bar drawn only when the output is a terminal.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from django.core.management import CommandError
from django.core.management.base import OutputWrapper

from ..conf import conf
from ..exceptions import StorageError, StorageUnavailable
from ..storage import AuthStorage, get_storage
from ..wording import counted, sentence


def positive_int(text: str) -> int:
    """argparse ``type`` for ``--batch-size``: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_batch_size(parser: argparse.ArgumentParser, default: int = 1000) -> None:
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"Records per batch (default {default}); smaller keeps each transaction shorter.",
    )


def configured_aliases() -> list[str]:
    return list(conf.STORAGES)


def check_alias(alias: str) -> str:
    """Return ``alias`` if ``AUTHFW["STORAGES"]`` defines it, else raise CommandError."""
    known = configured_aliases()
    if alias not in known:
        raise CommandError(
            f"Unknown storage alias {alias!r}. AUTHFW['STORAGES'] defines: "
            f"{', '.join(known) or 'nothing'}."
        )
    return alias


def selected_aliases(requested: list[str] | None) -> list[str]:
    """The aliases named by repeated ``--storage`` options, or every configured one."""
    if not requested:
        return configured_aliases()
    seen: dict[str, None] = {}
    for alias in requested:
        seen[check_alias(alias)] = None
    return list(seen)


def open_storage(alias: str) -> AuthStorage:
    """Build (or reuse) the storage of ``alias``; a configuration error becomes CommandError."""
    check_alias(alias)
    try:
        return get_storage(alias)
    except StorageError as exc:
        raise storage_failure(alias, exc) from exc


def storage_failure(alias: str, exc: BaseException) -> CommandError:
    """A CommandError for a storage that failed, saying what to check (once: a storage's own
    message may already say it)."""
    message = sentence(exc)
    where = f"AUTHFW['STORAGES'][{alias!r}] (and CACHES or DATABASES)"
    if isinstance(exc, StorageUnavailable):
        hint = (
            f"Its settings are {where}."
            if "Check " in message
            else "Check that its service (database server or Redis) is running and reachable "
            f"with the settings of {where}."
        )
        return CommandError(f"Storage {alias!r} is unavailable: {message} {hint}")
    if isinstance(exc, StorageError):
        return CommandError(
            f"Storage {alias!r} failed: {message} Check AUTHFW['STORAGES'][{alias!r}] and, for "
            "a database storage, that `manage.py migrate` has been run."
        )
    return CommandError(f"Storage {alias!r} failed: {message}")


MIN_RATE_SECONDS = 1.0
"""The rate and time left appear once a label has been counting this long."""


class ProgressBar:
    """A one-line progress bar on ``stream``, redrawn in place with ``\\r``, with the rate
    (records per second) and, when the total is known, the time left::

        tokens             [###########...................]  38% 38,000/100,000 9,512/s 0:07 left

    Disabled (drawing nothing) unless ``enabled``; commands pass ``self.stdout.isatty()`` so
    that cron mail and piped output only get the summary lines. The rate of a label is counted
    from the moment the previous label's last update came (or the bar was made), so each kind
    of record gets its own rate. ``clock`` (seconds, monotonic) is for tests.
    """

    def __init__(
        self,
        stream: OutputWrapper,
        *,
        enabled: bool,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.enabled = enabled
        self.width = width
        self._clock = clock
        self._drawn = False
        self._last = 0.0
        self._label: str | None = None
        self._started = clock()
        self._seen = self._started
        self._done = 0

    def update(self, label: str, done: int, total: int | None) -> None:
        """Show ``done`` of ``total`` records of ``label`` (at most ten redraws a second)."""
        if not self.enabled:
            return
        now = self._clock()
        if label != self._label or done < self._done:
            # A new kind (or a count that started again): its rate starts where the last
            # update left off.
            self._label, self._started = label, self._seen
        self._seen, self._done = now, done
        if now - self._last < 0.1 and not (total is not None and done >= total):
            return
        self._last = now
        if total:
            shown = min(done, total)
            filled = round(self.width * shown / total)
            bar = "#" * filled + "." * (self.width - filled)
            text = f"{label:<18} [{bar}] {100 * shown // total:3d}% {done:,}/{total:,}"
        else:
            text = f"{label:<18} {counted(done, 'record')}"
        text += self._speed(done, total, now)
        self.stream.write(f"\r{text}\x1b[K", ending="")
        self.stream.flush()
        self._drawn = True

    def _speed(self, done: int, total: int | None, now: float) -> str:
        """`` 9,512/s 0:07 left``: the rate so far and, with a total, the time left at it."""
        elapsed = now - self._started
        if elapsed < MIN_RATE_SECONDS or done <= 0:
            return ""  # a rate over a few milliseconds says nothing yet
        rate = done / elapsed
        text = f" {rate:,.0f}/s"
        if total and done < total:
            text += f" {duration((total - done) / rate)} left"
        return text

    def finish(self) -> None:
        """Clear the bar so the next line of output starts on a clean line."""
        if self._drawn:
            self.stream.write("\r\x1b[K", ending="")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()


def duration(seconds: float) -> str:
    """``"0:07"``, ``"12:30"``, ``"2:05:00"``: seconds as [h:]mm:ss, rounded up."""
    whole = max(0, int(-(-seconds // 1)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 token"``, ``"2 tokens"``, with thousands separators (``ngettext``)."""
    return counted(count, singular, plural_form)
