"""ScalingDecider on a fake clock: stabilisation windows, cooldown, min/max, idle, standbys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tidegate.autoscaling.policy import (
    ScalingDecider,
    ScalingDecision,
    ScalingSample,
    effective_target,
)
from tidegate.config import AutoscalingPolicy, EnginePoolConfig, EnginesConfig, load_config


def policy(**fields: Any) -> AutoscalingPolicy:
    base: dict[str, Any] = {
        "enabled": True,
        "min_replicas": 1,
        "max_replicas": 4,
        "target": 10.0,
        "scale_up_stabilization_s": 0.0,
        "scale_down_stabilization_s": 0.0,
        "cooldown_s": 0.0,
        "idle_scale_to_min_s": 0.0,
    }
    return AutoscalingPolicy(**{**base, **fields})


class Clocked:
    """A decider fed samples on a fake clock; ``load`` is the pool's total load, turned into
    the per-replica signal the executor would compute."""

    def __init__(self, p: AutoscalingPolicy, *, current: int | None = None) -> None:
        self.decider = ScalingDecider(p, target=p.target, current_routed=current)
        self.now = 1000.0

    def step(
        self,
        load: float,
        *,
        ready: int | None = None,
        dt: float = 1.0,
        seen: bool = True,
        standby: int = 0,
    ) -> ScalingDecision:
        self.now += dt
        routed = self.decider.desired_routed if ready is None else ready
        signal = load / routed if routed else load
        return self.decider.decide(
            ScalingSample(
                now=self.now,
                routed_ready=routed,
                standby_ready=standby,
                starting=0,
                signal_value=signal,
                requests_seen=seen,
            )
        )


def test_scales_up_by_the_load_over_the_target_and_clamps_to_max() -> None:
    sim = Clocked(policy())
    assert sim.step(5).reason is None  # under target: stay at 1
    decision = sim.step(25)  # ceil(25 / 10) = 3
    assert (decision.desired_routed, decision.reason) == (3, "queue_pressure")
    assert sim.step(1000).desired_routed == 4  # max_replicas
    assert sim.step(1000).reason is None


def test_exactly_at_target_does_not_add_a_replica() -> None:
    sim = Clocked(policy(target=16.0), current=3)
    assert sim.step(48).desired_routed == 3  # 3 × 16 / 16, not 3.0000000004


def test_scale_up_stabilisation_takes_the_lowest_recent_recommendation() -> None:
    sim = Clocked(policy(scale_up_stabilization_s=5.0))
    # A one-second spike is not enough: the window still holds the quiet recommendation.
    assert sim.step(5).desired_routed == 1
    assert sim.step(40).desired_routed == 1
    for _ in range(4):
        assert sim.step(40).desired_routed == 1
    # Five seconds after the quiet sample left the window, every recommendation says 4.
    decision = sim.step(40)
    assert (decision.desired_routed, decision.reason) == (4, "queue_pressure")


def test_scale_up_goes_to_the_lowest_level_sustained_in_the_window() -> None:
    sim = Clocked(policy(scale_up_stabilization_s=2.0))
    sim.step(5)
    sim.step(20)  # recommends 2
    sim.step(40)  # recommends 4
    assert sim.step(40).desired_routed == 2  # window: 2, 4, 4 → lowest is 2


def test_scale_down_stabilisation_takes_the_highest_recent_recommendation() -> None:
    sim = Clocked(policy(scale_down_stabilization_s=10.0), current=3)
    sim.step(30)
    for _ in range(10):  # the load fell, but the window still holds the 3
        assert sim.step(5).desired_routed == 3
    decision = sim.step(5)
    assert (decision.desired_routed, decision.reason) == (2, "low_load")


def test_scale_down_stops_one_replica_per_step() -> None:
    sim = Clocked(policy(), current=4)
    assert sim.step(0).desired_routed == 3
    assert sim.step(0).desired_routed == 2
    assert sim.step(0).desired_routed == 1
    assert sim.step(0).desired_routed == 1  # min_replicas


def test_never_two_scale_downs_within_the_cooldown() -> None:
    sim = Clocked(policy(cooldown_s=30.0), current=4)
    downs = []
    for _ in range(120):
        before = sim.decider.desired_routed
        decision = sim.step(0)
        if decision.desired_routed < before:
            downs.append(sim.now)
    assert len(downs) == 3
    assert all(later - earlier >= 30.0 for earlier, later in zip(downs, downs[1:], strict=False))


def test_cooldown_does_not_hold_back_a_scale_up() -> None:
    sim = Clocked(policy(cooldown_s=300.0), current=3)
    assert sim.step(0).desired_routed == 2
    assert sim.step(35).desired_routed == 4  # load came back: up at once


def test_min_replicas_is_the_floor_and_is_restored() -> None:
    sim = Clocked(policy(min_replicas=2), current=0)
    decision = sim.step(0, ready=0)
    assert (decision.desired_routed, decision.reason) == (2, "min_replicas")
    for _ in range(5):
        assert sim.step(0).desired_routed == 2


def test_idle_goes_straight_to_min() -> None:
    sim = Clocked(policy(idle_scale_to_min_s=20.0, scale_down_stabilization_s=600), current=4)
    sim.step(40)
    for _ in range(19):  # the long down window holds 4 while requests trickle... then stop
        assert sim.step(0, seen=False).desired_routed == 4
    decision = sim.step(0, seen=False)
    assert (decision.desired_routed, decision.reason) == (1, "idle")


def test_idle_respects_the_cooldown() -> None:
    sim = Clocked(policy(idle_scale_to_min_s=5.0, cooldown_s=60.0), current=4)
    assert sim.step(30).desired_routed == 3  # a low_load scale-down at t=1001
    scaled_down_at = sim.now
    while sim.now < scaled_down_at + 59:  # idle since t=1006, but within the cooldown
        assert sim.step(0, seen=False).desired_routed == 3
    decision = sim.step(0, seen=False)
    assert (sim.now - scaled_down_at, decision.desired_routed, decision.reason) == (
        60.0,
        1,
        "idle",
    )


def test_a_request_resets_the_idle_clock() -> None:
    sim = Clocked(policy(idle_scale_to_min_s=10.0, scale_down_stabilization_s=600), current=3)
    sim.step(30)
    for _ in range(9):
        sim.step(0, seen=False)
    sim.step(0, seen=True)
    for _ in range(9):
        assert sim.step(0, seen=False).desired_routed == 3
    assert sim.step(0, seen=False).reason == "idle"


def test_zero_ready_replicas_with_load_wants_one() -> None:
    sim = Clocked(policy(min_replicas=0), current=0)
    assert sim.step(0, ready=0, seen=False).desired_routed == 0
    decision = sim.step(3, ready=0)
    assert (decision.desired_routed, decision.reason) == (1, "queue_pressure")
    # A request arriving with nothing queued yet is load too.
    sim2 = Clocked(policy(min_replicas=0), current=0)
    assert sim2.step(0, ready=0, seen=True).desired_routed == 1


def test_zero_ready_replicas_keep_the_wanted_count_while_loading() -> None:
    sim = Clocked(policy(min_replicas=2))
    # Both are still loading: the queue grows but nothing is ready to divide it by.
    for _ in range(5):
        assert sim.step(500, ready=0).desired_routed == 2


def test_warm_standby_fills_what_fits_under_max() -> None:
    p = policy(min_replicas=1, max_replicas=2, warm_standby=1)
    sim = Clocked(p)
    assert sim.decider.desired_standby == 1
    decision = sim.step(15)  # promote: 2 routed, no room for a standby
    assert (decision.desired_routed, decision.desired_standby) == (2, 0)
    decision = sim.step(0)  # back to 1 routed: the standby is refilled
    assert (decision.desired_routed, decision.desired_standby, decision.reason) == (
        1,
        1,
        "low_load",
    )


def test_standby_refill_reason_when_only_the_standby_changes() -> None:
    p = policy(min_replicas=1, max_replicas=3, warm_standby=1)
    decider = ScalingDecider(p, target=p.target, current_routed=3)
    decider.desired_standby = 0  # as after a promotion at max
    decision = decider.decide(ScalingSample(1.0, 3, 0, 0, 30.0 / 3, True))
    assert decision == ScalingDecision(3, 0, None)
    decision = decider.decide(ScalingSample(2.0, 3, 0, 0, 0.0, True))
    assert decision == ScalingDecision(2, 1, "low_load")


def test_predicted_wait_prescales_against_a_fraction_of_the_ttft_target() -> None:
    p = policy(signal="predicted_wait", target=99.0, prescale_fraction=0.5)
    target = effective_target(p, ttft_target_s=2.0)
    assert target == 1.0
    assert effective_target(p, ttft_target_s=None) == 99.0
    assert effective_target(policy(target=7.0), ttft_target_s=2.0) == 7.0
    decider = ScalingDecider(p, target=target)
    # A predicted wait of 1.5 s against 1 s: one replica more, before the 2 s target is broken.
    decision = decider.decide(ScalingSample(0.0, 1, 0, 0, 1.5, True))
    assert (decision.desired_routed, decision.reason) == (2, "prescale")


def test_non_positive_target_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        ScalingDecider(policy(), target=0.0)


def test_policy_bounds_are_validated() -> None:
    with pytest.raises(ValidationError, match="must not exceed"):
        AutoscalingPolicy(min_replicas=3, max_replicas=2)
    with pytest.raises(ValidationError, match="does not fit"):
        AutoscalingPolicy(min_replicas=2, max_replicas=2, warm_standby=1)
    with pytest.raises(ValidationError):
        AutoscalingPolicy.model_validate({"signal": "cpu"})
    with pytest.raises(ValidationError):
        AutoscalingPolicy(prescale_fraction=0)


def test_pools_carry_their_policy(tmp_path: Any) -> None:
    engines = EnginesConfig(
        autoscaling=policy(min_replicas=1, max_replicas=2),
        pools=[EnginePoolConfig(name="cand", autoscaling=policy(max_replicas=3, warm_standby=1))],
    )
    main, cand = engines.local_pools()
    assert (main.initial_replicas, main.most_replicas) == (1, 2)
    assert (cand.initial_replicas, cand.most_replicas) == (2, 3)
    fixed = EnginesConfig(replicas=2).local_pools()[0]
    assert (fixed.autoscaling.enabled, fixed.initial_replicas, fixed.most_replicas) == (
        False,
        2,
        2,
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        "engines:\n  autoscaling:\n    enabled: true\n    max_replicas: 3\n"
        "    signal: queue_depth\n    target: 4\n"
    )
    loaded = load_config(path).engines.autoscaling
    assert (loaded.enabled, loaded.max_replicas, loaded.signal, loaded.target) == (
        True,
        3,
        "queue_depth",
        4.0,
    )


def test_the_readme_policy_example_is_a_valid_config(tmp_path: Any) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Autoscaling: local replicas on queue pressure", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "tidegate.yaml"
    path.write_text(block)
    loaded = load_config(path).engines.autoscaling
    assert loaded == AutoscalingPolicy(enabled=True, target=16)
