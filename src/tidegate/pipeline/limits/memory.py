"""The in-process limit store: one gateway process, counters in dicts.

Every admit and settle runs without an await between reading and writing the counters, so on
one event loop they are atomic without a lock. Buckets keep their level and when it was last
computed; the capacity comes with each demand, so a tenant whose limits change needs no reset.
Budget counters live per period and are dropped once their period has ended; a restarted
gateway gets them back through ``seed_spend`` (from the usage records).

The completion reserved is counted per sequence (a request's sequences all generate up to it):
max_tokens, lowered to what each budget has left; a request without max_tokens (``max_tokens``
0) is lowered to what each budget and each token bucket has left, and reserves nothing for its
completion only when no budget or token bucket counts its tokens. ``lua.ADMIT`` does the same.
Which checks exist, and in which order, comes from the kinds table (``layout.Layout``); the
loops run over tuples precomputed from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from tidegate.pipeline.limits.layout import LAYOUT, Layout
from tidegate.pipeline.limits.model import (
    CONCURRENCY_RETRY_S,
    UNBOUNDED,
    Demand,
    Verdict,
    bucket_allowance,
    budget_allowance,
)
from tidegate.pipeline.limits.periods import Period


class _Scope:
    """A tenant's or a key's buckets (level, when computed) and requests in flight."""

    __slots__ = ("levels", "ats", "in_flight")

    def __init__(self, buckets: int) -> None:
        # nan: never used, which reads as a full bucket.
        self.levels = [math.nan] * buckets
        self.ats = [0.0] * buckets
        self.in_flight = 0


_Handle = tuple[_Scope, _Scope, list[list[int] | None] | None]


def _refill(level: float, at: float, capacity: int, now: float, window_s: float) -> float:
    if level != level:  # nan
        return float(capacity)
    level += (now - at) * capacity / window_s
    return capacity if level > capacity else level


class MemoryLimitStore:
    def __init__(self, *, clock: Callable[[], float] = time.time, layout: Layout = LAYOUT) -> None:
        """``layout``: the kinds table's (tests declare their own)."""
        self._clock = clock
        self._tenants: dict[str, _Scope] = {}
        self._keys: dict[str, _Scope] = {}
        self._spend: dict[str, dict[str, list[int]]] = {}
        """Period key → tenant id → [tokens, nano-USD]."""
        self._ends: dict[str, float] = {}
        self._per_scope = len(layout.buckets) // 2
        self._buckets = tuple(
            (b.check, b.slot, b.level, b.owner, b.tokens, b.window_s) for b in layout.buckets
        )
        self._token_buckets = tuple(entry for entry in self._buckets if entry[4])
        self._slots = tuple((check, check // layout.rate_count) for check in layout.slots)
        first = 2 * layout.rate_count
        self._budgets = tuple(
            (first + j, j, period, kind.charge == "cost")
            for j, (kind, period) in enumerate(
                zip(layout.budgets, layout.budget_periods, strict=True)
            )
        )
        self._period_count = len(layout.periods)

    async def admit(self, demand: Demand) -> Verdict:
        return self.admit_now(demand)

    def admit_now(self, d: Demand) -> Verdict:
        now = self._clock()
        tenant = self._tenants.get(d.tenant_id)
        if tenant is None:
            tenant = self._tenants[d.tenant_id] = _Scope(self._per_scope)
        key = self._keys.get(d.key_id)
        if key is None:
            key = self._keys[d.key_id] = _Scope(self._per_scope)
        scopes = (tenant, key)
        limits = d.limits
        failed, wait = -1, 0.0

        # Completion tokens per sequence: what the request asked for, or (unbounded) whatever
        # every budget and token bucket below has room for.
        seqs = d.sequences
        flexible = d.max_tokens <= 0
        units = UNBOUNDED if flexible else d.max_tokens
        per_cost = d.output_cost * seqs
        rows: list[list[int] | None] | None = None
        budget = d.budget
        if any(budget):
            rows = [None] * self._period_count
            for index, value, p, is_cost in self._budgets:
                limit = budget[value]
                if not limit:
                    continue
                row = rows[p]
                if row is None:
                    row = rows[p] = self._spend_row(d.periods[p], d.tenant_id, now)
                allowed = budget_allowance(
                    limit=limit,
                    spent=row[1] if is_cost else row[0],
                    base=d.prompt_cost if is_cost else d.prompt_tokens,
                    per_token=per_cost if is_cost else seqs,
                    max_tokens=units,
                )
                if allowed < 0:
                    end = d.periods[p].end
                    if end - now > wait:
                        failed, wait = index, end - now
                else:
                    units = allowed

        levels = [0.0] * len(self._buckets)
        if not flexible:
            # The reservation is known: refill and check each bucket in one pass.
            if units >= UNBOUNDED:
                units = 0  # as for an unbounded request that nothing counts
            tokens = d.prompt_tokens + units * seqs
            for check, slot, level, owner, is_tokens, window in self._buckets:
                cap = limits[check]
                if cap:
                    scope = scopes[owner]
                    left = scope.levels[slot]
                    if left != left:  # nan: never used, full
                        left = float(cap)
                    else:
                        left += (now - scope.ats[slot]) * cap / window
                        if left > cap:
                            left = float(cap)
                    levels[level] = left
                    cost = tokens if is_tokens else 1
                    if left < cost:
                        need = math.inf if cost > cap else (cost - left) * window / cap
                        if need > wait:
                            failed, wait = check, need
        else:  # an unbounded request takes what each token bucket has left
            for check, slot, level, owner, _, window in self._buckets:
                cap = limits[check]
                if cap:
                    scope = scopes[owner]
                    levels[level] = _refill(scope.levels[slot], scope.ats[slot], cap, now, window)
            for check, _, level, _, _, window in self._token_buckets:
                cap = limits[check]
                if not cap:
                    continue
                fit = bucket_allowance(
                    level=levels[level], base=d.prompt_tokens, per_token=seqs, max_tokens=units
                )
                if fit > 0:
                    units = fit
                    continue
                least = d.prompt_tokens + seqs
                need = math.inf if least > cap else (least - levels[level]) * window / cap
                if need > wait:
                    failed, wait = check, need
            if units >= UNBOUNDED:
                units = 0  # no budget or token bucket counts this request: reserve none
            tokens = d.prompt_tokens + units * seqs
            for check, _, level, _, is_tokens, window in self._buckets:
                cap = limits[check]
                # Token buckets were checked above.
                if cap and not is_tokens and levels[level] < 1:
                    need = math.inf if cap < 1 else (1 - levels[level]) * window / cap
                    if need > wait:
                        failed, wait = check, need
        for check, owner in self._slots:
            cap = limits[check]
            if cap and scopes[owner].in_flight >= cap and wait < CONCURRENCY_RETRY_S:
                failed, wait = check, CONCURRENCY_RETRY_S
        if failed >= 0:
            return Verdict(False, 0, 0, levels, failed, wait)

        completion = units * seqs
        cost = d.prompt_cost + (math.ceil(per_cost * units) if units else 0)
        for check, slot, level, owner, is_tokens, _ in self._buckets:
            if limits[check]:
                left = levels[level] = levels[level] - (tokens if is_tokens else 1)
                scope = scopes[owner]
                scope.levels[slot], scope.ats[slot] = left, now
        tenant.in_flight += 1
        key.in_flight += 1
        if rows is not None:
            for row in rows:
                if row is not None:
                    row[0] += tokens
                    row[1] += cost
        return Verdict(True, completion, cost, levels, handle=(tenant, key, rows))

    async def settle(self, demand: Demand, verdict: Verdict, *, tokens: int, cost: int) -> None:
        self.settle_now(demand, verdict, tokens=tokens, cost=cost)

    def settle_now(self, d: Demand, verdict: Verdict, *, tokens: int, cost: int) -> None:
        handle: _Handle = verdict.handle  # type: ignore[assignment]
        tenant, key, rows = handle
        now = self._clock()
        refund = d.prompt_tokens + verdict.completion - tokens
        if refund:
            limits = d.limits
            for check, slot, _, owner, _, window in self._token_buckets:
                cap = limits[check]
                if cap:
                    scope = tenant if owner == 0 else key
                    level = _refill(scope.levels[slot], scope.ats[slot], cap, now, window)
                    scope.levels[slot], scope.ats[slot] = min(level + refund, float(cap)), now
        tenant.in_flight -= 1
        key.in_flight -= 1
        if rows is not None:
            extra = cost - verdict.cost
            for row in rows:
                if row is not None:
                    row[0] -= refund
                    row[1] += extra

    async def seed_spend(self, *, tenant_id: str, period: Period, tokens: int, cost: int) -> None:
        table = self._period_table(period, self._clock())
        if tenant_id not in table:
            table[tenant_id] = [tokens, cost]

    async def aclose(self) -> None:
        return None

    def _spend_row(self, period: Period, tenant_id: str, now: float) -> list[int]:
        table = self._spend.get(period.key)
        if table is None:
            table = self._period_table(period, now)
        row = table.get(tenant_id)
        if row is None:
            row = table[tenant_id] = [0, 0]
        return row

    def _period_table(self, period: Period, now: float) -> dict[str, list[int]]:
        table = self._spend.get(period.key)
        if table is None:
            for ended in [key for key, end in self._ends.items() if end <= now]:
                del self._spend[ended], self._ends[ended]
            table = self._spend[period.key] = {}
            self._ends[period.key] = period.end
        return table
