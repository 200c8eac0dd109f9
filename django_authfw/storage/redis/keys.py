"""Redis key names under a storage's prefix (``auth:`` by default).

=============================  ======================================================
``<prefix>token:<rid>``        the token as compact JSON; TTL until its ``retain_until``.
                               ``rid``, its record id, is derived from its access digest
                               (``tokens.token_id_for``) and is the token id of every
                               token the framework mints
``<prefix>refresh:<rrid>``     ``rid`` of the token whose refresh digest gives ``rrid``
                               (the same derivation); same TTL
``<prefix>id:<token_id>``      ``rid`` of a token whose id is not its ``rid`` (imported
                               from elsewhere); same TTL
``<prefix>user:<uid>:tokens``  SET of the ``rid`` of the user's tokens; TTL of its
                               longest-lived token
``<prefix>session:<id>``       the session as JSON; TTL until ``expires_at``
``<prefix>user:<uid>:sessions``  SET of the user's session ids
``<prefix>kv:<key>``           the raw bytes; TTL if set with one, else none
``<prefix>audit:{log}:order``  sorted set ordering the audit log by time
``<prefix>audit:{log}:events`` hash event id -> event JSON
``<prefix>audit:{log}:seq``    append counter (orders events of the same microsecond)
=============================  ======================================================

The ``{log}`` in the audit keys is a Redis Cluster hash tag: it puts the three audit keys in
one slot so that appending stays one atomic script there too.
"""

from __future__ import annotations

import re

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """Escape ``text`` for a SCAN ``MATCH`` pattern (a prefix may contain ``*`` or ``[``)."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


class Keyspace:
    """Builds and parses the key names of one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.token_prefix = f"{prefix}token:"
        self.session_prefix = f"{prefix}session:"
        self.kv_prefix = f"{prefix}kv:"
        self.audit_order = f"{prefix}audit:{{log}}:order"
        self.audit_events = f"{prefix}audit:{{log}}:events"
        self.audit_seq = f"{prefix}audit:{{log}}:seq"

    def token(self, token_id: str) -> str:
        return self.token_prefix + token_id

    def refresh(self, refresh_rid: str) -> str:
        """The pointer key of a refresh digest (named by ``token_id_for(refresh_digest)``)."""
        return f"{self.prefix}refresh:{refresh_rid}"

    def by_id(self, token_id: str) -> str:
        """The pointer key of a token whose id is not its record id."""
        return f"{self.prefix}id:{token_id}"

    def user_tokens(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:tokens"

    def session(self, session_id: str) -> str:
        return self.session_prefix + session_id

    def user_sessions(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:sessions"

    def kv(self, key: str) -> str:
        return self.kv_prefix + key

    def pattern(self, kind: str) -> str:
        """SCAN pattern of one kind of key: ``token``, ``session``, ``kv``, ``user_tokens``..."""
        escaped = glob_escape(self.prefix)
        if kind == "user_tokens":
            return f"{escaped}user:*:tokens"
        if kind == "user_sessions":
            return f"{escaped}user:*:sessions"
        if kind == "all":
            return f"{escaped}*"
        return f"{escaped}{kind}:*"

    @staticmethod
    def strip(key: bytes | str, prefix: str) -> str:
        """The id part of a key returned by SCAN."""
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(prefix) :]
