"""Audit action names and the words people read for them.

The names are what the audit log stores (``auth_audit_log.action``, ``AuditEvent.action``);
the labels are what the admin shows: in the audit list, its action filter, the titles of
events, and the dashboard. A name the framework does not write (an application may audit its
own actions with :meth:`AuthFramework.audit`) gets a label made from the name.

Layer 1: the storage's models use :func:`event_title` for their ``__str__``.
"""

from __future__ import annotations

REGISTER = "register"
LOGIN = "login"
REFRESH = "refresh"
REFRESH_REUSE = "refresh_reuse"
#: A rotated refresh token replayed within AUTHFW["REFRESH_REUSE_GRACE"]: a new pair, no revocation.
REFRESH_GRACE = "refresh_grace"
REVOKE = "revoke"
REVOKE_ALL = "revoke_all"
LOGOUT = "logout"
LOCKOUT = "lockout"
#: A lockout lifted by hand (the admin, ``manage.py authfw_unlock``, ``reset_lockout``).
UNLOCK = "unlock"
SESSION_CREATE = "session_create"
SESSION_END = "session_end"
PASSWORD_CHANGE = "password_change"
USER_DEACTIVATED = "user_deactivated"

#: Every action the framework itself writes, with its label.
LABELS: dict[str, str] = {
    REGISTER: "Registration",
    LOGIN: "Login",
    REFRESH: "Token refresh",
    REFRESH_REUSE: "Refresh token reuse",
    REFRESH_GRACE: "Refresh in grace period",
    REVOKE: "Token revocation",
    REVOKE_ALL: "Revocation of all tokens",
    LOGOUT: "Logout",
    LOCKOUT: "Lockout",
    UNLOCK: "Lockout lift",
    SESSION_CREATE: "Session start",
    SESSION_END: "Session end",
    PASSWORD_CHANGE: "Password change",
    USER_DEACTIVATED: "User deactivation",
}

#: Every action the framework itself writes. :meth:`AuthFramework.audit` accepts others too.
ACTIONS = frozenset(LABELS)

#: Events whose outcome is fixed by what they are read better in words of their own than as
#: "<label> failed" ("Lockout failed" would say the lock did not happen).
_TITLES: dict[tuple[str, bool], str] = {
    (LOCKOUT, False): "Lockout triggered",
    (REFRESH_REUSE, False): "Refresh token reuse detected",
}

SUCCESS_LABEL = "Success"
FAILURE_LABEL = "Failure"


def action_label(action: str) -> str:
    """The label of an action: ``"password_change"`` -> ``"Password change"``."""
    label = LABELS.get(action)
    if label is not None:
        return label
    words = action.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else action


def outcome_label(outcome: bool) -> str:
    """``"Success"`` or ``"Failure"``."""
    return SUCCESS_LABEL if outcome else FAILURE_LABEL


def event_title(action: str, outcome: bool) -> str:
    """What an event was, in one phrase: ``"Login failed"``, ``"Password change succeeded"``."""
    title = _TITLES.get((action, outcome))
    if title is not None:
        return title
    return f"{action_label(action)} {'succeeded' if outcome else 'failed'}"
