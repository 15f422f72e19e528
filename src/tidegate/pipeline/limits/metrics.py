"""The limiter's metrics and its rate-limited warning about an unreachable limit store.

Labels come from fixed sets: ``operation`` admit|settle, ``mode`` closed|open (the tenant's
failure mode), ``code`` one of ``errors.LIMIT_CODES``. No tenant or key id becomes a label here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tidegate.errors import LIMIT_CODES, LimitCode
from tidegate.tenancy.policy import LimiterFailureMode

if TYPE_CHECKING:
    from tidegate.pipeline.limits.redis_store import RedisLimitStore

_LOG_INTERVAL_S = 10.0


class LimiterMetrics:
    def __init__(self, *, registry: CollectorRegistry) -> None:
        unavailable = Counter(
            "tidegate_limiter_unavailable",
            "Limit checks or settlements the limit store (Redis) did not answer, by operation "
            "and the tenant's failure mode (closed: refused, open: admitted unlimited).",
            ["operation", "mode"],
            registry=registry,
        )
        rejections = Counter(
            "tidegate_limit_rejections",
            "Requests refused by a rate limit, concurrency limit or budget, by code.",
            ["code"],
            registry=registry,
        )
        # Children resolved once: the request path then pays an increment, not a label lookup.
        self.unavailable = {
            (operation, mode): unavailable.labels(operation, mode)
            for operation in ("admit", "settle")
            for mode in ("closed", "open")
        }
        self.rejections = {code: rejections.labels(code) for code in LIMIT_CODES}

    def store_unavailable(self, operation: str, mode: LimiterFailureMode) -> None:
        self.unavailable[(operation, mode)].inc()

    def rejected(self, code: LimitCode) -> None:
        self.rejections[code].inc()


class RedisStoreCollector(Collector):
    """The Redis store's recoveries, read at scrape time (nothing counted on the request path):
    ``tidegate_limiter_counters_rebuilt{counter}`` (tenant_tpm, key_tpm, day, month: counters
    found missing in Redis and rebuilt from the usage records; also each new day's and a new
    tenant's), ``tidegate_limiter_leases_held`` and ``tidegate_limiter_lease_renewal_failures``."""

    def __init__(self, store: RedisLimitStore) -> None:
        self._store = store

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        rebuilt = CounterMetricFamily(
            "tidegate_limiter_counters_rebuilt",
            "Limit counters missing in Redis (restart, eviction, new period) rebuilt from the "
            "usage records, by counter.",
            labels=["counter"],
        )
        for kind, count in self._store.rebuilt.items():
            rebuilt.add_metric([kind], count)
        yield rebuilt
        leases = self._store.leases
        yield GaugeMetricFamily(
            "tidegate_limiter_leases_held",
            "Concurrency leases this gateway holds in Redis and renews.",
            value=leases.held,
        )
        yield CounterMetricFamily(
            "tidegate_limiter_lease_renewal_failures",
            "Lease renewal rounds Redis did not answer (leases expire 6 s after the last one).",
            value=leases.renewal_failures,
        )


class ThrottledWarning:
    """Logs a warning at most once per interval and says how many were held back."""

    def __init__(self, *, logger: logging.Logger, interval_s: float = _LOG_INTERVAL_S) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._next = 0.0
        self._held_back = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held_back += 1
            return
        held_back, self._held_back, self._next = self._held_back, 0, now + self._interval_s
        if held_back:
            self._logger.warning(message + " (%d more like this held back)", *args, held_back)
        else:
            self._logger.warning(message, *args)
