"""The autoscaling signals of a pool, from its gateway queue, and their export.

One definition serves both executors of an ``AutoscalingPolicy``: the local pools' autoscaler
(``engines.autoscaler``) decides on these values, and every pool's values are exported as
``tidegate_pool_scaling_signal{pool,signal}``, which the Helm chart's KEDA ScaledObject queries
for the engine Deployments it scales (their replicas are remote to the gateway).

What each signal measures is ``autoscaling.signals`` (the simulator uses the same formula).
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Gauge

from tidegate.autoscaling.signals import SCALING_SIGNALS, signal_value
from tidegate.background import BackgroundTask
from tidegate.config import ScalingSignal
from tidegate.routing.replicas import RoutingTable
from tidegate.scheduling.pool_queue import PoolQueue
from tidegate.scheduling.scheduler import Scheduler

EXPORT_INTERVAL_S = 1.0


def queue_signal(signal: ScalingSignal, queue: PoolQueue, *, ready: int) -> float:
    """``signal`` of the pool behind ``queue`` with ``ready`` replicas routed and ready."""
    return signal_value(
        signal,
        ready=ready,
        waiting=queue.waiting,
        in_flight=queue.in_flight,
        predicted_wait_s=queue.predicted_wait_s("interactive") if signal == "predicted_wait" else 0,
    )


class SignalExporter:
    """Sets every pool's signals every ``interval_s`` (on the event loop, where the queues
    live; a scrape renders off it)."""

    def __init__(
        self,
        *,
        routing: RoutingTable,
        scheduler: Scheduler,
        registry: CollectorRegistry,
        interval_s: float = EXPORT_INTERVAL_S,
    ) -> None:
        self._routing = routing
        self._scheduler = scheduler
        self._interval_s = interval_s
        self._gauge = Gauge(
            "tidegate_pool_scaling_signal",
            "A pool's autoscaling signals (AutoscalingPolicy.signal) as this gateway sees them: "
            "the value the Helm chart's KEDA ScaledObject compares with the policy's target.",
            ["pool", "signal"],
            registry=registry,
        )
        self._task = BackgroundTask("scaling-signals", self._run)

    def export(self) -> None:
        for pool in self._routing.pools():
            if pool.base is not None:
                continue  # an adapter pool queues on its base pool: exported there
            queue = self._scheduler.queue(pool)
            ready = sum(1 for replica in pool.replicas if replica.ready)
            for signal in SCALING_SIGNALS:
                self._gauge.labels(pool.name, signal).set(queue_signal(signal, queue, ready=ready))

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            self.export()
            await asyncio.sleep(self._interval_s)
