"""Counted nouns in the messages people read (command output, errors): ``"1 session"``,
``"2 sessions"``, through Django's ``ngettext`` so that a translation gets the plural forms of
its language."""

from __future__ import annotations

from django.utils.translation import ngettext


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` with thousands separators and the noun in the form that number takes.

    ``plural`` defaults to ``singular + "s"``: ``counted(1, "token")`` is ``"1 token"``,
    ``counted(1_200, "key-value entry", "key-value entries")`` is ``"1,200 key-value entries"``.
    """
    word = ngettext(singular, plural or singular + "s", count)
    return f"{count:,} {word}"


def sentence(text: object) -> str:
    """``text`` ending with exactly one full stop (or its own ``?``/``!``), so that another
    sentence can follow: an exception's message may or may not end with one."""
    stripped = str(text).rstrip().rstrip(".").rstrip()
    if not stripped:
        return ""
    return stripped if stripped.endswith(("?", "!")) else stripped + "."
