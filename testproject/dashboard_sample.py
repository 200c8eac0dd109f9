"""Sample activity for the admin's auth dashboard: what the browser tests and the screenshots
(testproject/screenshots.py) show.

Two parts:

* a week of history, hour by hour (a daily rhythm of logins, refreshes and sessions, a few
  failed logins, and one night of password guessing from two addresses), written as the
  framework's own events would be (same actions, resources and metadata), backdated, through
  the storage's ``import_audit``;
* real activity now, through :class:`~django_authfw.AuthFramework`: logins, a refresh token
  replayed (a reuse detection that revokes its family), a revocation, sessions, tokens on the
  second storage alias, and five wrong passwords for ``mallory`` from one address, which lock
  that username out.

Nothing is random: the same call gives the same picture (times are relative to now).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from django_authfw import AuthFramework
from django_authfw import audit as events
from django_authfw.exceptions import AuthError
from django_authfw.records import AuditEvent, AuthToken, replace, utcnow
from django_authfw.request_info import RequestInfo
from django_authfw.storage import DatabaseStorage

PASSWORD = "sample passphrase 13"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "mallory")
LOCKED_USERNAME = "mallory"
LOCKED_FROM = "198.51.100.23"
ATTACKERS = ("203.0.113.66", "203.0.113.67")
GUESSED = ("admin", "root", "test", "oracle", "alice")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Version/17.5 Safari/605.1.15",
    "okhttp/4.12.0",
)


@dataclass(frozen=True, slots=True)
class Sample:
    """What :func:`populate` made, for the tests to look for."""

    usernames: tuple[str, ...]
    locked_username: str
    locked_from: str
    attackers: tuple[str, ...]
    history_events: int


def populate(*, days: int = 7) -> Sample:
    """Write the sample users, history and current activity; return what they are."""
    model = get_user_model()
    ids: dict[str, str] = {}
    for name in USERS:
        existing = model._default_manager.filter(**{model.USERNAME_FIELD: name}).first()
        user: AbstractBaseUser = existing or AuthFramework().register_user(name, PASSWORD)
        ids[name] = str(user.pk)
    history = list(_history(ids, days))
    DatabaseStorage().import_audit(history)
    _now(ids)
    return Sample(USERS, LOCKED_USERNAME, LOCKED_FROM, ATTACKERS, len(history))


def _info(number: int, address: str | None = None) -> RequestInfo:
    return RequestInfo(address or f"192.0.2.{10 + number % 40}", AGENTS[number % len(AGENTS)])


def _history(ids: dict[str, str], days: int) -> list[AuditEvent]:
    """Backdated events, hour by hour, the framework's shapes."""
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    made: list[AuditEvent] = []
    names = [name for name in USERS if name != LOCKED_USERNAME]
    for back in range(days * 24, 0, -1):
        hour = now - timedelta(hours=back)
        # Busier by day than by night (UTC), a little busier on weekdays.
        daylight = 0.5 + 0.5 * math.sin((hour.hour - 6) / 24 * 2 * math.pi)
        busy = int(6 + 18 * daylight + (4 if hour.weekday() < 5 else 0))
        for n in range(busy):
            name = names[(back + n) % len(names)]
            info = _info(back + n)
            moment = hour + timedelta(minutes=(n * 53) % 60, seconds=n % 60)
            token = AuthToken(
                token_id=f"sample{back:04d}{n:02d}",
                user_id=ids[name],
                access_digest="0" * 64,
                expires_at=moment,
                family_id=f"family{back:04d}{n:02d}",
            )
            made.append(replace(events.grant_event("login", token, info), created_at=moment))
            if n % 2 == 0:
                made.append(
                    replace(
                        events.grant_event("refresh", token, info),
                        created_at=moment + timedelta(minutes=5),
                    )
                )
            if n % 4 == 0:
                made.append(
                    replace(
                        events.session_event(
                            ids[name],
                            True,
                            info,
                            created=True,
                            session_id=f"sess{back:04d}{n:02d}xxxxxxxx",
                        ),
                        created_at=moment + timedelta(seconds=30),
                    )
                )
            if n % 7 == 3:
                made.append(
                    replace(
                        events.revoke_event(token, "access", 1, info),
                        created_at=moment + timedelta(minutes=9),
                    )
                )
            if n % 23 == 4:
                reason = "wrong_password"
                made.append(
                    replace(
                        events.login_failure_event(ids[name], name, reason, info),
                        created_at=moment - timedelta(seconds=20),
                    )
                )
        # One night of password guessing, two days ago.
        if back in range(48, 44, -1):
            for n in range(25 + back % 4 * 5):
                address = ATTACKERS[n % 2]
                guessed = GUESSED[n % len(GUESSED)]
                user_id = ids.get(guessed)
                reason = "wrong_password" if user_id else "unknown_user"
                made.append(
                    replace(
                        events.login_failure_event(
                            user_id, guessed, reason, RequestInfo(address, "python-requests/2.32")
                        ),
                        created_at=hour + timedelta(minutes=n * 2),
                    )
                )
        if back % 31 == 0:
            token = AuthToken(
                token_id=f"reused{back:04d}",
                user_id=ids[names[back % len(names)]],
                access_digest="0" * 64,
                expires_at=hour,
                family_id=f"family-reused{back:04d}",
                replaced_by=f"next{back:04d}",
            )
            made.append(
                replace(
                    events.reuse_event(token, 2, _info(back, "203.0.113.99")),
                    created_at=hour + timedelta(minutes=17),
                )
            )
    return made


def _now(ids: dict[str, str]) -> None:
    """Real activity through the framework, so that every panel has something current."""
    framework = AuthFramework()
    here = RequestInfo("192.0.2.10", AGENTS[0])
    pairs = [framework.authenticate(name, PASSWORD, request_info=here) for name in USERS[:4]]
    # A refresh token used twice: the second use is a reuse detection.
    framework.refresh(pairs[0].refresh_token or "", request_info=here)
    with contextlib.suppress(AuthError):
        framework.refresh(pairs[0].refresh_token or "", request_info=RequestInfo("203.0.113.99"))
    framework.revoke_token(pairs[1].access_token, request_info=here)
    for name in USERS[:3]:
        framework.create_session(name, {"theme": "dark"}, request_info=here)
    # Tokens on the second storage alias too (the storage panel lists every alias).
    second = AuthFramework("cache")
    for name in USERS[2:5]:
        second.authenticate(name, PASSWORD, request_info=here)
    # Wrong passwords until the username is locked out.
    for _ in range(6):
        with contextlib.suppress(AuthError):
            framework.authenticate(
                LOCKED_USERNAME, "not the password", request_info=RequestInfo(LOCKED_FROM)
            )
