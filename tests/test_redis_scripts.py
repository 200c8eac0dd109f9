"""The Lua scripts run through redis-py's ``Script``: a server that lost them loads them again.

A fresh server, ``SCRIPT FLUSH`` or a failover to a replica that never ran a script answers
EVALSHA with NOSCRIPT; the call must still do its work exactly once. On a private server, so
that flushing scripts touches nobody else's.
"""

from __future__ import annotations

from pathlib import Path

from django_authfw.storage import RedisStorage
from django_authfw.storage.redis import engine as redis_engine

from .factories import AuthTokenFactory
from .redis_servers import private_server


def test_calls_survive_a_script_flush(tmp_path: Path) -> None:
    server = private_server(tmp_path)
    raw = server.client()
    storage = RedisStorage(url=f"redis://127.0.0.1:{server.port}/0", key_prefix="t:")
    try:
        token = AuthTokenFactory.build(user_id="7")
        storage.store_token(token)
        assert raw.script_flush()
        assert storage.kv_incr("n") == 1  # not idempotent: must run once, not twice
        assert raw.get("t:kv:n") is not None
        assert storage.get_token_by_access(token.access_digest) is not None
        raw.script_flush()
        assert storage.revoke_token(token.token_id, at=token.created_at)
        revoked = storage.get_token(token.token_id)
        assert revoked is not None
        assert revoked.is_revoked
        assert storage.kv_incr("n") == 2
        # Loaded again by the first call after the flush.
        assert raw.script_exists(redis_engine.KV_INCR.sha) == [True]
        # Pipelined imports load the script in the same pipeline, before their EVALSHAs.
        raw.script_flush()
        batch = [AuthTokenFactory.build(user_id="7") for _ in range(3)]
        assert storage.import_tokens(batch) == 3
        assert all(storage.get_token_by_access(t.access_digest) == t for t in batch)
    finally:
        storage.close()
        server.stop()
