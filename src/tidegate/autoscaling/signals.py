"""What each autoscaling signal measures, from a pool's queue counts: the one formula the
gateway's export and local autoscaler (``scheduling.signals``) and the simulator
(``plan.simulate``) share.

- queue_depth: requests waiting in the pool's queue ÷ ready replicas;
- in_flight_per_replica: (in flight + waiting) ÷ ready replicas;
- predicted_wait: the queue's predicted wait for an interactive request, in seconds.

With no replica ready the per-replica signals are the pool's totals (a policy then wants one).
"""

from __future__ import annotations

from typing import Final

from tidegate.config import ScalingSignal

SCALING_SIGNALS: Final[tuple[ScalingSignal, ...]] = (
    "queue_depth",
    "in_flight_per_replica",
    "predicted_wait",
)


def signal_value(
    signal: ScalingSignal, *, ready: int, waiting: int, in_flight: int, predicted_wait_s: float
) -> float:
    """``signal`` of a pool with ``ready`` routed ready replicas."""
    if signal == "predicted_wait":
        return predicted_wait_s
    per = max(1, ready)
    if signal == "queue_depth":
        return waiting / per
    return (in_flight + waiting) / per
