"""Routing metrics: fallbacks between pools, retries, ejections and circuit breakers.

Labels come from fixed sets: ``pool`` is a pool name from config (or DNS discovery's bounded
replica set's pool), ``reason`` one of ``FALLBACK_REASONS``.
"""

from __future__ import annotations

import contextlib
from typing import Literal

from prometheus_client import CollectorRegistry, Counter

from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replica import REPLICA_STATES, Replica

FallbackReason = Literal["unavailable", "overloaded", "spillover", "error"]
FALLBACK_REASONS: tuple[FallbackReason, ...] = ("unavailable", "overloaded", "spillover", "error")


def export_replica_state(metrics: GatewayMetrics, replica: Replica) -> None:
    """``tidegate_replica_state``: 1 for the replica's state, 0 for the others (whoever moved
    it, the supervisor, the health checker or discovery, calls this)."""
    for each in REPLICA_STATES:
        metrics.replica_state.labels(model=replica.model, replica=replica.id, state=each.value).set(
            1 if each is replica.state else 0
        )


def forget_replica_state(metrics: GatewayMetrics, replica: Replica) -> None:
    """Drop a replica's state series (it left the routing table)."""
    for each in REPLICA_STATES:
        with contextlib.suppress(KeyError):
            metrics.replica_state.remove(replica.model, replica.id, each.value)


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._fallbacks = Counter(
            "tidegate_pool_fallbacks",
            "Requests a pool passed on to the next pool of their chain, by reason.",
            ["pool", "reason"],
            registry=registry,
        )
        self._retries = Counter(
            "tidegate_upstream_retries",
            "Requests sent again to another replica of the same pool after a failure before "
            "the first byte (within the retry budget).",
            ["pool"],
            registry=registry,
        )
        self._ejections = Counter(
            "tidegate_replica_ejections",
            "Replicas taken out of rotation by passive outlier detection.",
            ["pool", "replica"],
            registry=registry,
        )

    def fallback(self, pool: str, reason: FallbackReason) -> None:
        self._fallbacks.labels(pool, reason).inc()

    def retry(self, pool: str) -> None:
        self._retries.labels(pool).inc()

    def ejected(self, pool: str, replica: Replica) -> None:
        self._ejections.labels(pool, replica.id).inc()
