"""The Redis limit store against the real Redis: the same behaviours as the in-process store,
plus what only Redis has (counters outliving a gateway, leases, an unreachable server).

Every test uses its own key prefix and deletes only its own keys. Times are injected (the
scripts take ``now`` from the caller in tests) and lie in 2030, so keys that expire at the end
of a budget period do not expire during the test.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from tidegate.config import ModelPrice
from tidegate.errors import LimiterUnavailableError, LimitExceededError
from tidegate.pipeline.limits import Admission, Limiter, LimiterMetrics, RedisLimitStore
from tidegate.pipeline.pricing import PriceTable
from tidegate.tenancy.policy import Budgets, RateLimits

REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PRICES = {"priced": ModelPrice(input_per_million=1.0, output_per_million=2.0)}


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MakeLimiter = Callable[..., Limiter]


@pytest.fixture
async def make_limiter() -> AsyncIterator[MakeLimiter]:
    """Limiters sharing one fresh key prefix (like gateway replicas sharing one Redis)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as error:
        if os.environ.get("TIDEGATE_TEST_REQUIRE_REDIS"):
            raise
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {error}")
    prefix = f"tidegate-test-{uuid.uuid4().hex}"
    limiters: list[Limiter] = []

    def make(
        clock: Clock, *, registry: CollectorRegistry | None = None, url: str = REDIS_URL
    ) -> Limiter:
        store = RedisLimitStore(
            url=url, timeout_s=0.25, key_prefix=prefix, lease_s=600.0, cooldown_s=0.0, clock=clock
        )
        limiter = Limiter(
            store=store,
            prices=PriceTable(prices=PRICES),
            metrics=None if registry is None else LimiterMetrics(registry=registry),
            clock=clock,
        )
        limiters.append(limiter)
        return limiter

    make.prefix = prefix  # type: ignore[attr-defined]
    make.client = client  # type: ignore[attr-defined]
    yield make
    for limiter in limiters:
        await limiter.aclose()
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def admit(
    limiter: Limiter,
    *,
    tenant: RateLimits | None = None,
    key: RateLimits | None = None,
    budgets: Budgets | None = None,
    prompt: int = 10,
    max_tokens: int = 10,
    key_id: str = "k1",
    model: str = "free",
) -> Admission:
    return await limiter.admit(
        tenant_id="t1",
        key_id=key_id,
        tenant_limits=tenant or RateLimits(),
        key_limits=key or RateLimits(),
        budgets=budgets or Budgets(),
        model=model,
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        failure_mode="closed",
    )


def header(source: Admission | LimitExceededError, name: str) -> str:
    return dict(source.headers)[name.encode()].decode()


async def test_requests_burst_then_refill(make_limiter: MakeLimiter) -> None:
    clock = Clock(at("2030-05-05T12:00:00"))
    limiter = make_limiter(clock)
    limits = RateLimits(requests_per_minute=6)
    for expected in range(5, -1, -1):
        admission = await admit(limiter, tenant=limits)
        assert header(admission, "x-ratelimit-remaining-requests") == str(expected)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tenant=limits)
    assert refused.value.retry_after_s == pytest.approx(10.0)
    clock.now += 10.0
    await admit(limiter, tenant=limits)
    with pytest.raises(LimitExceededError):
        await admit(limiter, tenant=limits)


async def test_tokens_settle_refunds_and_all_or_nothing(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(Clock(at("2030-05-05T12:00:00")))
    tenant = RateLimits(requests_per_minute=10, tokens_per_minute=1000)
    key = RateLimits(tokens_per_minute=100)
    first = await admit(limiter, tenant=tenant, key=key, prompt=20, max_tokens=40)
    for _ in range(3):
        with pytest.raises(LimitExceededError) as refused:
            await admit(limiter, tenant=tenant, key=key, prompt=20, max_tokens=40)
        assert "API key's limit is 100 tokens per minute" in refused.value.message
    await first.settle(prompt_tokens=20, completion_tokens=5)
    second = await admit(limiter, tenant=tenant, key=key, prompt=20, max_tokens=40)
    assert header(second, "x-ratelimit-remaining-requests") == "8"  # refusals cost nothing
    assert header(second, "x-ratelimit-remaining-tokens") == "15"  # the key's bucket binds


async def test_concurrency_released_by_settle_or_by_lease_expiry(
    make_limiter: MakeLimiter,
) -> None:
    clock = Clock(at("2030-05-05T12:00:00"))
    limiter = make_limiter(clock)
    limits = RateLimits(concurrent_requests=2)
    first = await admit(limiter, key=limits)
    await admit(limiter, key=limits)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, key=limits)
    assert refused.value.code == "concurrency_limit"
    await first.settle(prompt_tokens=10, completion_tokens=1)
    await first.settle(prompt_tokens=10, completion_tokens=1)
    await admit(limiter, key=limits)
    with pytest.raises(LimitExceededError):
        await admit(limiter, key=limits)
    clock.now += 601.0  # the gateway holding both died: their leases end
    await admit(limiter, key=limits)
    await admit(limiter, key=limits)


async def test_budget_partial_reservation_and_period_rollover(make_limiter: MakeLimiter) -> None:
    clock = Clock(at("2030-05-31T23:00:00"))
    limiter = make_limiter(clock)
    budgets = Budgets(daily_tokens=100, monthly_tokens=250)
    full = await admit(limiter, budgets=budgets, prompt=10, max_tokens=50)
    assert full.completion_allowance is None
    partial = await admit(limiter, budgets=budgets, prompt=10, max_tokens=50)
    assert partial.completion_allowance == 30
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets=budgets, prompt=1, max_tokens=1)
    assert refused.value.code == "budget_exceeded"
    assert refused.value.retry_after_s == pytest.approx(3600.0)
    await full.settle(prompt_tokens=10, completion_tokens=20)
    again = await admit(limiter, budgets=budgets, prompt=10, max_tokens=50)
    assert again.completion_allowance == 20

    clock.now = at("2030-06-01T00:00:00")
    for day in ("01", "02"):
        clock.now = at(f"2030-06-{day}T08:00:00")
        await admit(limiter, budgets=budgets, prompt=50, max_tokens=50)
    clock.now = at("2030-06-03T08:00:00")
    last = await admit(limiter, budgets=budgets, prompt=10, max_tokens=90)
    assert last.completion_allowance == 40  # the month has 50 left


async def test_cost_budget_with_prices(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(Clock(at("2030-05-05T12:00:00")))
    budgets = Budgets(monthly_cost_usd=0.0015)
    first = await admit(limiter, budgets=budgets, prompt=1000, max_tokens=1000, model="priced")
    assert first.completion_allowance == 250
    await first.settle(prompt_tokens=1000, completion_tokens=100)  # 1.2M nano-USD of 1.5M
    second = await admit(limiter, budgets=budgets, prompt=100, max_tokens=1000, model="priced")
    assert second.completion_allowance == 100


async def test_budgets_outlive_a_gateway_restart_and_expire_after_their_period(
    make_limiter: MakeLimiter,
) -> None:
    clock = Clock(at("2030-05-05T12:00:00"))
    budgets = Budgets(daily_tokens=100)
    before = make_limiter(clock)
    admission = await admit(before, budgets=budgets, prompt=50, max_tokens=50)
    await admission.settle(prompt_tokens=50, completion_tokens=30)
    await before.aclose()

    after = make_limiter(clock)  # a restarted (or another) gateway replica
    await after.seed_spend(
        tenant_id="t1", day_tokens=0, day_cost_usd=0, month_tokens=0, month_cost_usd=0
    )  # Redis already counts the day: the seed does not reset it
    partial = await admit(after, budgets=budgets, prompt=10, max_tokens=50)
    assert partial.completion_allowance == 10

    client: aioredis.Redis = make_limiter.client  # type: ignore[attr-defined]
    prefix: str = make_limiter.prefix  # type: ignore[attr-defined]
    budget_key = f"{prefix}:{{t1}}:b:d20300505"
    assert await client.hget(budget_key, "t") == b"100"
    assert await client.expiretime(budget_key) == int(at("2030-05-06T00:00:00")) + 3600
    names = [key.decode() async for key in client.scan_iter(match=f"{prefix}:*")]
    assert names and all(name.startswith(f"{prefix}:{{t1}}:") for name in names)  # one slot


async def test_seed_fills_a_period_redis_does_not_know(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(Clock(at("2030-05-05T12:00:00")))
    await limiter.seed_spend(
        tenant_id="t1", day_tokens=95, day_cost_usd=0, month_tokens=0, month_cost_usd=0
    )
    partial = await admit(limiter, budgets=Budgets(daily_tokens=100), prompt=1, max_tokens=10)
    assert partial.completion_allowance == 4


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_redis_fails_closed_or_open_per_tenant(
    make_limiter: MakeLimiter,
) -> None:
    registry = CollectorRegistry()
    limiter = make_limiter(
        Clock(at("2030-05-05T12:00:00")),
        registry=registry,
        url=f"redis://127.0.0.1:{closed_port()}/0",
    )
    request = dict(
        tenant_id="t1",
        key_id="k1",
        tenant_limits=RateLimits(requests_per_minute=1),
        key_limits=RateLimits(),
        budgets=Budgets(daily_tokens=10),
        model="free",
        prompt_tokens=5,
        max_tokens=5,
    )
    with pytest.raises(LimiterUnavailableError) as refused:
        await limiter.admit(**request, failure_mode="closed")  # type: ignore[arg-type]
    assert refused.value.status == 503
    assert "rate-limit store (Redis)" in refused.value.message
    for _ in range(3):  # open: admitted without limits, even past the rpm limit of 1
        admission = await limiter.admit(**request, failure_mode="open")  # type: ignore[arg-type]
        assert admission.headers == []
        await admission.settle(prompt_tokens=5, completion_tokens=5)

    def count(mode: str) -> float | None:
        return registry.get_sample_value(
            "tidegate_limiter_unavailable_total", {"operation": "admit", "mode": mode}
        )

    assert count("closed") == 1.0
    assert count("open") == 3.0
