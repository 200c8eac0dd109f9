"""The app's models, for Django's app registry, the admin and migrations.

They are defined beside the storage that queries them, in
:mod:`django_authfw.storage.database.models` (the storage layer imports nothing above the
records layer); this module is where Django and user code find them, as before.
"""

from __future__ import annotations

from .storage.database.models import AuditLog, KVEntry, Session, Token

__all__ = ["AuditLog", "KVEntry", "Session", "Token"]
