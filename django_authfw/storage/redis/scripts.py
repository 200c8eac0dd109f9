"""Lua scripts that make multi-key Redis writes atomic, and a runner over redis-py's Script.

A script runs atomically on one server, so on a single server or behind Sentinel a token's
record, its ``access:``/``refresh:`` pointers and its user's index change together. In Cluster
mode only the single-key scripts are used (a script cannot span slots); see
:mod:`django_authfw.storage.redis.engine` for the order in which Cluster writes are made.

Conventions: a TTL argument ``px`` is in milliseconds, ``"0"`` meaning "no TTL"; compare-and-set
scripts compare whole JSON values, which are encoded with a fixed field order.
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import Script as RedisScript

# Adds a member to a user index set and keeps the set alive as long as its longest-lived
# member: a fresh set takes the member's TTL, an existing one is only ever extended (GT), and a
# member without TTL makes the set persistent (GT leaves a persistent set alone).
_INDEX_ADD = """
local function index_add(key, member, px)
  local existed = redis.call('EXISTS', key)
  redis.call('SADD', key, member)
  if px == '0' then
    redis.call('PERSIST', key)
  elseif existed == 0 then
    redis.call('PEXPIRE', key, px)
  else
    redis.call('PEXPIRE', key, px, 'GT')
  end
end
"""

# The compare-and-set guard shared by the record writers. ``mode`` is 'set' (upsert) or 'cas'
# (write only if the record still holds ``expected``; a record that already holds the new value
# counts as written, so a retry after a lost reply is not mistaken for a lost race).
_GUARD = """
local old = redis.call('GET', KEYS[1])
if ARGV[4] == 'cas' then
  if not old then return {-1} end
  if old ~= ARGV[5] and old ~= ARGV[1] then return {0} end
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
"""

# KEYS: record, user index, pointer keys...; ARGV: value, px, member id, mode, expected.
# Returns {1, old value or nothing}, {0} (changed meanwhile) or {-1} (gone).
PUT_RECORD = (
    _INDEX_ADD
    + _GUARD
    + """
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[2])
end
index_add(KEYS[2], ARGV[3], ARGV[2])
if old then return {1, old} end
return {1}
"""
)

# Cluster: the record alone. KEYS: record; ARGV as PUT_RECORD (ARGV[3] unused).
SET_RECORD = (
    _GUARD
    + """
if old then return {1, old} end
return {1}
"""
)

# Cluster: the index alone. KEYS: index; ARGV: member, px.
INDEX_ADD = _INDEX_ADD + "index_add(KEYS[1], ARGV[1], ARGV[2])\nreturn 1\n"

# KEYS: record, user index, pointer keys...; ARGV: expected value, member id.
# Deletes only if the record still holds ``expected``: 1 deleted, 0 changed meanwhile, -1 gone.
# A pointer is deleted only if it still points at this record (a newer token may own it).
DELETE_RECORD = """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if cur ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2] then redis.call('DEL', KEYS[i]) end
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""

# Cluster: KEYS: one key; ARGV: expected value. 1 deleted, 0 holds something else, -1 gone.
DELETE_IF_EQUAL = """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if cur ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# A pointer followed in one round trip (refresh lookups, tokens with an id of their own):
# KEYS: pointer; ARGV: record key prefix. Returns {record id, record} or nothing. The record key
# is built here, which a single server allows; Cluster mode uses two GETs instead.
GET_VIA_POINTER = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
local record = redis.call('GET', ARGV[1] .. id)
if not record then return false end
return {id, record}
"""

# Removes stale index members. KEYS: index; ARGV: record key prefix, then pairs of
# (member, value seen for its record, '' if none). A member is removed only if its record
# still holds what was seen, so a record re-written meanwhile keeps its index entry.
PRUNE_INDEX = """
local removed = 0
for i = 2, #ARGV, 2 do
  local cur = redis.call('GET', ARGV[1] .. ARGV[i]) or ''
  if cur == ARGV[i + 1] then
    removed = removed + redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return removed
"""

# KEYS: counter; ARGV: px for a new counter. A missing counter starts at 1 with the TTL; an
# existing one keeps the expiry it has (a fixed window). INCR refuses what is not a canonical
# integer; the length test refuses more than 18 digits, as validate.counter does. The new value
# comes back as the stored text: an integer reply passes through a Lua number (a double), which
# is wrong past 2**53.
KV_INCR = """
local current = redis.call('GET', KEYS[1])
if current and #current > 18 and not (#current == 19 and string.sub(current, 1, 1) == '-') then
  return redis.error_reply('ERR value is not an integer or out of range')
end
redis.call('INCR', KEYS[1])
if not current and ARGV[1] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return redis.call('GET', KEYS[1])
"""

# KEYS: order (sorted set), events (hash), sequence; ARGV: event id, time key, JSON.
# Appends once per event id. Members are '<µs, 17 digits>:<sequence, 12 digits>:<event id>'
# with score 0, so lexicographic order is time order with ties in append order.
AUDIT_APPEND = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3]) == 0 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], 0, ARGV[2] .. ':' .. string.format('%012d', seq) .. ':' .. ARGV[1])
return 1
"""

# KEYS: order, events; ARGV: exclusive upper bound, batch size. Deletes one batch of the
# oldest events before the bound and returns how many.
AUDIT_TRIM = """
local members = redis.call('ZRANGEBYLEX', KEYS[1], '-', ARGV[1], 'LIMIT', 0, ARGV[2])
if #members == 0 then return 0 end
local ids = {}
for i, member in ipairs(members) do ids[i] = string.sub(member, 32) end
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('ZREM', KEYS[1], unpack(members))
return #members
"""

AUDIT_ID_OFFSET = 31  # len('<17 digits>:<12 digits>:')


class Script:
    """A Lua script run through redis-py's ``Script``: EVALSHA, and on NOSCRIPT (a fresh server,
    a ``SCRIPT FLUSH``, a failover to a replica that never saw it) SCRIPT LOAD, then EVALSHA.

    The client is named at each call (the storage's kept connection, the pool's, a Cluster
    client, which loads the script on every primary), so redis-py's script is built with no
    registered client, from bytes, which it can hash without one.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._script = RedisScript(None, source.encode())  # type: ignore[arg-type]
        self.sha = self._script.sha

    def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        return self._script(keys=keys, args=args, client=client)

    def queue(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        """Add to a pipeline as EVAL.

        redis-py's ``Script`` in a pipeline sends SCRIPT EXISTS before every execute, one more
        round trip per batch; EVAL needs none and leaves the script cached for later EVALSHAs.
        Sent as a plain command: a Cluster pipeline's ``eval()`` is something else (it takes
        no script), while its routing of an EVAL command by its keys works.
        """
        pipe.execute_command("EVAL", self.source, len(keys), *keys, *args)

    def load_in(self, pipe: Any) -> None:
        """Add ``SCRIPT LOAD`` to a pipeline of one server, so that the :meth:`queue_loaded`
        calls after it in the same pipeline find the script (its reply is the SHA)."""
        pipe.execute_command("SCRIPT", "LOAD", self.source)

    def queue_loaded(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        """Add to a pipeline as EVALSHA, after :meth:`load_in` in the same pipeline: the
        server hashes the source once per pipeline instead of once per call."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
