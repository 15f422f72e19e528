"""Rate limits on the in-process store: bucket math, all-or-nothing admission, refunds,
concurrency, headers and refusals, with an injected clock."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tidegate.errors import LimitExceededError
from tidegate.pipeline.limits import Admission, Limiter, LimiterMetrics, MemoryLimitStore
from tidegate.pipeline.limits.headers import format_duration
from tidegate.pipeline.pricing import PriceTable
from tidegate.tenancy.policy import Budgets, RateLimits

NOON = 1_790_000_000.0  # 2026-09-21 (a UTC midday-ish moment; the exact date does not matter)


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_limiter(clock: Clock, registry: CollectorRegistry | None = None) -> Limiter:
    return Limiter(
        store=MemoryLimitStore(clock=clock),
        prices=PriceTable(prices={}),
        metrics=None if registry is None else LimiterMetrics(registry=registry),
        clock=clock,
    )


async def admit(
    limiter: Limiter,
    *,
    tenant: RateLimits | None = None,
    key: RateLimits | None = None,
    budgets: Budgets | None = None,
    prompt: int = 10,
    max_tokens: int = 10,
    key_id: str = "k1",
) -> Admission:
    return await limiter.admit(
        tenant_id="t1",
        key_id=key_id,
        tenant_limits=tenant or RateLimits(),
        key_limits=key or RateLimits(),
        budgets=budgets or Budgets(),
        model="m",
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        failure_mode="closed",
    )


def header(admission_or_error: Admission | LimitExceededError, name: str) -> str:
    return dict(admission_or_error.headers)[name.encode()].decode()


async def test_requests_burst_to_capacity_then_refill_continuously() -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    limits = RateLimits(requests_per_minute=6)  # one request per 10 s
    for expected_remaining in range(5, -1, -1):
        admission = await admit(limiter, tenant=limits)
        assert header(admission, "x-ratelimit-remaining-requests") == str(expected_remaining)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tenant=limits)
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.retry_after_s == pytest.approx(10.0)
    assert "6 requests per minute" in refused.value.message
    assert header(refused.value, "x-ratelimit-reset-requests") == "1m0s"

    clock.now += 5.0  # half a request back: still refused, retry in the other half
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tenant=limits)
    assert refused.value.retry_after_s == pytest.approx(5.0)
    clock.now += 5.0
    await admit(limiter, tenant=limits)

    clock.now += 3600.0  # a long pause refills to capacity, never beyond
    for _ in range(6):
        await admit(limiter, tenant=limits)
    with pytest.raises(LimitExceededError):
        await admit(limiter, tenant=limits)


async def test_tokens_reserve_prompt_plus_max_tokens_and_settle_refunds_the_rest() -> None:
    limiter = make_limiter(Clock())
    limits = RateLimits(tokens_per_minute=100)
    first = await admit(limiter, tenant=limits, prompt=20, max_tokens=40)
    assert header(first, "x-ratelimit-remaining-tokens") == "40"
    with pytest.raises(LimitExceededError):
        await admit(limiter, tenant=limits, prompt=20, max_tokens=40)

    await first.settle(prompt_tokens=20, completion_tokens=5)  # 35 of the 60 refunded
    second = await admit(limiter, tenant=limits, prompt=20, max_tokens=40)
    assert header(second, "x-ratelimit-remaining-tokens") == "15"


async def test_settle_charges_usage_beyond_the_reservation() -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    limits = RateLimits(tokens_per_minute=60)  # one token per second
    admission = await admit(limiter, tenant=limits, prompt=10, max_tokens=10)
    await admission.settle(prompt_tokens=10, completion_tokens=50)  # the engine overran
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tenant=limits, prompt=1, max_tokens=1)
    assert refused.value.retry_after_s == pytest.approx(2.0)  # level 0, needs 2 tokens


async def test_admission_is_all_or_nothing() -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    tenant = RateLimits(requests_per_minute=10, tokens_per_minute=1000)
    key = RateLimits(tokens_per_minute=50)
    admitted = await admit(limiter, tenant=tenant, key=key, prompt=20, max_tokens=20)
    assert header(admitted, "x-ratelimit-remaining-requests") == "9"
    for _ in range(3):  # the key's tpm refuses; the tenant's buckets must not pay for it
        with pytest.raises(LimitExceededError) as refused:
            await admit(limiter, tenant=tenant, key=key, prompt=20, max_tokens=20)
        assert "API key's limit is 50 tokens per minute" in refused.value.message
    other_key = await admit(limiter, tenant=tenant, key=key, key_id="k2", prompt=20, max_tokens=20)
    assert header(other_key, "x-ratelimit-remaining-requests") == "8"


async def test_tenant_limits_apply_across_its_keys() -> None:
    limiter = make_limiter(Clock())
    tenant = RateLimits(requests_per_minute=2)
    await admit(limiter, tenant=tenant, key_id="k1")
    await admit(limiter, tenant=tenant, key_id="k2")
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tenant=tenant, key_id="k3")
    assert "tenant's limit is 2 requests per minute" in refused.value.message


async def test_headers_describe_the_bucket_with_less_left() -> None:
    limiter = make_limiter(Clock())
    admission = await admit(
        limiter,
        tenant=RateLimits(requests_per_minute=100, tokens_per_minute=1000),
        key=RateLimits(requests_per_minute=3),
        prompt=100,
        max_tokens=100,
    )
    assert admission.headers == [
        (b"x-ratelimit-limit-requests", b"3"),
        (b"x-ratelimit-remaining-requests", b"2"),
        (b"x-ratelimit-reset-requests", b"20s"),
        (b"x-ratelimit-limit-tokens", b"1000"),
        (b"x-ratelimit-remaining-tokens", b"800"),
        (b"x-ratelimit-reset-tokens", b"12s"),
    ]


async def test_request_larger_than_the_token_limit_is_refused_without_retry_after() -> None:
    limiter = make_limiter(Clock())
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tenant=RateLimits(tokens_per_minute=100), prompt=50, max_tokens=80)
    assert refused.value.retry_after_s is None
    assert "Lower max_tokens" in refused.value.message


async def test_concurrency_slots_are_released_by_settle_once() -> None:
    limiter = make_limiter(Clock())
    limits = RateLimits(concurrent_requests=2)
    first = await admit(limiter, tenant=limits)
    await admit(limiter, tenant=limits)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tenant=limits)
    assert refused.value.code == "concurrency_limit"
    assert refused.value.retry_after_s == 1.0

    await first.settle(prompt_tokens=10, completion_tokens=0)
    await first.settle(prompt_tokens=10, completion_tokens=0)  # idempotent: frees one slot
    await admit(limiter, tenant=limits)
    with pytest.raises(LimitExceededError):
        await admit(limiter, tenant=limits)


async def test_unlimited_tenant_gets_no_headers_and_no_allowance() -> None:
    limiter = make_limiter(Clock())
    admission = await admit(limiter)
    assert admission.headers == []
    assert admission.completion_allowance is None
    await admission.settle(prompt_tokens=10, completion_tokens=10)


async def test_rejections_are_counted_by_code() -> None:
    registry = CollectorRegistry()
    limiter = make_limiter(Clock(), registry)
    limits = RateLimits(requests_per_minute=1)
    await admit(limiter, tenant=limits)
    for _ in range(2):
        with pytest.raises(LimitExceededError):
            await admit(limiter, tenant=limits)
    count = registry.get_sample_value(
        "tidegate_limit_rejections_total", {"code": "rate_limit_exceeded"}
    )
    assert count == 2.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0201, "21ms"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3725, "1h2m5s")],
)
def test_durations_read_like_openai_headers(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
