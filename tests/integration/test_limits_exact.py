"""Budgets and token rate limits hold exactly, on both limit stores (in-process, and the real
Redis): a request without max_tokens is capped at what is left instead of reserving one token,
n > 1 counts every sequence, and usage beyond a reservation is charged, not forgotten.

Times are injected and lie in 2030 (Redis keys expire at the end of a budget period); the clock
never moves, so token buckets do not refill during a test and every bound is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from tests.support.limit_stores import STORE_KINDS, StoreKind, limiter_on, redis_reachable
from tidegate.errors import LimitExceededError
from tidegate.pipeline.limits import Admission, Limiter
from tidegate.tenancy.policy import Budgets, RateLimits

NOW = datetime(2030, 3, 14, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture(params=STORE_KINDS)
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    kind: StoreKind = request.param
    if kind == "redis":
        await redis_reachable()
    async with limiter_on(kind, lambda: NOW) as made:
        yield made


async def admit(
    limiter: Limiter,
    *,
    budgets: Budgets | None = None,
    tpm: int | None = None,
    prompt: int = 10,
    max_tokens: int | None = None,
    sequences: int = 1,
    tenant: str = "t1",
    model: str = "free",
) -> Admission:
    return await limiter.admit(
        tenant_id=tenant,
        key_id=f"{tenant}-key",
        tenant_limits=RateLimits(tokens_per_minute=tpm),
        key_limits=RateLimits(),
        budgets=budgets or Budgets(),
        model=model,
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        sequences=sequences,
        failure_mode="closed",
    )


async def test_request_without_max_tokens_is_capped_at_the_budget_left(limiter: Limiter) -> None:
    budgets = Budgets(daily_tokens=100)
    first = await admit(limiter, budgets=budgets, prompt=10)
    # Not one token (the old reservation): everything the budget has left after the prompt.
    assert (first.completion_allowance, first.completion_limit) == (90, 90)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets=budgets, prompt=1)
    assert refused.value.code == "budget_exceeded"
    await first.settle(prompt_tokens=10, completion_tokens=20)  # 70 come back
    second = await admit(limiter, budgets=budgets, prompt=10)
    assert second.completion_allowance == 60


async def test_every_sequence_is_reserved(limiter: Limiter) -> None:
    budgets = Budgets(daily_tokens=100)
    # n=2 with max_tokens 50: 10 + 2 × 50 does not fit; 2 × 45 does.
    capped = await admit(limiter, budgets=budgets, prompt=10, max_tokens=50, sequences=2)
    assert (capped.completion_allowance, capped.completion_limit) == (45, 90)
    await capped.settle(prompt_tokens=10, completion_tokens=0)
    # 90 left: n=3 without max_tokens gets 27 per sequence (81 of them; 82 would not split).
    unbounded = await admit(limiter, budgets=budgets, prompt=9, sequences=3)
    assert (unbounded.completion_allowance, unbounded.completion_limit) == (27, 81)
    await unbounded.settle(prompt_tokens=9, completion_tokens=0)
    # The prompt fits, but not one token for each of 3 sequences.
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets=budgets, prompt=79, max_tokens=5, sequences=3)
    assert "each of its 3 sequences" in refused.value.message
    last = await admit(limiter, budgets=budgets, prompt=78, max_tokens=5, sequences=3)
    assert (last.completion_allowance, last.completion_limit) == (1, 3)


async def test_a_prompt_bound_that_leaves_no_token_is_refused_before_the_engine(
    limiter: Limiter,
) -> None:
    budgets = Budgets(daily_tokens=2000)
    with pytest.raises(LimitExceededError) as refused:
        await limiter.admit(
            tenant_id="t1",
            key_id="k1",
            tenant_limits=RateLimits(),
            key_limits=RateLimits(),
            budgets=budgets,
            model="free",
            prompt_tokens=2000,
            max_tokens=None,
            prompt_is_bound=True,
            failure_mode="closed",
        )
    assert refused.value.code == "budget_exceeded"
    assert "at most 2000 tokens, one per byte" in refused.value.message


async def test_tokens_per_minute_caps_a_request_without_max_tokens(limiter: Limiter) -> None:
    first = await admit(limiter, tpm=500, prompt=100)
    assert first.completion_allowance == 400
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tpm=500, prompt=1)
    assert refused.value.code == "rate_limit_exceeded"
    # The bucket is empty; one token for the prompt and one to generate need 0.24 s of refill.
    assert refused.value.retry_after_s == pytest.approx(2 * 60 / 500)
    await first.settle(prompt_tokens=100, completion_tokens=100)  # 300 come back
    # A request with max_tokens still needs all of it (it is refused, never shortened).
    with pytest.raises(LimitExceededError):
        await admit(limiter, tpm=500, prompt=100, max_tokens=201)
    fits = await admit(limiter, tpm=500, prompt=100, max_tokens=200)
    assert fits.completion_allowance is None and fits.completion_limit == 200


async def test_200_concurrent_requests_never_exceed_budget_or_tpm(limiter: Limiter) -> None:
    budgets = Budgets(daily_tokens=2000)
    admitted: list[Admission] = []
    reserved = 0

    async def one(index: int) -> None:
        nonlocal reserved
        # Half ask for 12 tokens, half for none; some for two sequences.
        max_tokens = 12 if index % 2 else None
        sequences = 2 if index % 5 == 0 else 1
        try:
            admission = await admit(
                limiter,
                budgets=budgets,
                tpm=1500,
                prompt=7,
                max_tokens=max_tokens,
                sequences=sequences,
                tenant="racer",
            )
        except LimitExceededError:
            return
        assert admission.completion_limit is not None
        reserved += 7 + admission.completion_limit
        admitted.append(admission)

    await asyncio.gather(*(one(i) for i in range(200)))
    assert admitted and reserved <= 1500  # the tighter of the two limits, with no refill
    # Every admission used all it reserved: the counters stay within the limits.
    for admission in admitted:
        assert admission.completion_limit is not None
        await admission.settle(prompt_tokens=7, completion_tokens=admission.completion_limit)
    with pytest.raises(LimitExceededError):
        await admit(limiter, budgets=budgets, tpm=1500, prompt=7, tenant="racer")


async def test_usage_beyond_the_reservation_is_charged(limiter: Limiter) -> None:
    """An upstream that ignores max_tokens: the settle charges every token it reports, so the
    counter stays honest and the tenant is refused until the period ends."""
    budgets = Budgets(daily_tokens=100)
    admission = await admit(limiter, budgets=budgets, prompt=10, max_tokens=20)
    await admission.settle(prompt_tokens=10, completion_tokens=95)  # 105 spent of 100
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets=budgets, prompt=0, max_tokens=1)
    assert refused.value.code == "budget_exceeded"


async def test_cost_budget_caps_a_request_without_max_tokens(limiter: Limiter) -> None:
    # $1 per million input tokens (1000 nano-USD each), $2 per million output (2000 each).
    budgets = Budgets(daily_cost_usd=0.0015)  # 1,500,000 nano-USD
    admission = await admit(limiter, budgets=budgets, prompt=1000, model="priced", sequences=2)
    # (1.5M - 1M) / (2 sequences × 2000) = 125 per sequence.
    assert (admission.completion_allowance, admission.completion_limit) == (125, 250)


async def test_nothing_to_cap_without_token_limits(limiter: Limiter) -> None:
    admission = await limiter.admit(
        tenant_id="t1",
        key_id="k1",
        tenant_limits=RateLimits(requests_per_minute=10),
        key_limits=RateLimits(),
        budgets=Budgets(),
        model="free",
        prompt_tokens=10,
        max_tokens=None,
        failure_mode="closed",
    )
    assert admission.completion_allowance is None and admission.completion_limit is None
