"""Turning Django database errors into the storage exceptions of :mod:`django_authfw.exceptions`.

A lost or refused connection (or a database that is busy, full or shutting down) becomes
:class:`StorageUnavailable`, which callers may retry later; anything else the database refuses
becomes :class:`StorageError`. The original error stays chained as ``__cause__``.

A connection the error left unusable (the server restarted, or killed our backend) is closed
on the way out, so that the next call connects again. Django does that only at the start and
end of a request; a process that is not a request cycle (a worker, a consumer calling
``verify_token`` in a loop) would otherwise fail on the dead connection forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.db import (
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
)

from ...exceptions import StorageError, StorageUnavailable

# SQLSTATE classes that mean "cannot talk to the server right now": connection exception (08),
# insufficient resources (53), operator intervention such as shutdown or a statement timeout
# (57), system error (58).
_PG_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
_PG_UNDEFINED_TABLE = "42P01"

# sqlite3 result codes (Python 3.11+ exposes their names) that mean the file cannot be used now.
_SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR")
_SQLITE_UNAVAILABLE_EXTRA = frozenset({"SQLITE_FULL", "SQLITE_PROTOCOL", "SQLITE_NOTADB"})
# Another connection holds the lock: the file is fine, and a retry (or waiting) would succeed.
_SQLITE_LOCKED = ("SQLITE_BUSY", "SQLITE_LOCKED")
#: What Django's SQLite OPTIONS should say for concurrent writers (Django 5.1+): BEGIN IMMEDIATE
#: takes the write lock when a transaction starts, so that writers queue in SQLite's busy
#: handler (for up to ``timeout`` seconds) instead of failing when a read lock cannot be
#: upgraded. Checked by authfw.W030.
SQLITE_RECOMMENDED_OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": 20}


class MissingUsers(StorageError):
    """An import names users that do not exist in the target database.

    ``missing_user_ids`` lists them (as strings); nothing of the import was written.
    """

    def __init__(self, message: str, missing_user_ids: list[str]) -> None:
        super().__init__(message)
        self.missing_user_ids = missing_user_ids


def _sqlstate(exc: BaseException | None) -> str | None:
    # psycopg 3 calls it ``sqlstate``, psycopg2 ``pgcode``.
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def _is_unavailable(exc: Error) -> bool:
    """Whether ``exc`` says the database cannot be reached or used right now."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    module = type(cause).__module__ if cause is not None else ""
    if module.startswith("psycopg"):
        state = _sqlstate(cause)
        # A failed connect or a connection dropped mid-query carries no SQLSTATE at all.
        return state is None or state[:2] in _PG_UNAVAILABLE_CLASSES
    if module == "sqlite3":
        name = getattr(cause, "sqlite_errorname", "") or ""
        return name.startswith(_SQLITE_UNAVAILABLE) or name in _SQLITE_UNAVAILABLE_EXTRA
    # Other drivers (MySQL, Oracle) raise OperationalError mostly for connection trouble.
    return True


def _is_missing_table(exc: Error) -> bool:
    cause = exc.__cause__
    if _sqlstate(cause) == _PG_UNDEFINED_TABLE:
        return True
    text = str(exc).lower()
    return "no such table" in text or ("table" in text and "doesn't exist" in text)


def _is_sqlite_locked(exc: Error) -> bool:
    cause = exc.__cause__
    if cause is None or type(cause).__module__ != "sqlite3":
        return False
    name = getattr(cause, "sqlite_errorname", "") or ""
    return name.startswith(_SQLITE_LOCKED) or "locked" in str(cause)


def translate(exc: Error, alias: str) -> StorageError:
    """Return the storage exception for a database error raised on connection ``alias``."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, OperationalError) and _is_sqlite_locked(exc):
        options = ", ".join(f"{k!r}: {v!r}" for k, v in SQLITE_RECOMMENDED_OPTIONS.items())
        return StorageUnavailable(
            f"The SQLite database {alias!r} is locked by another connection's write "
            f"({detail}); retry shortly. To make concurrent writers wait their turn instead "
            f"of failing, set DATABASES[{alias!r}]['OPTIONS'] = {{{options}}} (see "
            "docs/installation.md); for many concurrent writers use PostgreSQL."
        )
    if _is_unavailable(exc):
        return StorageUnavailable(
            f"The database {alias!r} cannot be reached or used right now ({detail}). Check "
            f"that the database server is running and accepting connections, and that "
            f"DATABASES[{alias!r}] (HOST, PORT, NAME, credentials) points at it."
        )
    if _is_missing_table(exc):
        return StorageError(
            f"A django_authfw table is missing in database {alias!r} ({detail}). "
            f"Run `python manage.py migrate --database {alias}`."
        )
    if isinstance(exc, IntegrityError):
        return StorageError(
            f"The database {alias!r} refused the write ({detail}): the record clashes with a "
            f"stored one (same id or token digest) or names a user that does not exist."
        )
    return StorageError(f"The database {alias!r} failed: {detail}")


def drop_if_unusable(alias: str, exc: Error) -> None:
    """Close the connection of ``alias`` if ``exc`` left it unusable, so the next call reconnects.

    As Django's ``close_if_unusable_or_obsolete()`` judges it: data and integrity errors leave
    the connection fine; after any other error, a ``SELECT 1`` (``is_usable()``) decides. Not
    inside an ``atomic()`` block: there the transaction is aborted after any error, so the test
    would fail on a sound connection, and the block's own exit rolls back and drops the
    connection if that rollback fails (``Atomic.__exit__``).
    """
    if isinstance(exc, DataError | IntegrityError) or alias not in connections:
        return
    connection = connections[alias]
    if connection.connection is None or connection.in_atomic_block:
        return
    if not connection.is_usable():
        # Closing a dead connection may itself fail; the caller gets the original error.
        with suppress(Error):
            connection.close()
        # close() clears the wrapper's connection even when closing failed.


@contextmanager
def database_errors(alias: str) -> Iterator[None]:
    """Re-raise database errors from the block as :class:`StorageError` subclasses, and close
    a connection the error left unusable (see :func:`drop_if_unusable`)."""
    try:
        yield
    except Error as exc:  # DatabaseError, and InterfaceError which is not one
        drop_if_unusable(alias, exc)
        raise translate(exc, alias) from exc
