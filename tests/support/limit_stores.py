"""Limiters on either limit store, for tests that must hold with both: the in-process store, and
the Redis store against the real local Redis under a key prefix of its own (deleted after)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

import pytest
import redis.asyncio as aioredis

from tidegate.config import ModelPrice
from tidegate.pipeline.limits import Limiter, MemoryLimitStore, RedisLimitStore
from tidegate.pipeline.pricing import PriceTable

REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
StoreKind = Literal["memory", "redis"]
STORE_KINDS: tuple[StoreKind, ...] = ("memory", "redis")
PRICES = {"priced": ModelPrice(input_per_million=1.0, output_per_million=2.0)}


async def redis_reachable() -> bool:
    """Whether the local Redis answers; skips the test when not, unless Redis is required."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as error:
        if os.environ.get("TIDEGATE_TEST_REQUIRE_REDIS"):
            raise
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {error}")
    finally:
        await client.aclose()
    return True


@asynccontextmanager
async def limiter_on(kind: StoreKind, clock: Callable[[], float]) -> AsyncIterator[Limiter]:
    """A limiter on a fresh store of ``kind``; times come from ``clock`` (Redis included)."""
    prices = PriceTable(prices=PRICES)
    if kind == "memory":
        limiter = Limiter(store=MemoryLimitStore(clock=clock), prices=prices, clock=clock)
        yield limiter
        await limiter.aclose()
        return
    prefix = f"tidegate-test-exact-{uuid.uuid4().hex[:12]}"
    store = RedisLimitStore(url=REDIS_URL, timeout_s=5.0, key_prefix=prefix, clock=clock)
    limiter = Limiter(store=store, prices=prices, clock=clock)
    try:
        yield limiter
    finally:
        await limiter.aclose()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
