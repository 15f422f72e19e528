"""The local pools' replica counts and scaling events as Prometheus metrics.

Labels come from fixed sets: ``pool`` is a local pool name from config, ``replica`` one of its
replica ids (bounded by max_replicas), ``state`` one of ``POOL_REPLICA_STATES``,
``direction`` up or down, ``reason`` one of ``autoscaling.policy.SCALING_REASONS``.
`tidegate bench --scenario burst` reads them; the signals themselves are exported by
``scheduling.signals`` for every pool.
"""

from __future__ import annotations

import contextlib
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from tidegate.autoscaling.policy import ScalingReason

PoolReplicaState = Literal["starting", "standby", "ready", "draining"]
POOL_REPLICA_STATES: Final[tuple[PoolReplicaState, ...]] = (
    "starting",
    "standby",
    "ready",
    "draining",
)
Direction = Literal["up", "down"]


class ScalingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._replicas = Gauge(
            "tidegate_pool_replicas",
            "A local pool's replicas by state: starting (loading), standby (warm, not routed), "
            "ready (routed) and draining.",
            ["pool", "state"],
            registry=registry,
        )
        self._desired = Gauge(
            "tidegate_pool_desired_replicas",
            "Routed replicas a local pool's autoscaling policy wants (its fixed count without "
            "autoscaling).",
            ["pool"],
            registry=registry,
        )
        self._events = Counter(
            "tidegate_pool_scale_events",
            "Replicas a local pool's autoscaler added (up: started or promoted a standby) or "
            "took away (down), by reason.",
            ["pool", "direction", "reason"],
            registry=registry,
        )
        self._first_request = Gauge(
            "tidegate_replica_first_request_timestamp_seconds",
            "Unix time a local replica served its first routed request.",
            ["pool", "replica"],
            registry=registry,
        )

    def replicas(self, pool: str, counts: dict[PoolReplicaState, int], desired: int) -> None:
        for state in POOL_REPLICA_STATES:
            self._replicas.labels(pool, state).set(counts.get(state, 0))
        self._desired.labels(pool).set(desired)

    def scaled(self, pool: str, direction: Direction, reason: ScalingReason, count: int) -> None:
        self._events.labels(pool, direction, reason).inc(count)

    def first_request(self, pool: str, replica: str, at: float) -> None:
        self._first_request.labels(pool, replica).set(at)

    def forget_first_request(self, pool: str, replica: str) -> None:
        """A new replica reuses the id: the earlier one's time no longer applies."""
        with contextlib.suppress(KeyError):
            self._first_request.remove(pool, replica)
