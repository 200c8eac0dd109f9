"""The database backend: the storage contract on Django models (PostgreSQL, SQLite, ...).

* :mod:`.engine`: :class:`DatabaseStorage`, where each query goes and what it does;
* :mod:`.models`: the four tables (re-exported by :mod:`django_authfw.models`);
* :mod:`.rows`: records to rows and back, derived from the record schemas;
* :mod:`.queries`: upserts, batched deletes, keyset pages and bulk imports;
* :mod:`.counters`: atomic ``kv_incr``;
* :mod:`.fast_sql`: the hot statements written once (the ``fast_sql`` option);
* :mod:`.errors`: database errors as storage exceptions.
"""

from .engine import DatabaseStorage
from .errors import MissingUsers

__all__ = ["DatabaseStorage", "MissingUsers"]
