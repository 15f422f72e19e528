"""Three gateway processes sharing Redis: budgets never overspend and rate limits hold.

Each process builds its own limiter on the real Redis (its own connections, its own event loop)
and they start together at an agreed wall-clock moment.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tidegate.errors import LimitExceededError
from tidegate.pipeline.limits import Limiter, RedisLimitStore
from tidegate.pipeline.pricing import PriceTable
from tidegate.tenancy.policy import Budgets, RateLimits

REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PROCESSES = 3


def make_limiter(prefix: str) -> Limiter:
    store = RedisLimitStore(url=REDIS_URL, timeout_s=2.0, key_prefix=prefix)
    return Limiter(store=store, prices=PriceTable(prices={}))


async def race_for_budget(prefix: str, start_at: float, requests: int) -> tuple[int, int]:
    """``requests`` concurrent admits; each admitted one uses all it may. Returns (admitted,
    tokens used)."""
    limiter = make_limiter(prefix)
    budgets = Budgets(daily_tokens=1000)  # fits 10 requests of 100

    async def one() -> tuple[int, int]:
        try:
            admission = await limiter.admit(
                tenant_id="race",
                key_id=f"k{os.getpid()}",
                tenant_limits=RateLimits(),
                key_limits=RateLimits(),
                budgets=budgets,
                model="m",
                prompt_tokens=50,
                max_tokens=50,
                failure_mode="closed",
            )
        except LimitExceededError:
            return 0, 0
        completion = admission.completion_allowance or 50
        await asyncio.sleep(0.05)
        await admission.settle(prompt_tokens=50, completion_tokens=completion)
        return 1, 50 + completion

    await asyncio.sleep(max(0.0, start_at - time.time()))
    results = await asyncio.gather(*(one() for _ in range(requests)))
    await limiter.aclose()
    return sum(r[0] for r in results), sum(r[1] for r in results)


async def burst(
    prefix: str, start_at: float, duration_s: float, rate: float
) -> tuple[int, int, int]:
    """Sends ``rate`` requests per second to each of two tenants for ``duration_s``. Returns
    (requests admitted for the rpm tenant, tokens admitted for the tpm tenant, requests sent to
    each tenant): on a loaded host a process can start late or fall behind its rate."""
    limiter = make_limiter(prefix)
    requests = tokens = sent = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    end = start_at + duration_s
    next_at = start_at
    while time.time() < end:
        sent += 1
        for tenant, limits in (
            ("rpm", RateLimits(requests_per_minute=600)),
            ("tpm", RateLimits(tokens_per_minute=6000)),
        ):
            try:
                admission = await limiter.admit(
                    tenant_id=tenant,
                    key_id="k",
                    tenant_limits=limits,
                    key_limits=RateLimits(),
                    budgets=Budgets(),
                    model="m",
                    prompt_tokens=5,
                    max_tokens=5,
                    failure_mode="closed",
                )
            except LimitExceededError:
                continue
            await admission.settle(prompt_tokens=5, completion_tokens=5)
            if tenant == "rpm":
                requests += 1
            else:
                tokens += 10
        next_at += 1.0 / rate
        await asyncio.sleep(max(0.0, next_at - time.time()))
    await limiter.aclose()
    return requests, tokens, sent


def race_worker(prefix: str, start_at: float, requests: int) -> tuple[int, int]:
    return asyncio.run(race_for_budget(prefix, start_at, requests))


def burst_worker(
    prefix: str, start_at: float, duration_s: float, rate: float
) -> tuple[int, int, int]:
    return asyncio.run(burst(prefix, start_at, duration_s, rate))


@pytest.fixture
def prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except (OSError, redis.ConnectionError) as error:
        if os.environ.get("TIDEGATE_TEST_REQUIRE_REDIS"):
            raise
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {error}")
    name = f"tidegate-test-{uuid.uuid4().hex}"
    yield name
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_budget_race_across_three_processes_never_overspends(prefix: str) -> None:
    start_at = time.time() + 2.0  # after the processes have imported tidegate
    shares = [67, 67, 66]  # 200 requests in all
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        results = pool.starmap(race_worker, [(prefix, start_at, share) for share in shares])
    admitted = sum(r[0] for r in results)
    used = sum(r[1] for r in results)
    assert used <= 1000
    assert admitted == 10  # every reservation was used in full, so exactly 10 fit
    spent = redis.Redis.from_url(REDIS_URL).hget(f"{prefix}:{{race}}:b:" + _today(), "t")
    assert spent is not None and int(spent) == used


def test_bursts_at_ten_times_the_limit_stay_within_it(prefix: str) -> None:
    duration_s, limit_per_s = 8.0, 10.0  # 600 per minute; 8 s at 10× sends ~800 per tenant
    start_at = time.time() + 2.0
    per_process_rate = 10 * limit_per_s / PROCESSES
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        results = pool.starmap(
            burst_worker, [(prefix, start_at, duration_s, per_process_rate)] * PROCESSES
        )
    elapsed = time.time() - start_at  # an upper bound on the time the buckets refilled
    requests = sum(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    sent = sum(r[2] for r in results)
    print(f"elapsed {elapsed:.2f} s: {sent} sent, {requests} requests, {tokens} tokens admitted")
    # The limit is the upper bound; the lower one is the full bucket, or all that was sent when
    # a slow host sent less than that.
    assert min(600, sent) <= requests <= (600 + limit_per_s * elapsed) * 1.01
    assert min(6000, 10 * sent) <= tokens <= (6000 + 10 * limit_per_s * elapsed) * 1.01


def _today() -> str:
    return time.strftime("d%Y%m%d", time.gmtime())
