"""Deliberately broken variants of the example backend (tests/dict_backend.py): each breaks one
rule of the contract, and tests/test_i11_breaker.py checks that the shipped suite
(django_authfw.testing) catches every one of them."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta

from django_authfw.records import AuthToken, KVEntry

from .dict_backend import DictStorage, _now


class StaleAccessIndexAfterUserRevocation(DictStorage):
    """The hot path reads a copy kept per access digest; revoking all of a user's tokens
    forgets to update it, so a revoked token still verifies."""

    def __init__(self) -> None:
        super().__init__()
        self._by_access: dict[str, AuthToken] = {}

    def _store_token(self, token: AuthToken) -> None:
        super()._store_token(token)
        with self._lock:
            self._by_access[token.access_digest] = copy.deepcopy(token)

    def _get_token_by_access(self, access_digest: str) -> AuthToken | None:
        with self._lock:
            found = self._by_access.get(access_digest)
            if found is None or self._get_token(found.token_id) is None:
                return None
            return copy.deepcopy(found)

    def _update_token(self, token: AuthToken) -> bool:
        updated = super()._update_token(token)
        return updated

    def _revoke_token(self, token_id: str, *, at: datetime, replaced_by: str | None) -> bool:
        revoked = super()._revoke_token(token_id, at=at, replaced_by=replaced_by)
        if revoked:
            token = self._tokens[token_id]
            self._by_access[token.access_digest] = copy.deepcopy(token)
        return revoked

    def _revoke_user_tokens(self, user_id: str, *, at: datetime, family_id: str | None) -> int:
        with self._lock:
            count = 0
            for token in self._list_user_tokens(user_id):
                if token.revoked_at is None and family_id in (None, token.family_id):
                    # The access index keeps the old copy.
                    self._tokens[token.token_id] = dataclasses.replace(token, revoked_at=at)
                    count += 1
            return count


class ImportSkipsExisting(DictStorage):
    """import_tokens inserts only ids not stored yet: a restore does not bring back a
    revocation (or any other change) made to a token the target already holds."""

    def _import_tokens(self, tokens: list[AuthToken]) -> int:
        with self._lock:
            for token in tokens:
                self._tokens.setdefault(token.token_id, copy.deepcopy(token))
        return len(tokens)


class KvSetKeepsOldExpiry(DictStorage):
    """kv_set without a ttl keeps the expiry the entry had, instead of making it persist."""

    def _kv_set(self, key: str, value: bytes, ttl: timedelta | None) -> None:
        with self._lock:
            old = self._live_kv(key)
            now = _now()
            expires = (now + ttl) if ttl is not None else (old.expires_at if old else None)
            self._kv[key] = KVEntry(key=key, value=value, created_at=now, expires_at=expires)


class IterSkipsRevokedTokens(DictStorage):
    """iter_tokens leaves revoked tokens out, so a backup or migration drops every
    revocation (a revoked refresh token then looks unknown instead of reused)."""

    def _iter_tokens(self, *, batch_size: int):  # type: ignore[no-untyped-def]
        for batch in super()._iter_tokens(batch_size=batch_size):
            kept = [t for t in batch if t.revoked_at is None]
            if kept:
                yield kept
