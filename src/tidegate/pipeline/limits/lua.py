"""The Redis store's Lua scripts: the same checks as ``memory.py``, atomic on the server.

KEYS, in this order for ADMIT and SETTLE (all inside one ``{tenant}`` hash slot):
  1 tenant rpm bucket, 2 tenant tpm bucket, 3 tenant concurrency leases,
  4 key rpm bucket,    5 key tpm bucket,    6 key concurrency leases,
  7 day budget,        8 month budget
Buckets are hashes {l: level, t: when computed}; a tpm bucket also {g: generation}, and it
outlives its refill by an hour, so a missing one means lost (Redis restarted, evicted, failed
over), not full. Budgets are hashes {t: tokens, c: nano-USD, s: seed id} that only SEED creates.
ADMIT answers "needs seed" (2) with a mask of what is missing (1 tenant tpm, 2 key tpm, 4 day,
8 month) instead of reading a lost counter as zero; the gateway rebuilds those from its usage
records (SEED, which never overwrites a counter another gateway rebuilt first) and admits
again. SETTLE refunds into a counter only when it is the one the admission reserved from (same
generation or seed id): a counter rebuilt meanwhile never saw the reservation, so it is charged
the real usage instead.

Leases are a sorted set of admission ids scored by expiry: the holder renews all its leases
every few seconds (RENEW), ADMIT first drops the expired ones, so a gateway that died holding a
slot loses it one lease after its last renewal. Time is Redis's own (TIME), one clock for every
gateway replica, unless the caller passes one (tests). Numbers come back as strings: Lua turns
numbers in a reply into integers.
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

local missing = 0
local function lost(key, bit)
  if redis.call('EXISTS', key) == 0 then missing = missing + bit end
end
if limit[2] > 0 then lost(KEYS[2], 1) end
if limit[5] > 0 then lost(KEYS[5], 2) end
if limit[7] > 0 or limit[8] > 0 then lost(KEYS[7], 4) end
if limit[9] > 0 or limit[10] > 0 then lost(KEYS[8], 8) end
if missing > 0 then return {2, missing, 0, '0', '0', '0', '0', -1, '0', '', '', '', ''} end

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
          tostring(levels[4]), failed, tostring(wait), '', '', '', ''}
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
    local keep = 1000
    if j % 2 == 0 then keep = 3600000 end  -- a tpm bucket: missing must mean lost
    redis.call('PEXPIRE', KEYS[i], math.ceil((cap - levels[j]) * 60000 / cap) + keep)
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
local ids = {'', '', '', ''}
for n, i in ipairs({2, 5, 7, 8}) do
  local field = 'g'
  if i > 6 then field = 's' end
  if (n == 1 and limit[2] > 0) or (n == 2 and limit[5] > 0) or (n > 2 and counted[n - 2]) then
    ids[n] = redis.call('HGET', KEYS[i], field) or ''
  end
end
return {1, completion, cost, tostring(levels[1]), tostring(levels[2]), tostring(levels[3]),
        tostring(levels[4]), -1, '0', ids[1], ids[2], ids[3], ids[4]}
"""
"""ARGV: 1-6 tenant rpm, tpm, concurrency, key rpm, tpm, concurrency (0: none); 7-10 day tokens,
day cost, month tokens, month cost (0: none); 11 prompt tokens; 12 max tokens; 13 prompt cost;
14 cost per completion token; 15 day end; 16 month end; 17 admission id; 18 lease seconds;
19 now ('' for Redis TIME); 20 sequences; 21 UNBOUNDED. ARGV 12 is max tokens per sequence, 0
for an unbounded request (see ``memory.py``). Reply: admitted, completion reserved (all
sequences), cost reserved, four bucket levels, failed check index, wait seconds, then the
generations of the tenant's and the key's tpm buckets and the seed ids of the day's and the
month's budgets ('' where not counted). Admitted 2: needs seed, with the mask second."""

SETTLE = """
local now
if ARGV[10] ~= '' then now = tonumber(ARGV[10])
else local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local refund, used, used_cost = tonumber(ARGV[3]), tonumber(ARGV[11]), ARGV[12]
for j, i in ipairs({2, 5}) do
  local cap = tonumber(ARGV[j])
  -- A missing bucket is rebuilt from the usage records, which will hold this request.
  if cap > 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('HMGET', KEYS[i], 'l', 't', 'g')
    local back = refund
    -- Rebuilt since the admission: it never held the reservation, so charge the usage.
    if (v[3] or '') ~= ARGV[12 + j] then back = 0 - used end
    if back ~= 0 then
      local level = math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60)
      level = math.min(cap, level + back)
      redis.call('HSET', KEYS[i], 'l', level, 't', now)
      redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * 60000 / cap) + 3600000)
    end
  end
end
for j, i in ipairs({3, 6}) do
  if ARGV[5 + j] == '1' then redis.call('ZREM', KEYS[i], ARGV[5]) end
end
for p = 1, 2 do
  if ARGV[7 + p] == '1' and redis.call('EXISTS', KEYS[6 + p]) == 1 then
    if (redis.call('HGET', KEYS[6 + p], 's') or '') == ARGV[14 + p] then
      redis.call('HINCRBY', KEYS[6 + p], 't', 0 - refund)  -- not -refund: -0 is no integer
      redis.call('HINCRBY', KEYS[6 + p], 'c', ARGV[4])
    else  -- rebuilt while the request ran: the usage records did not hold it yet
      redis.call('HINCRBY', KEYS[6 + p], 't', used)
      redis.call('HINCRBY', KEYS[6 + p], 'c', used_cost)
    end
  end
end
return 1
"""
"""ARGV: 1 tenant tpm, 2 key tpm (0: none); 3 tokens to refund (negative: charge); 4 cost to
charge (negative: refund); 5 admission id; 6, 7 release the tenant's, the key's lease ('1');
8, 9 the day's, the month's budget counted ('1'); 10 now ('' for Redis TIME); 11 tokens used;
12 nano-USD used; 13, 14 the tenant's, the key's tpm generation at admission; 15, 16 the day's,
the month's seed id at admission."""

SEED = """
local now
if ARGV[3] ~= '' then now = tonumber(ARGV[3])
else local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local mask = tonumber(ARGV[1])
local seeded = 0
for n, bit in ipairs({1, 2}) do
  if math.floor(mask / bit) % 2 == 1 and redis.call('EXISTS', KEYS[n]) == 0 then
    local cap = tonumber(ARGV[2 + 2 * n])
    local level = math.min(cap, cap - tonumber(ARGV[3 + 2 * n]))
    redis.call('HSET', KEYS[n], 'l', level, 't', now, 'g', ARGV[2])
    redis.call('PEXPIRE', KEYS[n], math.ceil((cap - level) * 60000 / cap) + 3600000)
    seeded = seeded + bit
  end
end
for p, bit in ipairs({4, 8}) do
  if math.floor(mask / bit) % 2 == 1 and redis.call('EXISTS', KEYS[2 + p]) == 0 then
    local a = 5 + 3 * p
    redis.call('HSET', KEYS[2 + p], 't', ARGV[a], 'c', ARGV[a + 1], 's', ARGV[2])
    redis.call('EXPIREAT', KEYS[2 + p], ARGV[a + 2])
    seeded = seeded + bit
  end
end
return seeded
"""
"""Creates the counters of ``mask`` that do not exist (one gateway's rebuild wins, the others
change nothing). KEYS: tenant tpm bucket, key tpm bucket, day budget, month budget. ARGV: 1
mask (as ADMIT's); 2 the new generation / seed id; 3 now ('' for Redis TIME); 4, 5 tenant tpm
capacity and tokens used in the last minute; 6, 7 the same for the key; 8-10 day tokens,
nano-USD, expiry (unix seconds); 11-13 the same for the month. Reply: the mask it created."""

RENEW = """
local now
if ARGV[2] ~= '' then now = tonumber(ARGV[2])
else local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local lease = tonumber(ARGV[1])
for i = 3, #ARGV, 2 do  -- XX: a lease settled or reclaimed meanwhile is not brought back
  redis.call('ZADD', KEYS[tonumber(ARGV[i])], 'XX', now + lease, ARGV[i + 1])
end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 1000) + 1000) end
return 1
"""
"""Extends the leases one gateway holds for one tenant. KEYS: the tenant's and its keys'
concurrency lease sets. ARGV: 1 lease seconds; 2 now ('' for Redis TIME); then pairs of a KEYS
index and an admission id."""
