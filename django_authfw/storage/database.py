"""DatabaseStorage: the storage contract on Django models (PostgreSQL, SQLite, ...)."""

from __future__ import annotations

from .base import AuthStorage


class DatabaseStorage(AuthStorage):
    """Placeholder, implemented in the next commit."""
