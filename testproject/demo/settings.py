"""Settings of ``bash testproject/demo.sh``: the test project's, plus where the demo keeps state.

Without ``REDIS_URL``: users, tokens, sessions and the audit log in the database (SQLite unless
``DATABASE_URL`` says otherwise), failed-login counters in the process's memory (locmem). With
``REDIS_URL``: tokens, sessions and the counters in Redis; users and the audit log stay in the
database, where the admin shows them.
"""

from __future__ import annotations

import copy

from testproject.settings import *  # noqa: F403
from testproject.settings import AUTHFW, REDIS_URL

AUTHFW = copy.deepcopy(AUTHFW)
AUTHFW["LOCKOUT_STORAGE"] = "cache"
if REDIS_URL:
    AUTHFW["STORAGES"]["default"] = AUTHFW["STORAGES"]["cache"]
