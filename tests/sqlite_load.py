"""Many threads registering and logging in at once on a SQLite file, in a process of its own.

``python -m tests.sqlite_load DB_PATH OPTIONS_JSON [THREADS]`` migrates a fresh SQLite file
whose ``DATABASES["default"]["OPTIONS"]`` are OPTIONS_JSON, releases THREADS threads (40 by
default) together with a ``threading.Barrier``, each registering one user and logging it in
through ``AuthFramework`` (tokens, audit log and users all in that file), and prints one JSON
line: ``{"ok": n, "errors": [{"type": ..., "message": ...}, ...]}``.

A process of its own because the test run's own database is PostgreSQL or an in-memory SQLite:
SQLite's file locking is what this exercises.
"""

from __future__ import annotations

import json
import os
import sys
import threading

PASSWORD = "correct horse battery staple"


def main(argv: list[str]) -> None:
    path, options = argv[1], json.loads(argv[2])
    threads = int(argv[3]) if len(argv) > 3 else 40
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    os.environ.pop("AUTHFW_TEST_DB_NAME", None)
    os.environ.pop("REDIS_URL", None)

    import django
    from django.conf import settings

    settings.DATABASES["default"]["OPTIONS"] = options
    settings.PASSWORD_HASHERS = ["tests.hashers.CountingArgon2PasswordHasher"]
    django.setup()

    from django.core.management import call_command
    from django.db import connection

    from django_authfw import AuthFramework

    call_command("migrate", verbosity=0)
    connection.close()

    auth = AuthFramework()
    barrier = threading.Barrier(threads)
    ok: list[int] = []
    errors: list[dict[str, str]] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            auth.register_user(f"user-{i}", PASSWORD)
            auth.authenticate(f"user-{i}", PASSWORD)
            ok.append(i)
        except Exception as exc:
            errors.append({"type": type(exc).__name__, "message": str(exc)})
        finally:
            connection.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps({"ok": len(ok), "errors": errors}))


if __name__ == "__main__":
    main(sys.argv)
