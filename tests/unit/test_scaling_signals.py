"""The autoscaling signals of a pool's queue (``scheduling.signals``), and their export."""

from __future__ import annotations

import pytest

from tidegate.autoscaling.signals import signal_value
from tidegate.config import SchedulingConfig
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import Pool, Replica, ReplicaState, RoutingTable
from tidegate.scheduling.scheduler import Scheduler
from tidegate.scheduling.signals import SignalExporter


@pytest.mark.parametrize(
    ("signal", "ready", "expected"),
    [
        ("queue_depth", 2, 3 / 2),
        ("in_flight_per_replica", 2, (4 + 3) / 2),
        ("predicted_wait", 2, 1.25),
        ("queue_depth", 0, 3.0),  # none ready: the pool's totals
        ("in_flight_per_replica", 0, 7.0),
    ],
)
def test_signal_values(signal: str, ready: int, expected: float) -> None:
    value = signal_value(
        signal,  # type: ignore[arg-type]
        ready=ready,
        waiting=3,
        in_flight=4,
        predicted_wait_s=1.25,
    )
    assert value == expected


async def test_every_pool_exports_each_signal_from_its_queue() -> None:
    routing = RoutingTable()
    for index, state in enumerate((ReplicaState.READY, ReplicaState.STARTING)):
        routing.add(
            Replica(
                id=f"r{index}",
                model="m",
                base_url="http://x/v1",
                upstream_model="m",
                state=state,
                max_concurrency=2,
            )
        )
    adapter = Pool("m-lora", base=routing.pool("m"))
    routing.add_adapter(adapter, model="m-lora")
    scheduler = Scheduler(config=SchedulingConfig(), default_concurrency=2)
    metrics = GatewayMetrics()
    exporter = SignalExporter(routing=routing, scheduler=scheduler, registry=metrics.registry)
    pool = routing.pool("m")
    slots = [scheduler.try_acquire(pool, "interactive") for _ in range(2)]
    assert all(slots)
    queue = scheduler.queue(pool)
    queue.enqueue("interactive", tenant="t", cost=1, deadline_s=None)
    exporter.export()

    def value(name: str, signal: str) -> float | None:
        return metrics.registry.get_sample_value(
            "tidegate_pool_scaling_signal", {"pool": name, "signal": signal}
        )

    # One ready replica (the one loading does not count): 1 waiting, 2 in flight.
    assert value("m", "queue_depth") == 1.0
    assert value("m", "in_flight_per_replica") == 3.0
    assert value("m", "predicted_wait") == 0.0  # no slot released yet: nothing known
    assert value("m-lora", "queue_depth") is None  # its requests queue on m
