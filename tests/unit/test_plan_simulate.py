"""The scaling simulator on deterministic traces: hand-computed queues, the M/D/1 and M/D/c
waits, processor sharing, and the ScalingDecider's scale-ups, cold starts, cooldown, standbys
and drains as the simulated pool carries them out."""

from __future__ import annotations

import math
import random

import pytest

from tidegate.autoscaling.policy import SCALING_REASONS
from tidegate.config import AutoscalingPolicy
from tidegate.percentiles import percentile
from tidegate.plan.pool_model import PoolModel
from tidegate.plan.simulate import (
    PolicySpec,
    QueueSettings,
    SimulationResult,
    simulate,
)
from tidegate.plan.traces import TraceRequest


def pool(**overrides: float) -> PoolModel:
    """One request at a time, 1 s to the first token, nothing after it, 10 s cold start."""
    values: dict[str, float] = {
        "max_concurrency": 1,
        "first_token_s": 1.0,
        "tpot_s": 0.0,
        "cold_start_s": 10.0,
    }
    values.update(overrides)
    return PoolModel(
        max_concurrency=int(values["max_concurrency"]),
        first_token_s=values["first_token_s"],
        tpot_s=values["tpot_s"],
        slowdown=values.get("slowdown", 0.0),
        cold_start_s=values["cold_start_s"],
    )


def at(*times: float, completion: int = 1) -> list[TraceRequest]:
    return [TraceRequest(t, 10, completion) for t in times]


def policy(**fields: object) -> AutoscalingPolicy:
    base: dict[str, object] = {
        "enabled": True,
        "min_replicas": 1,
        "max_replicas": 2,
        "signal": "in_flight_per_replica",
        "target": 1.0,
        "scale_down_stabilization_s": 0.0,
        "cooldown_s": 0.0,
        "idle_scale_to_min_s": 0.0,
    }
    base.update(fields)
    return AutoscalingPolicy.model_validate(base)


def ttfts(result: SimulationResult) -> list[float | None]:
    return [r.ttft_s for r in result.requests]


def test_one_slot_serves_a_queue_in_arrival_order() -> None:
    result = simulate(at(0.0, 0.0, 0.0, 5.0), pool(), 1)
    assert ttfts(result) == [1.0, 2.0, 3.0, 1.0]
    assert [r.queue_wait_s for r in result.requests] == [0.0, 1.0, 2.0, 0.0]
    assert result.duration_s == 6.0
    assert result.replica_hours == pytest.approx(6.0 / 3600)


def test_decode_time_follows_the_first_token() -> None:
    # 1 s to the first token, then 4 more tokens at 0.25 s: the slot is held 2 s.
    result = simulate(at(0.0, 0.0, completion=5), pool(tpot_s=0.25), 1)
    assert ttfts(result) == [1.0, 3.0]
    assert [r.e2e_s for r in result.requests] == [2.0, 4.0]


def test_concurrent_requests_share_the_replica_by_the_slowdown() -> None:
    # Two at once with slowdown 1: each runs at half speed. The first alone for 0.5 s does
    # half its work; then both at half speed: the first needs 1 s more, the second 0.5 s of
    # work (1 s) then alone at full speed for its last 0.5 s.
    result = simulate(at(0.0, 0.5), pool(max_concurrency=2, slowdown=1.0), 1)
    assert ttfts(result) == pytest.approx([1.5, 1.5])


def test_the_queue_refuses_when_full_and_times_out_waiters() -> None:
    queue = QueueSettings(max_queue_depth=2, queue_timeout_s=5.0)
    result = simulate(at(0.0, 0.0, 0.0, 0.0, 0.0), pool(first_token_s=10.0), 1, queue=queue)
    assert [r.status for r in result.requests] == [
        "ok", "queue_timeout", "queue_timeout", "queue_full", "queue_full"
    ]  # fmt: skip
    assert result.count("queue_full") == 2 and result.count("queue_timeout") == 2
    assert result.duration_s == 10.0


def poisson(rate: float, n: int, seed: int) -> list[TraceRequest]:
    rnd, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        t += rnd.expovariate(rate)
        out.append(TraceRequest(t, 10, 1))
    return out


def erlang_c(servers: int, load: float) -> float:
    """Probability an arrival waits in M/M/c with offered load ``load`` = λ/μ."""
    rho = load / servers
    top = load**servers / math.factorial(servers) / (1 - rho)
    return top / (sum(load**k / math.factorial(k) for k in range(servers)) + top)


def test_a_fixed_pool_waits_like_m_d_1() -> None:
    # M/D/1: mean wait = ρ D / (2 (1 - ρ)); ρ = 0.5, D = 1 s: 0.5 s.
    result = simulate(poisson(0.5, 40_000, seed=1), pool(), 1)
    waits = [r.queue_wait_s for r in result.requests if r.queue_wait_s is not None]
    assert len(waits) == 40_000
    assert sum(waits) / len(waits) == pytest.approx(0.5, rel=0.05)


def test_a_fixed_pool_of_slots_waits_like_m_d_c() -> None:
    # Two replicas of two slots, D = 1 s, ρ = 0.7: M/D/c's mean wait is about half of
    # M/M/c's (Cosmetatos); the pool's four slots act as one queue in front of c = 4 servers.
    servers, rate = 4, 2.8
    mmc = erlang_c(servers, rate) / (servers - rate)
    result = simulate(poisson(rate, 60_000, seed=2), pool(max_concurrency=2), 2)
    waits = [r.queue_wait_s for r in result.requests if r.queue_wait_s is not None]
    assert sum(waits) / len(waits) == pytest.approx(mmc / 2, rel=0.1)


def test_a_burst_scales_up_and_the_new_replica_serves_after_its_cold_start() -> None:
    # One slot per replica, target 1 in flight per replica: twenty 1-s requests at t = 0.5
    # want more; the first evaluation (t = 1) starts a replica, ready 10 s later.
    trace = at(*([0.5] * 20), *(30.0 + i for i in range(5)))
    result = simulate(trace, pool(), policy())
    first = result.events[0]
    assert (first.t, first.direction, first.reason) == (1.0, "up", "queue_pressure")
    assert (first.desired_from, first.desired_to) == (1, 2)
    second = result.replicas[1]
    assert second.started_s == 1.0 and second.ready_s == 11.0
    assert second.first_request_s == 11.0  # the queue was waiting for it
    at_5 = next(p for p in result.timeline if p.t == 5.0)
    assert (at_5.desired, at_5.ready, at_5.starting) == (2, 1, 1)
    at_12 = next(p for p in result.timeline if p.t == 12.0)
    assert (at_12.ready, at_12.starting) == (2, 0)
    assert {e.reason for e in result.events} <= set(SCALING_REASONS)


def test_scale_downs_keep_the_cooldown_apart() -> None:
    trace = at(*([0.5] * 30), 60.0, 80.0, 100.0, 120.0)
    result = simulate(trace, pool(), policy(max_replicas=3, cooldown_s=15.0))
    downs = [e.t for e in result.events if e.direction == "down"]
    assert len(downs) == 2
    assert downs[1] - downs[0] >= 15.0
    ups = [e for e in result.events if e.direction == "up"]
    assert ups and max(e.desired_to for e in ups) == 3


def test_a_warm_standby_is_promoted_at_once_and_a_new_one_loads() -> None:
    # Ten requests per 5 in flight per replica: two routed replicas wanted at t = 1.
    trace = at(*([0.5] * 10), 30.0)
    result = simulate(trace, pool(), policy(max_replicas=3, warm_standby=1, target=5.0))
    standby = result.replicas[1]
    assert standby.ready_s == 0.0 and standby.first_request_s == 1.0  # no load wait
    refill = result.replicas[2]
    assert refill.started_s == 1.0 and refill.ready_s == 11.0
    at_2 = next(p for p in result.timeline if p.t == 2.0)
    assert (at_2.ready, at_2.standby, at_2.starting) == (2, 0, 1)
    # The same burst without the standby waits for the cold start.
    cold = simulate(trace, pool(), policy(max_replicas=3, target=5.0))
    assert max(t for t in ttfts(cold) if t) > max(t for t in ttfts(result) if t)


def test_a_drained_replica_finishes_its_work_before_it_stops() -> None:
    # queue_depth, target 1, one 31-s request per slot. Four at t = 0.5: a second replica
    # starts at t = 1 (ready at 11, takes request 2). Request 1 ends at 31.5 and request 3
    # starts on replica 0; one waits on two replicas, so at t = 32 the policy wants one: of
    # the two equally busy, the highest index (replica 1) drains, as the supervisor picks. It
    # finishes request 2 at 42 and stops; its slot was held till then, so request 4 starts
    # on replica 0 after request 3, at 62.5 (the gateway's queue counts a draining replica's
    # requests but not its capacity).
    trace = at(0.5, 0.5, 0.5, 0.5, completion=31)
    long_wait = QueueSettings(queue_timeout_s=600.0)
    result = simulate(trace, pool(tpot_s=1.0), policy(signal="queue_depth"), queue=long_wait)
    down = next(e for e in result.events if e.direction == "down")
    assert (down.t, down.reason, down.desired_to) == (32.0, "low_load", 1)
    assert all(r.ok for r in result.requests)
    assert [r.replica for r in result.requests] == [0, 1, 0, 0]
    assert [r.end_s for r in result.requests] == [31.5, 42.0, 62.5, 93.5]
    assert result.replicas[1].stopped_s == 42.0 and result.replicas[0].stopped_s is None
    at_40 = next(p for p in result.timeline if p.t == 40.0)
    assert (at_40.ready, at_40.draining, at_40.desired) == (1, 1, 1)


def test_a_pool_at_zero_refuses_until_its_first_replica_is_loaded() -> None:
    # As the gateway: no routed replica ready and nobody queued is a 503 at once; the refused
    # requests still count as load, so the first evaluation starts a replica (ready at 11; the
    # down window keeps it while no request comes).
    zero = policy(min_replicas=0, max_replicas=1, scale_down_stabilization_s=30.0)
    result = simulate(at(0.2, 0.4, 5.0, 12.0), pool(), zero)
    first = result.events[0]
    assert (first.t, first.desired_to, first.reason) == (1.0, 1, "queue_pressure")
    assert [r.status for r in result.requests] == ["no_replica"] * 3 + ["ok"]
    assert result.requests[3].ttft_s == 1.0 and result.replicas[0].ready_s == 11.0
    # A warm standby at zero routed replicas is promoted at the first evaluation instead.
    warm = simulate(at(0.2, 5.0), pool(), zero.model_copy(update={"warm_standby": 1}))
    assert [r.status for r in warm.requests] == ["no_replica", "ok"]
    assert warm.replicas[0].ready_s == 0.0 and warm.replicas[0].first_request_s == 5.0


def test_predicted_wait_prescales_against_the_ttft_target() -> None:
    # predicted_wait with an interactive TTFT target of 2 s and prescale_fraction 0.5: the
    # target is 1 s of predicted wait; three queued 1-s requests predict (3 + 1) × 1 / 1 = 4 s.
    trace = at(0.0, 2.0, 2.1, 2.1, 2.1)
    result = simulate(
        trace,
        pool(),
        policy(signal="predicted_wait", target=100.0),
        queue=QueueSettings(ttft_target_s=2.0),
    )
    assert result.events and result.events[0].reason == "prescale"
    no_target = simulate(
        trace,
        pool(),
        policy(signal="predicted_wait", target=100.0),
        queue=QueueSettings(ttft_target_s=None),
    )
    assert not no_target.events  # 100 s of predicted wait is never reached


def test_the_same_inputs_give_the_same_result() -> None:
    trace = poisson(3.0, 2_000, seed=3)
    model = pool(max_concurrency=2, tpot_s=0.01, slowdown=0.2)
    a = simulate(trace, model, policy(max_replicas=4, cooldown_s=5.0))
    b = simulate(trace, model, policy(max_replicas=4, cooldown_s=5.0))
    assert ttfts(a) == ttfts(b) and a.timeline == b.timeline and a.events == b.events


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 95) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_a_policy_spec_is_a_policy_or_a_count() -> None:
    with pytest.raises(ValueError, match="either"):
        PolicySpec("x")
    with pytest.raises(ValueError, match="at least one"):
        PolicySpec("x", fixed=0)
    with pytest.raises(ValueError, match="no requests"):
        simulate([], pool(), 1)
