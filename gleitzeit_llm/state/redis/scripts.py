"""The Lua scripts: each store call is one of them, atomic on the server, one round trip.

Times are passed in (the caller's wall clock, ms), never read with ``TIME``: the scripts stay
deterministic (Redis 6.2 replicates them verbatim) and every process compares the same clock.
Lease members are ``<lease id>|<model>`` (``<lease id>|`` without a model); a lease id never
holds ``|``.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["ACQUIRE", "RELEASE", "RENEW", "Script"]

# Drop the leases whose holders stopped renewing them, and their per-model counts.
_REAP = """
local function reap(leases, models, now)
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, member in ipairs(gone) do
    local model = string.match(member, '^[^|]*|(.*)$')
    if model and model ~= '' and redis.call('HINCRBY', models, model, -1) <= 0 then
      redis.call('HDEL', models, model)
    end
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', leases, '-inf', now) end
end
local function model_count(models, model)
  if model == '' then return 0 end
  return tonumber(redis.call('HGET', models, model) or '0')
end
"""

# KEYS: leases, models, breaker, waiting. ARGV: member, model, max_concurrent, expiry, now,
# panic (0/1), half_open_requests, lease_ttl (ms), process token, waiting expiry (ms). Returns
# {admitted, why, count, model count, probe, breaker state, retry at, open time (ms)}; why: '' |
# full | open | probes. A refusal for 'full' registers the process as waiting in the same step,
# so no release after it goes unannounced (see RELEASE).
_ACQUIRE = (
    _REAP
    + """
local leases, models, bkey = KEYS[1], KEYS[2], KEYS[3]
local member, model = ARGV[1], ARGV[2]
local cap, expiry, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local panic, budget, ttl = ARGV[6] == '1', tonumber(ARGV[7]), tonumber(ARGV[8])
reap(leases, models, now)
local count = redis.call('ZCARD', leases)
local b = redis.call('HMGET', bkey, 's', 'r', 'o', 'p', 'h')
local state, retry, open_for = b[1] or '', tonumber(b[2] or '0'), tonumber(b[3] or '0')
local function answer(ok, why, probe)
  return {ok, why, count, model_count(models, model), probe, state, retry, open_for}
end
if count >= cap then
  redis.call('ZADD', KEYS[4], ARGV[10], ARGV[9])
  redis.call('PEXPIRE', KEYS[4], ttl)
  return answer(0, 'full', 0)
end
local probe = 0
if not panic and state ~= '' then
  local probes, since = tonumber(b[4] or '0'), tonumber(b[5] or '0')
  if state == 'open' then
    if now < retry then return answer(0, 'open', 0) end
    state, probes, since = 'half_open', 0, now
    redis.call('HSET', bkey, 's', state)
  end
  -- A probe whose holder vanished never gives its place back: after a lease TTL without any
  -- admission, the budget starts again.
  if probes >= budget and now - since > ttl then probes = 0 end
  if probes >= budget then return answer(0, 'probes', 0) end
  redis.call('HSET', bkey, 'p', probes + 1, 'h', now)
  probe = 1
end
redis.call('ZADD', leases, expiry, member)
local mc = 0
if model ~= '' then mc = redis.call('HINCRBY', models, model, 1) end
return {1, '', count + 1, mc, probe, state, retry, open_for}
"""
)

# KEYS: leases, models, breaker, waiting. ARGV: member, model, now, action ('' | open | close |
# probe), retry at (ms), open time (ms), reason, breaker key expiry (ms), channel, announcement
# prefix, process token. Returns {count, model count, breaker state, retry at, open time (ms)}.
# The release is announced only while another process is registered as waiting (a member of
# ``waiting`` not yet expired): every subscriber wakes for each announcement, a cost that buys
# nothing when nobody waits.
_RELEASE = (
    _REAP
    + """
local leases, models, bkey = KEYS[1], KEYS[2], KEYS[3]
local member, model, now, action = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
reap(leases, models, now)
local mc = nil
if redis.call('ZREM', leases, member) == 1 and model ~= '' then
  mc = redis.call('HINCRBY', models, model, -1)
  if mc <= 0 then
    redis.call('HDEL', models, model)
    mc = 0
  end
end
if action == 'open' then
  redis.call('HSET', bkey, 's', 'open', 'r', ARGV[5], 'o', ARGV[6], 'why', ARGV[7], 'p', 0)
  redis.call('PEXPIRE', bkey, ARGV[8])
elseif action == 'close' then
  redis.call('DEL', bkey)
elseif action == 'probe' then
  local p = tonumber(redis.call('HGET', bkey, 'p') or '0')
  if p > 0 then redis.call('HSET', bkey, 'p', p - 1) end
end
local count = redis.call('ZCARD', leases)
if mc == nil then mc = model_count(models, model) end
if ARGV[9] ~= '' then
  local waiting = redis.call('ZCOUNT', KEYS[4], now, '+inf')
  if waiting > 0 and tonumber(redis.call('ZSCORE', KEYS[4], ARGV[11]) or '0') > now then
    waiting = waiting - 1  -- this process: its own queue is woken without Redis
  end
  if waiting > 0 then
    redis.call('PUBLISH', ARGV[9], ARGV[10] .. '\\t' .. count .. '\\t' .. model .. '\\t' .. mc)
  end
end
local b = redis.call('HMGET', bkey, 's', 'r', 'o')
return {count, mc, b[1] or '', tonumber(b[2] or '0'), tonumber(b[3] or '0')}
"""
)

# KEYS: leases, models of each lease in turn. ARGV: expiry, then member, model of each lease.
# Upsert: a lease Redis lost (a restart, an expiry while the holder stalled) comes back with its
# model count. Returns how many came back.
_RENEW = """
local expiry, restored = ARGV[1], 0
for i = 1, #KEYS / 2 do
  local leases, models = KEYS[2 * i - 1], KEYS[2 * i]
  local member, model = ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('ZADD', leases, expiry, member) == 1 then
    restored = restored + 1
    if model ~= '' then redis.call('HINCRBY', models, model, 1) end
  end
end
return restored
"""


class Script:
    """One Lua script, run by its SHA1 (``EVALSHA``) and loaded again when Redis answers
    ``NOSCRIPT`` (a restarted or flushed server has forgotten it)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """Run on ``client`` (one round trip; two more after a ``NOSCRIPT``)."""
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        """Add to a pipeline (its reply may be a ``NoScriptError``: then :meth:`__call__` alone)."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"Script({self.name}, {self.sha[:8]})"


ACQUIRE = Script("acquire", _ACQUIRE)
RELEASE = Script("release", _RELEASE)
RENEW = Script("renew", _RENEW)
