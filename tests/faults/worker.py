"""The processes the fault tests start: ``python -m tests.faults.worker COMMAND ...``.

Run from the repository root with ``DJANGO_SETTINGS_MODULE=testproject.settings`` and the
services in ``DATABASE_URL`` / ``REDIS_URL`` (the fault tests' own servers). Each prints JSON
lines on stdout.

* ``seed``: a user and ``--tokens`` tokens (with as many audit events, and a few sessions and
  key-value entries) in the ``default`` storage (DatabaseStorage).
* ``verify-loop``: a long-lived process, not a request cycle: ``verify_token`` in a loop on
  the ``default`` storage until stdin closes; a line of running counts every 50 ms.
* ``check``: verify every seeded token through ``--alias``, and count the records there.

Raw tokens are derived from ``--seed`` (an HMAC per token number), so the processes agree on
them without writing a secret anywhere.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

USERNAME = "faults-user"


def raw_access_token(seed: str, number: int) -> str:
    from django_authfw import tokens

    mac = hmac.new(seed.encode(), f"access:{number}".encode(), hashlib.sha256).digest()
    return tokens.ACCESS_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def emit(**values: Any) -> None:
    sys.stdout.write(json.dumps(values) + "\n")
    sys.stdout.flush()


def seed(options: argparse.Namespace) -> None:
    from django.contrib.auth import get_user_model

    from django_authfw import tokens
    from django_authfw.records import AuditEvent, AuthToken, KVEntry, SessionData, utcnow
    from django_authfw.storage import get_storage

    storage = get_storage("default")
    user, _ = get_user_model()._default_manager.get_or_create(username=USERNAME)
    user_id = str(user.pk)
    now = utcnow()
    batch: list[AuthToken] = []
    events: list[AuditEvent] = []
    for number in range(options.tokens):
        batch.append(
            AuthToken(
                token_id=f"fault-{number:06d}",
                user_id=user_id,
                access_digest=tokens.digest(raw_access_token(options.seed, number)),
                expires_at=now + timedelta(hours=2),
                refresh_digest=tokens.digest(tokens.new_secret(tokens.REFRESH_PREFIX)),
                refresh_expires_at=now + timedelta(days=1),
                family_id=f"family-{number:06d}",
                permissions=["auth.view_user"],
                metadata={"n": number},
            )
        )
        events.append(
            AuditEvent(
                action="token_issued",
                outcome=True,
                user_id=user_id,
                created_at=now - timedelta(seconds=number),
                metadata={"n": number},
                event_id=f"fault-event-{number:06d}",
            )
        )
        if len(batch) == 500:
            storage.import_tokens(batch)
            storage.import_audit(events)
            batch, events = [], []
    storage.import_tokens(batch)
    storage.import_audit(events)
    storage.import_sessions(
        SessionData(session_id=f"fault-session-{n}", user_id=user_id, data={"n": n})
        for n in range(options.tokens // 10)
    )
    storage.import_kv(
        KVEntry(key=f"fault-kv-{n}", value=str(n).encode()) for n in range(options.tokens // 10)
    )
    emit(seeded=storage.statistics())


def verify_loop(options: argparse.Namespace) -> None:
    from django_authfw import AuthFramework

    auth = AuthFramework()  # the "default" alias: DatabaseStorage, persistent connection
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    ok = 0
    errors: Counter[str] = Counter()
    last = ""
    number = 0
    next_report = 0.0
    while not stop.is_set():
        raw = raw_access_token(options.seed, number % options.tokens)
        number += 1
        try:
            auth.verify_token(raw)
        except Exception as exc:  # counted by type: the test asserts which ones occur
            errors[type(exc).__name__] += 1
            last = type(exc).__name__
            time.sleep(0.01)  # a worker would back off a little
        else:
            ok += 1
            last = "ok"
        now = time.monotonic()
        if now >= next_report:
            emit(ok=ok, errors=dict(errors), last=last)
            next_report = now + 0.05
        time.sleep(0.001)  # the machine is shared: about 500 verifications a second at most
    emit(ok=ok, errors=dict(errors), last=last, final=True)


def check(options: argparse.Namespace) -> None:
    from django_authfw import AuthFramework
    from django_authfw.storage import get_storage

    auth = AuthFramework(storage=options.alias)
    outcomes: Counter[str] = Counter()
    for number in range(options.tokens):
        try:
            auth.verify_token(raw_access_token(options.seed, number))
        except Exception as exc:
            outcomes[type(exc).__name__] += 1
        else:
            outcomes["verified"] += 1
    source, target = get_storage("default"), get_storage(options.alias)
    emit(
        outcomes=dict(outcomes),
        source=source.statistics(),
        target=target.statistics(),
        source_audit=source.count_audit(),
        target_audit=target.count_audit(),
    )


def main() -> None:
    import django

    parser = argparse.ArgumentParser(prog="python -m tests.faults.worker")
    parser.add_argument("command", choices=["seed", "verify-loop", "check"])
    parser.add_argument("--seed", required=True, help="derives the raw tokens")
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--alias", default="cache")
    options = parser.parse_args()
    django.setup()
    {"seed": seed, "verify-loop": verify_loop, "check": check}[options.command](options)


if __name__ == "__main__":
    main()
