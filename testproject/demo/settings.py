"""Settings of ``bash testproject/demo.sh``: the test project's, plus where the demo keeps state.

Without ``REDIS_URL``: users, tokens, sessions and the audit log in the database (SQLite unless
``DATABASE_URL`` says otherwise), failed-login counters in the process's memory (locmem). With
``REDIS_URL``: tokens, sessions and the counters in Redis; users and the audit log stay in the
database, where the admin shows them.
"""

from __future__ import annotations

import copy

from testproject.settings import *  # noqa: F403
from testproject.settings import AUTHFW, DATABASES, REDIS_URL, SQLITE_OPTIONS

# SQLite (the demo's database without DATABASE_URL): BEGIN IMMEDIATE and a busy timeout, so that
# concurrent logins queue for the write lock instead of failing (system check authfw.W030).
for _database in DATABASES.values():
    if _database["ENGINE"] == "django.db.backends.sqlite3":
        _database["OPTIONS"] = {**SQLITE_OPTIONS, **_database.get("OPTIONS", {})}

AUTHFW = copy.deepcopy(AUTHFW)
AUTHFW["LOCKOUT_STORAGE"] = "cache"
if REDIS_URL:
    AUTHFW["STORAGES"]["default"] = AUTHFW["STORAGES"]["cache"]
