"""One policy, two executors, decision by decision: a burst replayed through tidegate's
``ScalingDecider`` (the policy as a tidegate config loads it) and through the Kubernetes HPA
driven by the ScaledObject the chart renders from the same block (tests/deploy/hpa.py) gives the
same replica count at every HPA sync."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.chart import named, render
from tests.deploy.hpa import Hpa
from tidegate.autoscaling.policy import ScalingDecider, ScalingSample, effective_target
from tidegate.config import AutoscalingPolicy

SYNC_S = 15  # the HPA's default sync period; tidegate is sampled at the same instants
SLOTS = 8  # requests one replica serves at once (max_num_seqs)


def _load(t: float) -> int:
    """Requests in the pool (in flight + waiting): baseline, a burst, a lull, then nothing."""
    if t < 120:
        return 12
    if t < 300:
        return 100
    if t < 600:
        return 40
    return 0


Signal = Callable[[int, int], float]
SIGNALS: dict[str, Signal] = {
    # (in flight + waiting) per routed ready replica
    "in_flight_per_replica": lambda load, ready: load / ready,
    # waiting in the gateway's queue (beyond the replicas' slots) per routed ready replica
    "queue_depth": lambda load, ready: max(0, load - SLOTS * ready) / ready,
}
CASES: dict[str, dict[str, Any]] = {
    "in-flight": {"signal": "in_flight_per_replica", "target": 16.0},
    "queue-depth": {"signal": "queue_depth", "target": 7.0},
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_hpa_and_tidegate_scale_a_burst_alike(case: str) -> None:
    block = {
        "enabled": True,
        "min_replicas": 1,
        "max_replicas": 4,
        "scale_up_stabilization_s": 20,
        "scale_down_stabilization_s": 50,
        "cooldown_s": 100,
        # The HPA has no idle rule (KEDA's cooldownPeriod acts only at min_replicas 0).
        "idle_scale_to_min_s": 0,
        **CASES[case],
    }
    policy = AutoscalingPolicy.model_validate(block)
    signal = SIGNALS[policy.signal]
    decider = ScalingDecider(policy, target=effective_target(policy, None))
    values = {"engines": {"pools": [{"name": "chat", "model": "m", "autoscaling": block}]}}
    hpa = Hpa(named(render(values), "ScaledObject", "tg-tidegate-engine-chat")["spec"], current=1)
    tidegate_replicas, hpa_replicas = [], []
    for step in range(900 // SYNC_S):
        now = float(step * SYNC_S)
        routed = decider.desired_routed
        sample = ScalingSample(
            now=now,
            routed_ready=routed,
            standby_ready=0,
            starting=0,
            signal_value=signal(_load(now), routed),
            requests_seen=_load(now) > 0,
        )
        tidegate_replicas.append(decider.decide(sample).desired_routed)
        hpa_replicas.append(hpa.step(now, signal(_load(now), hpa.current)))
    assert hpa_replicas == tidegate_replicas
    # Not a flat line: the burst reached max_replicas and the pool came back to min_replicas.
    assert max(tidegate_replicas) == 4 and tidegate_replicas[-1] == 1
    assert tidegate_replicas[:8] == [1] * 8
