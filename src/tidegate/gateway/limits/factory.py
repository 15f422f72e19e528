"""Builds the limiter the configuration asks for (called once, from the app's lifespan)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry

from tidegate.config import LimitsConfig, ModelPrice
from tidegate.gateway.limits.limiter import Limiter
from tidegate.gateway.limits.memory import MemoryLimitStore
from tidegate.gateway.limits.metrics import LimiterMetrics
from tidegate.gateway.limits.model import LimitStore
from tidegate.gateway.limits.redis_store import RedisLimitStore
from tidegate.gateway.pricing import PriceTable


def build_limiter(
    *,
    limits: LimitsConfig,
    pricing: Mapping[str, ModelPrice],
    registry: CollectorRegistry | None,
    clock: Callable[[], float] = time.time,
) -> Limiter:
    """``registry``: where the limiter's counters go (the app's metrics registry).
    ``clock``: wall time for budget periods and in-process buckets (tests inject one)."""
    store: LimitStore
    if limits.backend == "redis":
        store = RedisLimitStore(
            url=limits.redis_url.get_secret_value(),
            timeout_s=limits.redis_timeout_s,
            key_prefix=limits.key_prefix,
        )
    else:
        store = MemoryLimitStore(clock=clock)
    return Limiter(
        store=store,
        prices=PriceTable(prices=pricing),
        metrics=None if registry is None else LimiterMetrics(registry=registry),
        clock=clock,
    )
