"""Builds the limiter the configuration asks for (called once, from the app's lifespan)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry

from tidegate.config import LimitsConfig, ModelPrice
from tidegate.pipeline.limits.limiter import Limiter
from tidegate.pipeline.limits.memory import MemoryLimitStore
from tidegate.pipeline.limits.metrics import LimiterMetrics, RedisStoreCollector
from tidegate.pipeline.limits.model import LimitStore
from tidegate.pipeline.limits.rebuild import UsageSource
from tidegate.pipeline.limits.redis_store import RedisLimitStore
from tidegate.pipeline.pricing import PriceTable


def build_limit_store(
    limits: LimitsConfig,
    *,
    clock: Callable[[], float] = time.time,
    usage: UsageSource | None = None,
) -> LimitStore:
    """The store limits.backend names (a Redis one opens no connection until ``start``).
    ``usage``: the usage records a Redis store rebuilds lost counters from."""
    if limits.backend == "redis":
        return RedisLimitStore(
            url=limits.redis_url.get_secret_value(),
            timeout_s=limits.redis_timeout_s,
            connect_timeout_s=limits.redis_connect_timeout_s,
            connect_retries=limits.redis_connect_retries,
            max_connections=limits.redis_max_connections,
            key_prefix=limits.key_prefix,
            usage=usage,
        )
    return MemoryLimitStore(clock=clock)


def build_limiter(
    *,
    limits: LimitsConfig,
    pricing: Mapping[str, ModelPrice],
    registry: CollectorRegistry | None,
    clock: Callable[[], float] = time.time,
    store: LimitStore | None = None,
) -> Limiter:
    """``registry``: where the limiter's counters go (the app's metrics registry).
    ``clock``: wall time for budget periods and in-process buckets (tests inject one).
    ``store``: one from ``build_limit_store`` (the app keeps it for health checks)."""
    if store is None:
        store = build_limit_store(limits, clock=clock)
    if registry is not None and isinstance(store, RedisLimitStore):
        registry.register(RedisStoreCollector(store))
    return Limiter(
        store=store,
        prices=PriceTable(prices=pricing),
        metrics=None if registry is None else LimiterMetrics(registry=registry),
        clock=clock,
    )
