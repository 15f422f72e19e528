"""The Redis store's Lua scripts: the same checks as ``memory.py``, atomic on the server.

KEYS, in this order for both scripts (all inside one ``{tenant}`` hash slot):
  1 tenant rpm bucket, 2 tenant tpm bucket, 3 tenant concurrency leases,
  4 key rpm bucket,    5 key tpm bucket,    6 key concurrency leases,
  7 day budget,        8 month budget
Buckets are hashes {l: level, t: when computed}; leases a sorted set of admission ids scored by
expiry, so a gateway that dies mid-request leaks its slot only until the lease ends; budgets a
hash {t: tokens, c: nano-USD}. Time is Redis's own (TIME), one clock for every gateway replica,
unless the caller passes one (tests). Numbers come back as strings: Lua turns numbers in a
reply into integers.
"""

from __future__ import annotations

ADMIT = """
local now
if ARGV[19] ~= '' then now = tonumber(ARGV[19])
else local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local limit = {}
for i = 1, 10 do limit[i] = tonumber(ARGV[i]) end
local prompt, units = tonumber(ARGV[11]), tonumber(ARGV[12])
local prompt_cost, output_cost = tonumber(ARGV[13]), tonumber(ARGV[14])
local ends = {tonumber(ARGV[15]), tonumber(ARGV[16])}
local seqs = tonumber(ARGV[20])
local unbounded = tonumber(ARGV[21])
local flexible = units <= 0
if flexible then units = unbounded end
local per_cost = output_cost * seqs
local failed, wait = -1, 0

local function allowance(cap, spent, base, per, most)
  local remaining = cap - spent
  if remaining <= 0 or base > remaining then return -1 end
  if per <= 0 then return most end
  local n = math.min(most, math.floor((remaining - base) / per))
  while n > 0 and base + math.ceil(per * n) > remaining do n = n - 1 end
  if n >= 1 then return n end
  return -1
end

local counted = {false, false}
for p = 1, 2 do
  local tokens_cap, cost_cap = limit[5 + 2 * p], limit[6 + 2 * p]
  if tokens_cap > 0 or cost_cap > 0 then
    counted[p] = true
    local v = redis.call('HMGET', KEYS[6 + p], 't', 'c')
    local checks = {{tokens_cap, tonumber(v[1]) or 0, prompt, seqs, 4 + 2 * p},
                    {cost_cap, tonumber(v[2]) or 0, prompt_cost, per_cost, 5 + 2 * p}}
    for _, c in ipairs(checks) do
      if c[1] > 0 then
        local n = allowance(c[1], c[2], c[3], c[4], units)
        if n < 0 then
          if ends[p] - now > wait then failed, wait = c[5], ends[p] - now end
        else units = n end
      end
    end
  end
end

local slots = {1, 2, 4, 5}
local levels = {0, 0, 0, 0}
for j = 1, 4 do
  local i = slots[j]
  local cap = limit[i]
  if cap > 0 then
    local v = redis.call('HMGET', KEYS[i], 'l', 't')
    local level = tonumber(v[1])
    if level == nil then level = cap
    else level = math.min(cap, level + (now - tonumber(v[2])) * cap / 60) end
    levels[j] = level
  end
end
if flexible then  -- an unbounded request takes what each token bucket has left
  for _, j in ipairs({2, 4}) do
    local cap, level = limit[slots[j]], levels[j]
    if cap > 0 then
      local least = prompt + seqs
      if level >= least then
        local n = math.min(units, math.floor((level - prompt) / seqs))
        while n > 0 and prompt + seqs * n > level do n = n - 1 end
        units = n
      else
        local need = math.huge
        if least <= cap then need = (least - level) * 60 / cap end
        if need > wait then failed, wait = slots[j] - 1, need end
      end
    end
  end
end
if units >= unbounded then units = 0 end
local tokens = prompt + units * seqs
for j = 1, 4 do
  local i = slots[j]
  local cap = limit[i]
  local cost = tokens
  if j % 2 == 1 then cost = 1 elseif flexible then cost = 0 end
  if cap > 0 and cost > 0 and levels[j] < cost then
    local need = math.huge
    if cost <= cap then need = (cost - levels[j]) * 60 / cap end
    if need > wait then failed, wait = i - 1, need end
  end
end
for _, i in ipairs({3, 6}) do
  if limit[i] > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    if redis.call('ZCARD', KEYS[i]) >= limit[i] and wait < 1 then failed, wait = i - 1, 1 end
  end
end
if failed >= 0 then
  return {0, 0, 0, tostring(levels[1]), tostring(levels[2]), tostring(levels[3]),
          tostring(levels[4]), failed, tostring(wait)}
end

local completion = units * seqs
local cost = prompt_cost
if units > 0 then cost = prompt_cost + math.ceil(per_cost * units) end
for j = 1, 4 do
  local i = slots[j]
  local cap = limit[i]
  if cap > 0 then
    local take = tokens
    if j % 2 == 1 then take = 1 end
    levels[j] = levels[j] - take
    redis.call('HSET', KEYS[i], 'l', levels[j], 't', now)
    redis.call('PEXPIRE', KEYS[i], math.ceil((cap - levels[j]) * 60000 / cap) + 1000)
  end
end
local lease = tonumber(ARGV[18])
for _, i in ipairs({3, 6}) do
  if limit[i] > 0 then
    redis.call('ZADD', KEYS[i], now + lease, ARGV[17])
    redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 1000) + 1000)
  end
end
for p = 1, 2 do
  if counted[p] then
    redis.call('HINCRBY', KEYS[6 + p], 't', tokens)
    redis.call('HINCRBY', KEYS[6 + p], 'c', cost)
    redis.call('EXPIREAT', KEYS[6 + p], math.ceil(ends[p]) + 3600)
  end
end
return {1, completion, cost, tostring(levels[1]), tostring(levels[2]), tostring(levels[3]),
        tostring(levels[4]), -1, '0'}
"""
"""ARGV: 1-6 tenant rpm, tpm, concurrency, key rpm, tpm, concurrency (0: none); 7-10 day tokens,
day cost, month tokens, month cost (0: none); 11 prompt tokens; 12 max tokens; 13 prompt cost;
14 cost per completion token; 15 day end; 16 month end; 17 admission id; 18 lease seconds;
19 now ('' for Redis TIME); 20 sequences; 21 UNBOUNDED. ARGV 12 is max tokens per sequence, 0
for an unbounded request (see ``memory.py``). Reply: admitted, completion reserved (all
sequences), cost reserved, four bucket levels, failed check index, wait seconds."""

SETTLE = """
local now
if ARGV[10] ~= '' then now = tonumber(ARGV[10])
else local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local refund = tonumber(ARGV[3])
for j, i in ipairs({2, 5}) do
  local cap = tonumber(ARGV[j])
  if cap > 0 and refund ~= 0 then
    local v = redis.call('HMGET', KEYS[i], 'l', 't')
    local level = tonumber(v[1])
    if level == nil then level = cap
    else level = math.min(cap, level + (now - tonumber(v[2])) * cap / 60) end
    level = math.min(cap, level + refund)
    redis.call('HSET', KEYS[i], 'l', level, 't', now)
    redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * 60000 / cap) + 1000)
  end
end
for j, i in ipairs({3, 6}) do
  if ARGV[5 + j] == '1' then redis.call('ZREM', KEYS[i], ARGV[5]) end
end
for p = 1, 2 do
  if ARGV[7 + p] == '1' and redis.call('EXISTS', KEYS[6 + p]) == 1 then
    redis.call('HINCRBY', KEYS[6 + p], 't', 0 - refund)  -- not -refund: -0 is no integer
    redis.call('HINCRBY', KEYS[6 + p], 'c', ARGV[4])
  end
end
return 1
"""
"""ARGV: 1 tenant tpm, 2 key tpm (0: none); 3 tokens to refund (negative: charge); 4 cost to
charge (negative: refund); 5 admission id; 6, 7 release the tenant's, the key's lease ('1');
8, 9 the day's, the month's budget counted ('1'); 10 now ('' for Redis TIME)."""

SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 't', ARGV[1], 'c', ARGV[2])
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
  return 1
end
return 0
"""
"""KEYS: the period's budget hash. ARGV: tokens, nano-USD, expiry (unix seconds)."""
