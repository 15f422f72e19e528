"""The simulator on a shared host: ``host_speedup`` slows every replica when several are
active (a loading one included, by ``loading_load``), and ``cold_start_busy_s`` is the cold
start of a replica started while another one serves."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tidegate.config import AutoscalingPolicy
from tidegate.plan.pool_model import PoolModel, PoolModelError, parse_host_speedup
from tidegate.plan.simulate import QueueSettings, simulate
from tidegate.plan.traces import TraceRequest

ONE = PoolModel(max_concurrency=1, first_token_s=1.0, tpot_s=0.0, cold_start_s=10.0)
"""One request at a time, 1 s each, 10 s cold start."""


def at(*times: float) -> list[TraceRequest]:
    return [TraceRequest(t, 10, 1) for t in times]


def scaling(**fields: object) -> AutoscalingPolicy:
    base: dict[str, object] = {
        "enabled": True, "min_replicas": 1, "max_replicas": 2, "signal": "in_flight_per_replica",
        "target": 1.0, "scale_down_stabilization_s": 0.0, "cooldown_s": 0.0,
        "idle_scale_to_min_s": 0.0,
    }  # fmt: skip
    base.update(fields)
    return AutoscalingPolicy.model_validate(base)


def test_two_replicas_at_speedup_141_serve_fewer_than_at_2() -> None:
    # 40 one-second requests at once on two replicas, 22 s queue timeout: at 2.0 (linear) the
    # last is granted at 19 s; at 1.41 each replica takes 1 / 0.705 s a request.
    trace, queue = at(*([0.0] * 40)), QueueSettings(queue_timeout_s=22.0)
    linear = simulate(trace, ONE, 2, queue=queue)
    explicit = simulate(trace, replace(ONE, host_speedup=(1.0, 2.0)), 2, queue=queue)
    shared = simulate(trace, replace(ONE, host_speedup=(1.0, 1.41)), 2, queue=queue)
    assert linear.count("ok") == 40
    assert [r.ttft_s for r in explicit.requests] == [r.ttft_s for r in linear.requests]
    assert shared.count("ok") < linear.count("ok")
    assert shared.count("queue_timeout") == 40 - shared.count("ok") > 0
    # Each request takes 1 / (1.41 / 2) s: the first two end together.
    assert shared.requests[0].ttft_s == pytest.approx(2 / 1.41)
    assert shared.requests[1].ttft_s == pytest.approx(2 / 1.41)


def test_one_replica_alone_is_not_slowed() -> None:
    result = simulate(at(0.0, 0.0), replace(ONE, host_speedup=(1.0, 1.2)), 1)
    assert [r.ttft_s for r in result.requests] == [1.0, 2.0]


def test_a_loading_replica_slows_the_serving_one_by_its_load_share() -> None:
    # Twenty requests at 0.5: the evaluation at t = 1 starts a second replica; the first
    # request has 0.5 s of work left, from then at speedup(2) / 2 = 0.5 (no gain from two).
    trace = at(*([0.5] * 20))
    model = replace(ONE, host_speedup=(1.0, 1.0))
    loading = simulate(trace, model, scaling())
    assert loading.replicas[1].started_s == 1.0
    assert loading.requests[0].ttft_s == pytest.approx(1.5)
    idle_load = simulate(trace, replace(model, loading_load=0.0), scaling())
    assert idle_load.requests[0].ttft_s == pytest.approx(1.0)
    half = simulate(trace, replace(model, loading_load=0.5), scaling())
    # 1.5 active, total 1.0: each at 2/3.
    assert half.requests[0].ttft_s == pytest.approx(0.5 + 0.5 * 1.5)


def test_cold_start_busy_is_used_when_another_replica_is_serving() -> None:
    trace = at(*([0.5] * 40), *(60.0 + i for i in range(3)))  # still queued at 26 s
    busy = simulate(trace, replace(ONE, cold_start_busy_s=25.0), scaling())
    second = busy.replicas[1]
    assert (second.started_s, second.ready_s) == (1.0, 26.0)
    assert simulate(trace, ONE, scaling()).replicas[1].ready_s == 11.0  # default: cold_start_s


def test_cold_start_busy_is_not_used_when_nobody_serves() -> None:
    # A pool at zero: its first replica starts with nothing serving, so it takes cold_start_s.
    model = replace(ONE, cold_start_busy_s=25.0)
    zero = scaling(min_replicas=0, max_replicas=1, scale_down_stabilization_s=30.0)
    result = simulate(at(0.2, 0.4, 5.0, 12.0), model, zero)
    assert (result.replicas[0].started_s, result.replicas[0].ready_s) == (1.0, 11.0)


@pytest.mark.parametrize(
    "fields",
    [
        {"host_speedup": (1.2, 2.0)},
        {"host_speedup": (1.0, -1.0)},
        {"host_speedup": (1.0, float("nan"))},
        {"host_speedup": ()},
        {"host_speedup": (1.0, True)},
        {"loading_load": 1.5},
        {"loading_load": -0.1},
        {"cold_start_busy_s": -1.0},
        {"cold_start_busy_s": float("inf")},
    ],
)
def test_bad_shared_host_fields_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(PoolModelError):
        PoolModel(max_concurrency=1, first_token_s=1.0, tpot_s=0.0, **fields)  # type: ignore[arg-type]


def test_host_speedup_parses_from_the_command_line_form() -> None:
    assert parse_host_speedup("1,1.41") == (1.0, 1.41)
    for bad in ("", "1,", "1,x", "2,3", "1,0", "1,inf"):
        with pytest.raises(PoolModelError):
            parse_host_speedup(bad)


def test_past_the_table_the_host_gives_no_more() -> None:
    model = replace(ONE, host_speedup=(1.0, 1.5))
    assert model.host_factor(1) == 1.0
    assert model.host_factor(2) == pytest.approx(0.75)
    assert model.host_factor(1.5) == pytest.approx(1.25 / 1.5)
    assert model.host_factor(3) == pytest.approx(0.5)
    assert replace(ONE).host_factor(3) == 1.0  # no table: linear
