"""Budgets on the in-process store: reservations, partial reservations, settling, periods
rolling over, seeding, and pricing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tidegate.config import ModelPrice
from tidegate.errors import LimitExceededError
from tidegate.pipeline.limits import Admission, Limiter, MemoryLimitStore
from tidegate.pipeline.limits.periods import PeriodClock, day_period, month_period
from tidegate.pipeline.pricing import PriceTable
from tidegate.tenancy.policy import Budgets, RateLimits

PRICES = {
    # $1 per million input tokens (1000 nano-USD each), $0.25 cached, $2 output.
    "priced": ModelPrice(
        input_per_million=1.0, cached_input_per_million=0.25, output_per_million=2.0
    ),
}


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_limiter(clock: Clock) -> Limiter:
    return Limiter(
        store=MemoryLimitStore(clock=clock), prices=PriceTable(prices=PRICES), clock=clock
    )


async def admit(
    limiter: Limiter, budgets: Budgets, *, prompt: int, max_tokens: int, model: str = "free"
) -> Admission:
    return await limiter.admit(
        tenant_id="t1",
        key_id="k1",
        tenant_limits=RateLimits(),
        key_limits=RateLimits(),
        budgets=budgets,
        model=model,
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        failure_mode="closed",
    )


async def test_token_budget_reserves_then_admits_partially_then_refuses() -> None:
    clock = Clock(at("2026-11-15T22:00:00"))
    limiter = make_limiter(clock)
    budgets = Budgets(daily_tokens=100)
    full = await admit(limiter, budgets, prompt=10, max_tokens=50)
    assert full.completion_allowance is None
    partial = await admit(limiter, budgets, prompt=10, max_tokens=50)  # 40 left: 10 + 30
    assert partial.completion_allowance == 30
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets, prompt=1, max_tokens=1)
    assert refused.value.code == "budget_exceeded"
    assert refused.value.retry_after_s == pytest.approx(2 * 3600)  # until 00:00 UTC
    assert "budgets.daily_tokens = 100" in refused.value.message

    await full.settle(prompt_tokens=10, completion_tokens=20)  # 30 of 60 come back
    again = await admit(limiter, budgets, prompt=10, max_tokens=50)
    assert again.completion_allowance == 20


async def test_prompt_that_leaves_no_completion_token_is_refused() -> None:
    limiter = make_limiter(Clock(at("2026-11-15T12:00:00")))
    budgets = Budgets(daily_tokens=100)
    await admit(limiter, budgets, prompt=40, max_tokens=50)  # 10 left
    with pytest.raises(LimitExceededError):
        await admit(limiter, budgets, prompt=10, max_tokens=5)
    await admit(limiter, budgets, prompt=9, max_tokens=5)  # 9 + 1 fits


async def test_concurrent_requests_never_overspend() -> None:
    limiter = make_limiter(Clock(at("2026-11-15T12:00:00")))
    budgets = Budgets(daily_tokens=1000)  # fits 10 requests of 100

    async def one() -> int:
        try:
            admission = await admit(limiter, budgets, prompt=50, max_tokens=50)
        except LimitExceededError:
            return 0
        await asyncio.sleep(0)
        await admission.settle(prompt_tokens=50, completion_tokens=50)
        return 1

    results = await asyncio.gather(*(one() for _ in range(200)))
    assert sum(results) == 10


async def test_cost_budget_from_the_price_table() -> None:
    limiter = make_limiter(Clock(at("2026-11-15T12:00:00")))
    # A prompt of 1000 costs 1,000,000 nano-USD, each completion token 2000.
    budgets = Budgets(daily_cost_usd=0.0015)  # 1,500,000 nano-USD
    first = await admit(limiter, budgets, prompt=1000, max_tokens=1000, model="priced")
    assert first.completion_allowance == 250  # (1.5M - 1M) / 2000
    await first.settle(prompt_tokens=1000, cached_tokens=800, completion_tokens=100)
    # Real cost: 200 × 1000 + 800 × 250 + 100 × 2000 = 600,000; 900,000 left.
    second = await admit(limiter, budgets, prompt=100, max_tokens=1000, model="priced")
    assert second.completion_allowance == 400  # (900k - 100k) / 2000
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets, prompt=1, max_tokens=1, model="priced")
    assert "budgets.daily_cost_usd = $0.0015" in refused.value.message


async def test_a_model_without_a_price_never_spends_a_cost_budget() -> None:
    limiter = make_limiter(Clock(at("2026-11-15T12:00:00")))
    budgets = Budgets(daily_cost_usd=0.000001)
    for _ in range(5):
        admission = await admit(limiter, budgets, prompt=10_000, max_tokens=10_000)
        assert admission.completion_allowance is None
        await admission.settle(prompt_tokens=10_000, completion_tokens=10_000)


async def test_day_rolls_over_at_midnight_utc_and_month_keeps_counting() -> None:
    clock = Clock(at("2026-11-30T23:59:59"))
    limiter = make_limiter(clock)
    budgets = Budgets(daily_tokens=100, monthly_tokens=250)
    await admit(limiter, budgets, prompt=50, max_tokens=50)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets, prompt=1, max_tokens=1)
    assert refused.value.retry_after_s == pytest.approx(1.0)

    clock.now = at("2026-12-01T00:00:00")  # a new day and a new month
    await admit(limiter, budgets, prompt=50, max_tokens=50)
    clock.now = at("2026-12-02T00:00:00")
    await admit(limiter, budgets, prompt=50, max_tokens=50)
    clock.now = at("2026-12-03T00:00:00")
    partial = await admit(limiter, budgets, prompt=10, max_tokens=90)  # month: 50 left
    assert partial.completion_allowance == 40
    clock.now = at("2026-12-04T00:00:00")
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets, prompt=1, max_tokens=1)
    assert "monthly token budget" in refused.value.message
    assert refused.value.retry_after_s == pytest.approx(28 * 86400)


async def test_settling_after_the_day_ended_does_not_touch_the_new_day() -> None:
    clock = Clock(at("2026-11-15T23:59:00"))
    limiter = make_limiter(clock)
    budgets = Budgets(daily_tokens=100)
    late = await admit(limiter, budgets, prompt=50, max_tokens=50)
    clock.now = at("2026-11-16T00:01:00")
    fresh = await admit(limiter, budgets, prompt=50, max_tokens=50)
    await late.settle(prompt_tokens=50, completion_tokens=50)
    assert fresh.completion_allowance is None
    with pytest.raises(LimitExceededError):
        await admit(limiter, budgets, prompt=1, max_tokens=1)


async def test_seeded_spend_counts_and_does_not_override_a_live_count() -> None:
    limiter = make_limiter(Clock(at("2026-11-15T12:00:00")))
    budgets = Budgets(daily_tokens=1000, monthly_cost_usd=1.0)
    await limiter.seed_spend(
        tenant_id="t1", day_tokens=900, day_cost_usd=0.0, month_tokens=0, month_cost_usd=0.5
    )
    partial = await admit(limiter, budgets, prompt=50, max_tokens=100)
    assert partial.completion_allowance == 50
    await limiter.seed_spend(
        tenant_id="t1", day_tokens=0, day_cost_usd=0.0, month_tokens=0, month_cost_usd=0.0
    )
    with pytest.raises(LimitExceededError):
        await admit(limiter, budgets, prompt=1, max_tokens=1)


def test_periods_are_utc_days_and_months() -> None:
    moment = at("2026-12-31T13:14:15")
    assert day_period(moment).key == "d20261231"
    assert day_period(moment).end == at("2027-01-01T00:00:00")
    assert month_period(moment).key == "m202612"
    assert month_period(moment).end == at("2027-01-01T00:00:00")
    clock = PeriodClock()
    assert clock.periods(moment)[0].key == "d20261231"
    assert clock.periods(at("2027-01-01T00:00:00"))[1].key == "m202701"


def test_cost_counts_cached_tokens_at_their_own_price() -> None:
    table = PriceTable(prices=PRICES)
    usd = table.cost_usd("priced", prompt_tokens=1000, cached_tokens=400, completion_tokens=500)
    assert usd == pytest.approx((600 * 1.0 + 400 * 0.25 + 500 * 2.0) / 1e6)
    assert table.cost_usd("unknown", prompt_tokens=1000, completion_tokens=1000) == 0.0
    no_cached_price = PriceTable(prices={"m": ModelPrice(input_per_million=3.0)})
    cost = no_cached_price.cost_nanos("m", prompt_tokens=10, cached_tokens=10, completion_tokens=0)
    assert cost == 30_000  # cached tokens at the input price
