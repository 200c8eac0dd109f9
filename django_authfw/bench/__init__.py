"""The instrument behind ``manage.py authfw_bench``.

* :mod:`.runner`: timing loops and percentiles;
* :mod:`.workload`: the records a run stores, the operations it times, the cleanup;
* :mod:`.baselines`: raw redis-py ``GET`` and psycopg prepared ``SELECT`` loops;
* :mod:`.memory`: memory per stored token for each kind of store;
* :mod:`.probe`: what kind of store is behind a storage;
* :mod:`.workers`: ``--processes N``;
* :mod:`.profiling`: ``--profile``, where the time of a verification goes;
* :mod:`.suite`: one run over one storage alias;
* :mod:`.report`: the table and the JSON.

See docs/performance.md for the method and the figures measured.
"""
