"""The Redis script behind cluster-wide admission: one round trip per gateway per heartbeat.

Per pool, Redis holds a members sorted set (member id → lease expiry, Redis TIME in ms) and a
grants hash (member id → slots it may have in flight). The script, atomically for every pool
the caller names:

1. drops members whose lease ran out, with their grants (a gateway killed with -9 gives its
   slots back one lease after its last heartbeat);
2. renews the caller's lease;
3. computes the caller's target, an equal share of the capacity (members sorted by id, the
   remainder going to the first ones, so every member computes the same split);
4. grants the caller ``min(target, capacity - others' grants)`` but never less than its
   ``floor`` (what it may still have in flight: a grant only ever shrinks by its holder's own
   report), so the sum of grants never exceeds the capacity while the caller's floor fits.

A joining member therefore only ever gets slots the others have released.

KEYS: members_1, grants_1, members_2, grants_2, ...
ARGV: member, lease_ms, capacity_1, floor_1, capacity_2, floor_2, ...
Returns: grant_1, target_1, members_1, grant_2, ...
"""

from __future__ import annotations

SYNC = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local lease = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS / 2 do
  local members, grants = KEYS[2 * i - 1], KEYS[2 * i]
  local cap = tonumber(ARGV[2 * i + 1])
  local floor = tonumber(ARGV[2 * i + 2])
  redis.call('ZREMRANGEBYSCORE', members, '-inf', now)
  redis.call('ZADD', members, now + lease, me)
  local ids = redis.call('ZRANGE', members, 0, -1)
  local live = {}
  for _, m in ipairs(ids) do live[m] = true end
  table.sort(ids)
  local n = #ids
  local rank = 0
  for j, m in ipairs(ids) do
    if m == me then rank = j - 1 end
  end
  local target = math.floor(cap / n)
  if rank < cap % n then target = target + 1 end
  local others = 0
  local held = redis.call('HGETALL', grants)
  for j = 1, #held, 2 do
    local m = held[j]
    if not live[m] then
      redis.call('HDEL', grants, m)
    elseif m ~= me then
      others = others + tonumber(held[j + 1])
    end
  end
  local grant = cap - others
  if target < grant then grant = target end
  if grant < floor then grant = floor end
  redis.call('HSET', grants, me, grant)
  redis.call('PEXPIRE', members, lease * 4)
  redis.call('PEXPIRE', grants, lease * 4)
  out[#out + 1] = grant
  out[#out + 1] = target
  out[#out + 1] = n
end
return out
"""

LEAVE = """
for i = 1, #KEYS / 2 do
  redis.call('ZREM', KEYS[2 * i - 1], ARGV[1])
  redis.call('HDEL', KEYS[2 * i], ARGV[1])
end
return 1
"""
"""A gateway that stops cleanly hands its slots back at once."""
