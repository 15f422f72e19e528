"""Budgets given to a tenant at runtime start from what it already spent (real usage records in
the store, the in-process limit store), as budgets seeded at gateway start do."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.usage_events import usage_event
from tidegate.errors import LimitExceededError
from tidegate.metering import UsageMeter, UsageQueries
from tidegate.pipeline.limits import Admission, Limiter, MemoryLimitStore
from tidegate.pipeline.limits.seeding import has_budgets, seed_budget_spend
from tidegate.pipeline.pricing import PriceTable
from tidegate.tenancy.policy import Budgets, RateLimits

Sessions = async_sessionmaker[AsyncSession]


async def spent(sessions: Sessions, tmp_path: Path, tenant_id: str, tokens: int) -> UsageQueries:
    """A usage record of ``tokens`` for ``tenant_id`` now, stored through the real meter."""
    meter = UsageMeter(
        sessions=sessions, wal_dir=tmp_path / "wal", flush_interval_s=60, batch_size=8
    )
    await meter.start()
    meter.record(
        usage_event(
            "req-seed-1",
            tenant_id=tenant_id,
            created_at=datetime.now(UTC),
            prompt_tokens=tokens // 2,
            completion_tokens=tokens - tokens // 2,
        )
    )
    await meter.stop()
    return UsageQueries(sessions=sessions)


async def admit(limiter: Limiter, budgets: Budgets, tokens: int) -> Admission:
    return await limiter.admit(
        tenant_id="ten_a",
        key_id="k1",
        tenant_limits=RateLimits(),
        key_limits=RateLimits(),
        budgets=budgets,
        model="free",
        prompt_tokens=tokens,
        max_tokens=1,
        failure_mode="closed",
    )


def memory_limiter() -> Limiter:
    return Limiter(store=MemoryLimitStore(clock=time.time), prices=PriceTable(prices={}))


async def test_budgets_given_at_runtime_count_the_spend_so_far(
    sessions: Sessions, tmp_path: Path
) -> None:
    usage = await spent(sessions, tmp_path, "ten_a", tokens=900)
    limiter = memory_limiter()
    # The tenant had no budgets at start, so nothing was seeded; now it gets 1000 tokens a day.
    budgets = Budgets(daily_tokens=1000)
    assert await seed_budget_spend(limiter, usage, tenant_id="ten_a", budgets=budgets)
    admitted = await admit(limiter, budgets, tokens=90)  # 900 + 90 + 1 fits in 1000
    await admitted.settle(prompt_tokens=90, completion_tokens=1)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets, tokens=20)
    assert refused.value.limit_code == "budget_exceeded"


async def test_seeding_again_keeps_the_live_count(sessions: Sessions, tmp_path: Path) -> None:
    usage = await spent(sessions, tmp_path, "ten_a", tokens=100)
    limiter = memory_limiter()
    budgets = Budgets(daily_tokens=1000)
    await seed_budget_spend(limiter, usage, tenant_id="ten_a", budgets=budgets)
    in_flight = await admit(limiter, budgets, tokens=800)  # reserved, not yet in the store
    # Budgets changed again (a higher limit): the store's own count, reservation included, stays.
    raised = Budgets(daily_tokens=1100)
    await seed_budget_spend(limiter, usage, tenant_id="ten_a", budgets=raised)
    with pytest.raises(LimitExceededError):
        await admit(limiter, raised, tokens=250)  # 100 + 801 + 250 > 1100
    await in_flight.settle(prompt_tokens=800, completion_tokens=1)


async def test_a_tenant_without_budgets_is_not_seeded(sessions: Sessions, tmp_path: Path) -> None:
    usage = await spent(sessions, tmp_path, "ten_a", tokens=10)
    assert not has_budgets(Budgets())
    assert has_budgets(Budgets(monthly_cost_usd=1.0))
    assert not await seed_budget_spend(
        memory_limiter(), usage, tenant_id="ten_a", budgets=Budgets()
    )
