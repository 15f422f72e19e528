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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from tidegate.pipeline.limits.model import (
    CONCURRENCY_RETRY_S,
    DAY_COST,
    DAY_TOKENS,
    KEY_CONCURRENCY,
    KEY_RPM,
    KEY_TPM,
    MONTH_COST,
    MONTH_TOKENS,
    TENANT_CONCURRENCY,
    TENANT_RPM,
    TENANT_TPM,
    UNBOUNDED,
    Demand,
    Verdict,
    bucket_allowance,
    budget_allowance,
)
from tidegate.pipeline.limits.periods import Period


class _Scope:
    """A tenant's or a key's buckets (rpm, tpm) and requests in flight."""

    __slots__ = ("rpm_level", "rpm_at", "tpm_level", "tpm_at", "in_flight")

    def __init__(self) -> None:
        # nan: never used, which reads as a full bucket.
        self.rpm_level = math.nan
        self.rpm_at = 0.0
        self.tpm_level = math.nan
        self.tpm_at = 0.0
        self.in_flight = 0


_Handle = tuple[_Scope, _Scope, list[int] | None, list[int] | None]


def _refill(level: float, at: float, capacity: int, now: float) -> float:
    if level != level:  # nan
        return float(capacity)
    level += (now - at) * capacity / 60.0
    return capacity if level > capacity else level


class MemoryLimitStore:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tenants: dict[str, _Scope] = {}
        self._keys: dict[str, _Scope] = {}
        self._spend: dict[str, dict[str, list[int]]] = {}
        """Period key → tenant id → [tokens, nano-USD]."""
        self._ends: dict[str, float] = {}

    async def admit(self, demand: Demand) -> Verdict:
        return self.admit_now(demand)

    def admit_now(self, d: Demand) -> Verdict:
        now = self._clock()
        tenant = self._tenants.get(d.tenant_id)
        if tenant is None:
            tenant = self._tenants[d.tenant_id] = _Scope()
        key = self._keys.get(d.key_id)
        if key is None:
            key = self._keys[d.key_id] = _Scope()
        t_rpm, t_tpm, t_conc, k_rpm, k_tpm, k_conc = d.limits
        failed, wait = -1, 0.0

        # Completion tokens per sequence: what the request asked for, or (unbounded) whatever
        # every budget and token bucket below has room for.
        seqs = d.sequences
        flexible = d.max_tokens <= 0
        units = UNBOUNDED if flexible else d.max_tokens
        day = month = None
        b_day_tokens, b_day_cost, b_month_tokens, b_month_cost = d.budget
        if b_day_tokens or b_day_cost:
            day = self._spend_row(d.day, d.tenant_id, now)
        if b_month_tokens or b_month_cost:
            month = self._spend_row(d.month, d.tenant_id, now)
        per_cost = d.output_cost * seqs
        for index, limit, row, field in (
            (
                (DAY_TOKENS, b_day_tokens, day, 0),
                (DAY_COST, b_day_cost, day, 1),
                (MONTH_TOKENS, b_month_tokens, month, 0),
                (MONTH_COST, b_month_cost, month, 1),
            )
            if day is not None or month is not None
            else ()
        ):
            if not limit or row is None:
                continue
            allowed = budget_allowance(
                limit=limit,
                spent=row[field],
                base=d.prompt_cost if field else d.prompt_tokens,
                per_token=per_cost if field else seqs,
                max_tokens=units,
            )
            if allowed < 0:
                end = d.day.end if index < MONTH_TOKENS else d.month.end
                if end - now > wait:
                    failed, wait = index, end - now
            else:
                units = allowed

        t_rpm_level = _refill(tenant.rpm_level, tenant.rpm_at, t_rpm, now) if t_rpm else 0.0
        t_tpm_level = _refill(tenant.tpm_level, tenant.tpm_at, t_tpm, now) if t_tpm else 0.0
        k_rpm_level = _refill(key.rpm_level, key.rpm_at, k_rpm, now) if k_rpm else 0.0
        k_tpm_level = _refill(key.tpm_level, key.tpm_at, k_tpm, now) if k_tpm else 0.0
        if flexible:  # an unbounded request takes what each token bucket has left
            for index, cap, level in (
                (TENANT_TPM, t_tpm, t_tpm_level),
                (KEY_TPM, k_tpm, k_tpm_level),
            ):
                if not cap:
                    continue
                fit = bucket_allowance(
                    level=level, base=d.prompt_tokens, per_token=seqs, max_tokens=units
                )
                if fit > 0:
                    units = fit
                    continue
                least = d.prompt_tokens + seqs
                need = math.inf if least > cap else (least - level) * 60.0 / cap
                if need > wait:
                    failed, wait = index, need
        if units >= UNBOUNDED:
            units = 0  # no budget or token bucket counts this request: reserve no completion
        tokens = d.prompt_tokens + units * seqs
        # Checked above for an unbounded request.
        take = 0 if flexible else tokens
        if (
            (t_rpm and t_rpm_level < 1)
            or (t_tpm and take and t_tpm_level < take)
            or (k_rpm and k_rpm_level < 1)
            or (k_tpm and take and k_tpm_level < take)
        ):  # the rare path: find the bucket that takes longest to have room
            for index, limit, level, cost in (
                (TENANT_RPM, t_rpm, t_rpm_level, 1),
                (TENANT_TPM, t_tpm, t_tpm_level, take),
                (KEY_RPM, k_rpm, k_rpm_level, 1),
                (KEY_TPM, k_tpm, k_tpm_level, take),
            ):
                if limit and cost and level < cost:
                    need = math.inf if cost > limit else (cost - level) * 60.0 / limit
                    if need > wait:
                        failed, wait = index, need
        if t_conc and tenant.in_flight >= t_conc and wait < CONCURRENCY_RETRY_S:
            failed, wait = TENANT_CONCURRENCY, CONCURRENCY_RETRY_S
        if k_conc and key.in_flight >= k_conc and wait < CONCURRENCY_RETRY_S:
            failed, wait = KEY_CONCURRENCY, CONCURRENCY_RETRY_S
        levels = (t_rpm_level, t_tpm_level, k_rpm_level, k_tpm_level)
        if failed >= 0:
            return Verdict(False, 0, 0, levels, failed, wait)

        completion = units * seqs
        cost = d.prompt_cost + (math.ceil(per_cost * units) if units else 0)
        if t_rpm:
            tenant.rpm_level, tenant.rpm_at = t_rpm_level - 1, now
        if t_tpm:
            tenant.tpm_level, tenant.tpm_at = t_tpm_level - tokens, now
        if k_rpm:
            key.rpm_level, key.rpm_at = k_rpm_level - 1, now
        if k_tpm:
            key.tpm_level, key.tpm_at = k_tpm_level - tokens, now
        tenant.in_flight += 1
        key.in_flight += 1
        if day is not None:
            day[0] += tokens
            day[1] += cost
        if month is not None:
            month[0] += tokens
            month[1] += cost
        levels = (t_rpm_level - 1, t_tpm_level - tokens, k_rpm_level - 1, k_tpm_level - tokens)
        return Verdict(True, completion, cost, levels, handle=(tenant, key, day, month))

    async def settle(self, demand: Demand, verdict: Verdict, *, tokens: int, cost: int) -> None:
        self.settle_now(demand, verdict, tokens=tokens, cost=cost)

    def settle_now(self, d: Demand, verdict: Verdict, *, tokens: int, cost: int) -> None:
        handle: _Handle = verdict.handle  # type: ignore[assignment]
        tenant, key, day, month = handle
        now = self._clock()
        refund = d.prompt_tokens + verdict.completion - tokens
        t_tpm, k_tpm = d.limits[TENANT_TPM], d.limits[KEY_TPM]
        if t_tpm and refund:
            level = _refill(tenant.tpm_level, tenant.tpm_at, t_tpm, now) + refund
            tenant.tpm_level, tenant.tpm_at = min(level, float(t_tpm)), now
        if k_tpm and refund:
            level = _refill(key.tpm_level, key.tpm_at, k_tpm, now) + refund
            key.tpm_level, key.tpm_at = min(level, float(k_tpm)), now
        tenant.in_flight -= 1
        key.in_flight -= 1
        extra = cost - verdict.cost
        for row in (day, month):
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
