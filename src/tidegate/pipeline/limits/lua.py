"""The Redis store's Lua scripts: the same checks as ``memory.py``, atomic on the server.

The scripts are generated once, at import, from the kinds table (``layout.Layout``): a prelude
of Lua tables says which check is a bucket (of requests or tokens, refilled over which window),
which holds concurrency leases and which budget counts which period, and the body loops over
them. KEYS, in this order for ADMIT and SETTLE (all inside one ``{tenant}`` hash slot): the
tenant's rate counters, the key's (in table order), then one budget hash per period. For the
gateway's own table:
  1 tenant rpm bucket, 2 tenant tpm bucket, 3 tenant concurrency leases,
  4 key rpm bucket,    5 key tpm bucket,    6 key concurrency leases,
  7 day budget,        8 month budget
Buckets are hashes {l: level, t: when computed}; a tpm bucket also {g: generation}, and it
outlives its refill by an hour, so a missing one means lost (Redis restarted, evicted, failed
over), not full. Budgets are hashes {t: tokens, c: nano-USD, s: seed id} that only SEED creates.
ADMIT answers "needs seed" (2) with a mask of what is missing (``Layout.rebuilt``: 1 tenant
tpm, 2 key tpm, 4 day, 8 month) instead of reading a lost counter as zero; the gateway rebuilds
those from its usage records (SEED, which never overwrites a counter another gateway rebuilt
first) and admits again. SETTLE refunds into a counter only when it is the one the admission
reserved from (same generation or seed id): a counter rebuilt meanwhile never saw the
reservation, so it is charged the real usage instead.

Leases are a sorted set of admission ids scored by expiry: the holder renews all its leases
every few seconds (RENEW), ADMIT first drops the expired ones, so a gateway that died holding a
slot loses it one lease after its last renewal. Time is Redis's own (TIME), one clock for every
gateway replica, unless the caller passes one (tests). Numbers come back as strings: Lua turns
numbers in a reply into integers.
"""

from __future__ import annotations

from tidegate.pipeline.limits.layout import LAYOUT, Layout

__all__ = ["ADMIT", "RENEW", "SEED", "SETTLE", "admit_script", "seed_script", "settle_script"]


def _lua(values: object) -> str:
    items = values if isinstance(values, (list, tuple)) else [values]
    return "{" + ", ".join(_scalar(item) for item in items) + "}"


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _prelude(layout: Layout) -> str:
    """The table's shape as Lua locals, shared by ADMIT and SETTLE."""
    rates = layout.rates
    windows = [b.window_s for b in layout.buckets[: len(layout.buckets) // 2]]
    return (
        f"local R, P, NB = {len(rates)}, {len(layout.periods)}, {len(windows)}\n"
        f"local N = 2 * R + {len(layout.budgets)}\n"
        # Per bucket of one scope: its rate kind (1-based), tokens (else requests), window.
        f"local BUCKET = {_lua([r.check + 1 for r in layout.buckets[: len(windows)]])}\n"
        f"local TOKENS = {_lua([b.tokens for b in layout.buckets[: len(windows)]])}\n"
        f"local WINDOW = {_lua(windows)}\n"
        # Rate kinds that hold leases (1-based, one scope).
        f"local SLOTS = {_lua([c + 1 for c in layout.slots[: len(layout.slots) // 2]])}\n"
        # Per budget check: its period (1-based) and whether it counts cost (else tokens).
        f"local B_PERIOD = {_lua([p + 1 for p in layout.budget_periods])}\n"
        f"local B_COST = {_lua([kind.charge == 'cost' for kind in layout.budgets])}\n"
        # The "needs seed" counters: KEYS index, bit, and for a bucket its check, window.
        f"local REBUILT = {{{', '.join(_rebuilt(layout))}}}\n"
    )


def _rebuilt(layout: Layout) -> list[str]:
    return [
        f"{{{r.key + 1}, {r.bit}, {r.check + 1 if r.check >= 0 else 0}, {r.window_s!r}, "
        f"{r.period + 1}}}"
        for r in layout.rebuilt
    ]


_NOW = """
local function clock(value)
  if value ~= '' then return tonumber(value) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

_ADMIT = """
local A = N + 4 + P  -- ARGV before the admission id
local now = clock(ARGV[A + 3])
local limit = {}
for i = 1, N do limit[i] = tonumber(ARGV[i]) end
local prompt, units = tonumber(ARGV[N + 1]), tonumber(ARGV[N + 2])
local prompt_cost, output_cost = tonumber(ARGV[N + 3]), tonumber(ARGV[N + 4])
local ends = {}
for p = 1, P do ends[p] = tonumber(ARGV[N + 4 + p]) end
local member, lease = ARGV[A + 1], tonumber(ARGV[A + 2])
local seqs, unbounded = tonumber(ARGV[A + 4]), tonumber(ARGV[A + 5])
local flexible = units <= 0
if flexible then units = unbounded end
local per_cost = output_cost * seqs
local failed, wait = -1, 0

local function reply(admitted, completion, cost, levels, failure, delay, ids)
  local r = {admitted, completion, cost}
  for b = 1, 2 * NB do r[#r + 1] = tostring(levels[b] or 0) end
  r[#r + 1] = failure
  r[#r + 1] = tostring(delay)
  for n = 1, #REBUILT do r[#r + 1] = ids[n] or '' end
  return r
end

local counted = {}
for p = 1, P do counted[p] = false end
for j = 1, #B_PERIOD do
  if limit[2 * R + j] > 0 then counted[B_PERIOD[j]] = true end
end
local function used(c)  -- a rebuilt counter this request counts
  if c[3] > 0 then return limit[c[3]] > 0 end
  return counted[c[5]]
end

local missing = 0
for _, c in ipairs(REBUILT) do
  if used(c) and redis.call('EXISTS', KEYS[c[1]]) == 0 then missing = missing + c[2] end
end
if missing > 0 then return reply(2, missing, 0, {}, -1, 0, {}) end

local function allowance(cap, spent, base, per, most)
  local remaining = cap - spent
  if remaining <= 0 or base > remaining then return -1 end
  if per <= 0 then return most end
  local n = math.min(most, math.floor((remaining - base) / per))
  while n > 0 and base + math.ceil(per * n) > remaining do n = n - 1 end
  if n >= 1 then return n end
  return -1
end

local spent = {}
for p = 1, P do
  if counted[p] then
    local v = redis.call('HMGET', KEYS[2 * R + p], 't', 'c')
    spent[p] = {tonumber(v[1]) or 0, tonumber(v[2]) or 0}
  end
end
for j = 1, #B_PERIOD do
  local cap, p = limit[2 * R + j], B_PERIOD[j]
  if cap > 0 then
    local n
    if B_COST[j] then n = allowance(cap, spent[p][2], prompt_cost, per_cost, units)
    else n = allowance(cap, spent[p][1], prompt, seqs, units) end
    if n < 0 then
      if ends[p] - now > wait then failed, wait = 2 * R + j - 1, ends[p] - now end
    else units = n end
  end
end

-- Buckets: for owner o (0 tenant, 1 key) and bucket b, check o * R + BUCKET[b], level o * NB + b.
local levels = {}
for o = 0, 1 do
  for b = 1, NB do
    local i = o * R + BUCKET[b]
    local cap, level = limit[i], 0
    if cap > 0 then
      local v = redis.call('HMGET', KEYS[i], 'l', 't')
      level = tonumber(v[1])
      if level == nil then level = cap
      else level = math.min(cap, level + (now - tonumber(v[2])) * cap / WINDOW[b]) end
    end
    levels[o * NB + b] = level
  end
end
if flexible then  -- an unbounded request takes what each token bucket has left
  for o = 0, 1 do
    for b = 1, NB do
      local i = o * R + BUCKET[b]
      local cap, level = limit[i], levels[o * NB + b]
      if TOKENS[b] and cap > 0 then
        local least = prompt + seqs
        if level >= least then
          local n = math.min(units, math.floor((level - prompt) / seqs))
          while n > 0 and prompt + seqs * n > level do n = n - 1 end
          units = n
        else
          local need = math.huge
          if least <= cap then need = (least - level) * WINDOW[b] / cap end
          if need > wait then failed, wait = i - 1, need end
        end
      end
    end
  end
end
if units >= unbounded then units = 0 end
local tokens = prompt + units * seqs
for o = 0, 1 do
  for b = 1, NB do
    local i = o * R + BUCKET[b]
    local cap, level = limit[i], levels[o * NB + b]
    local cost = 1
    if TOKENS[b] then cost = tokens; if flexible then cost = 0 end end
    if cap > 0 and cost > 0 and level < cost then
      local need = math.huge
      if cost <= cap then need = (cost - level) * WINDOW[b] / cap end
      if need > wait then failed, wait = i - 1, need end
    end
  end
end
for o = 0, 1 do
  for _, s in ipairs(SLOTS) do
    local i = o * R + s
    if limit[i] > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
      if redis.call('ZCARD', KEYS[i]) >= limit[i] and wait < 1 then failed, wait = i - 1, 1 end
    end
  end
end
if failed >= 0 then return reply(0, 0, 0, levels, failed, wait, {}) end

local completion = units * seqs
local cost = prompt_cost
if units > 0 then cost = prompt_cost + math.ceil(per_cost * units) end
for o = 0, 1 do
  for b = 1, NB do
    local i = o * R + BUCKET[b]
    local cap = limit[i]
    if cap > 0 then
      local take, keep = 1, 1000
      if TOKENS[b] then take, keep = tokens, 3600000 end  -- a tokens bucket: missing = lost
      local level = levels[o * NB + b] - take
      levels[o * NB + b] = level
      redis.call('HSET', KEYS[i], 'l', level, 't', now)
      redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * WINDOW[b] * 1000 / cap) + keep)
    end
  end
end
for o = 0, 1 do
  for _, s in ipairs(SLOTS) do
    local i = o * R + s
    if limit[i] > 0 then
      redis.call('ZADD', KEYS[i], now + lease, member)
      redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 1000) + 1000)
    end
  end
end
for p = 1, P do
  if counted[p] then
    local key = KEYS[2 * R + p]
    redis.call('HINCRBY', key, 't', tokens)
    redis.call('HINCRBY', key, 'c', cost)
    redis.call('EXPIREAT', key, math.ceil(ends[p]) + 3600)
  end
end
local ids = {}
for n, c in ipairs(REBUILT) do
  ids[n] = ''
  if used(c) then
    local field = 's'
    if c[3] > 0 then field = 'g' end
    ids[n] = redis.call('HGET', KEYS[c[1]], field) or ''
  end
end
return reply(1, completion, cost, levels, -1, 0, ids)
"""

_SETTLE = """
local now = clock(ARGV[4])
local refund, used, used_cost = tonumber(ARGV[1]), tonumber(ARGV[5]), ARGV[6]
local L = 6  -- ARGV before the rate limits; then P counted flags, then the ids
for n, c in ipairs(REBUILT) do
  local at = ARGV[L + 2 * R + P + n]  -- the counter's generation / seed id at admission
  if c[3] > 0 then  -- a tokens bucket
    local cap, key = tonumber(ARGV[L + c[3]]), KEYS[c[1]]
    -- A missing bucket is rebuilt from the usage records, which will hold this request.
    if cap > 0 and redis.call('EXISTS', key) == 1 then
      local v = redis.call('HMGET', key, 'l', 't', 'g')
      local back = refund
      -- Rebuilt since the admission: it never held the reservation, so charge the usage.
      if (v[3] or '') ~= at then back = 0 - used end
      if back ~= 0 then
        local window = c[4]
        local level = math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * cap / window)
        level = math.min(cap, level + back)
        redis.call('HSET', key, 'l', level, 't', now)
        redis.call('PEXPIRE', key, math.ceil((cap - level) * window * 1000 / cap) + 3600000)
      end
    end
  end
end
for o = 0, 1 do
  for _, s in ipairs(SLOTS) do
    local i = o * R + s
    if tonumber(ARGV[L + i]) > 0 then redis.call('ZREM', KEYS[i], ARGV[3]) end
  end
end
for n, c in ipairs(REBUILT) do
  local key = KEYS[c[1]]
  if c[3] == 0 and ARGV[L + 2 * R + c[5]] == '1' and redis.call('EXISTS', key) == 1 then
    if (redis.call('HGET', key, 's') or '') == ARGV[L + 2 * R + P + n] then
      redis.call('HINCRBY', key, 't', 0 - refund)  -- not -refund: -0 is no integer
      redis.call('HINCRBY', key, 'c', ARGV[2])
    else  -- rebuilt while the request ran: the usage records did not hold it yet
      redis.call('HINCRBY', key, 't', used)
      redis.call('HINCRBY', key, 'c', used_cost)
    end
  end
end
return 1
"""

_SEED = """
local now = clock(ARGV[3])
local mask = tonumber(ARGV[1])
local seeded, a = 0, 4
for n, c in ipairs(REBUILT) do
  local bit, key = c[2], KEYS[n]
  local wanted = math.floor(mask / bit) % 2 == 1 and redis.call('EXISTS', key) == 0
  if c[3] > 0 then  -- a tokens bucket: capacity and tokens used in its last window
    if wanted then
      local cap, window = tonumber(ARGV[a]), c[4]
      local level = math.min(cap, cap - tonumber(ARGV[a + 1]))
      redis.call('HSET', key, 'l', level, 't', now, 'g', ARGV[2])
      redis.call('PEXPIRE', key, math.ceil((cap - level) * window * 1000 / cap) + 3600000)
      seeded = seeded + bit
    end
    a = a + 2
  else  -- a budget period: tokens, nano-USD, expiry
    if wanted then
      redis.call('HSET', key, 't', ARGV[a], 'c', ARGV[a + 1], 's', ARGV[2])
      redis.call('EXPIREAT', key, ARGV[a + 2])
      seeded = seeded + bit
    end
    a = a + 3
  end
end
return seeded
"""


def admit_script(layout: Layout) -> str:
    return _prelude(layout) + _NOW + _ADMIT


def settle_script(layout: Layout) -> str:
    return _prelude(layout) + _NOW + _SETTLE


def seed_script(layout: Layout) -> str:
    return _prelude(layout) + _NOW + _SEED


ADMIT = admit_script(LAYOUT)
"""ARGV: 1..N the checks' values (``Demand.limits`` then ``Demand.budget``; 0: none); N+1 prompt
tokens; N+2 max tokens per sequence (0: unbounded, see ``memory.py``); N+3 prompt cost; N+4
cost per completion token; then each period's end; then the admission id, lease seconds, now
('' for Redis TIME), sequences, UNBOUNDED. For the gateway's table N is 10: 1-6 tenant rpm,
tpm, concurrency, key rpm, tpm, concurrency; 7-10 day tokens, day cost, month tokens, month
cost; 15, 16 the day's, the month's end; 17-21 the rest. Reply: admitted, completion reserved
(all sequences), cost reserved, the bucket levels (tenant's, then key's), failed check index,
wait seconds, then the generations / seed ids of the rebuilt counters ('' where not counted).
Admitted 2: needs seed, with the mask second."""

SETTLE = settle_script(LAYOUT)
"""ARGV: 1 tokens to refund (negative: charge); 2 cost to charge (negative: refund); 3 admission
id; 4 now ('' for Redis TIME); 5 tokens used; 6 nano-USD used; then the 2R rate limits (as
ADMIT's; a tokens bucket's capacity, a slots kind > 0: release the lease); then per period '1'
when its budget is counted; then the rebuilt counters' generations / seed ids at admission."""

SEED = seed_script(LAYOUT)
"""Creates the counters of ``mask`` that do not exist (one gateway's rebuild wins, the others
change nothing). KEYS: the rebuilt counters (``Layout.rebuilt``: tenant tpm bucket, key tpm
bucket, day budget, month budget). ARGV: 1 mask (as ADMIT's); 2 the new generation / seed id; 3
now ('' for Redis TIME); then per bucket its capacity and the tokens used in its last window,
per period its tokens, nano-USD and expiry (unix seconds). Reply: the mask it created."""

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
