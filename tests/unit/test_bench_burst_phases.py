"""The burst scenario's phases: their bounds, which phase a request belongs to, the open-loop
schedule per phase and the closed-loop worker windows."""

from __future__ import annotations

import pytest

from tidegate_bench.phases import (
    BurstPlan,
    phase_at,
    phased_arrivals,
    split_by_phase,
    worker_windows,
)
from tidegate_bench.records import RequestRecord
from tidegate_bench.schedule import ArrivalProcess


def _record(index: int, scheduled_s: float) -> RequestRecord:
    return RequestRecord(
        index=index, target="t", tenant="default", scheduled_s=scheduled_s,
        sent_s=scheduled_s, end_s=scheduled_s + 0.1, content_s=(scheduled_s + 0.05,),
        prompt_tokens=1, output_tokens=1, cached_tokens=None, token_mismatch=False,
        status=200, error="",
    )  # fmt: skip


def test_phases_are_contiguous_and_a_missing_baseline_or_cooldown_is_left_out() -> None:
    plan = BurstPlan(baseline_s=10, burst_s=5, cooldown_s=20, factor=4)
    assert [(p.name, p.start_s, p.end_s, p.factor) for p in plan.phases()] == [
        ("baseline", 0, 10, 1.0), ("burst", 10, 15, 4), ("cooldown", 15, 35, 1.0),
    ]  # fmt: skip
    assert plan.total_s == 35
    only = BurstPlan(baseline_s=0, burst_s=5, cooldown_s=0, factor=2).phases()
    assert [(p.name, p.start_s, p.end_s) for p in only] == [("burst", 0, 5)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"burst_s": 0}, "--burst-s must be > 0"),
        ({"baseline_s": -1}, "--baseline-s must be >= 0"),
        ({"cooldown_s": float("nan")}, "--cooldown-s must be >= 0"),
        ({"factor": 0.5}, "--burst-factor must be >= 1"),
        ({"factor": float("inf")}, "--burst-factor must be >= 1"),
    ],
)
def test_bad_plans_name_the_option(kwargs: dict[str, float], message: str) -> None:
    base = {"baseline_s": 1.0, "burst_s": 1.0, "cooldown_s": 1.0, "factor": 2.0}
    with pytest.raises(ValueError, match=message):
        BurstPlan(**(base | kwargs))


def test_a_request_belongs_to_the_phase_it_was_due_in() -> None:
    phases = BurstPlan(baseline_s=2, burst_s=3, cooldown_s=2, factor=4).phases()
    assert phase_at(phases, 0.0).name == "baseline"  # type: ignore[union-attr]
    assert phase_at(phases, 1.999).name == "baseline"  # type: ignore[union-attr]
    assert phase_at(phases, 2.0).name == "burst"  # type: ignore[union-attr]
    assert phase_at(phases, 7.0).name == "cooldown"  # type: ignore[union-attr]
    assert phase_at(phases, 7.5) is None and phase_at(phases, -0.1) is None
    records = [_record(i, t) for i, t in enumerate((0.5, 1.9, 2.0, 4.9, 5.0, 6.9, 9.0))]
    split = split_by_phase(records, phases)
    assert {k: [r.index for r in v] for k, v in split.items()} == {
        "baseline": [0, 1], "burst": [2, 3], "cooldown": [4, 5],
    }  # fmt: skip


def test_constant_arrivals_follow_each_phases_rate() -> None:
    phases = BurstPlan(baseline_s=2, burst_s=3, cooldown_s=2, factor=4).phases()
    times = phased_arrivals(ArrivalProcess(shape="constant", rate=2), phases, seed=0)
    split = split_by_phase([_record(i, t) for i, t in enumerate(times)], phases)
    assert {k: len(v) for k, v in split.items()} == {"baseline": 4, "burst": 24, "cooldown": 4}
    assert times == sorted(times)
    assert times[4] == 2.0 and times[5] == pytest.approx(2.125)


def test_poisson_arrivals_are_seeded_and_scale_with_the_factor() -> None:
    phases = BurstPlan(baseline_s=100, burst_s=100, cooldown_s=100, factor=5).phases()
    process = ArrivalProcess(shape="poisson", rate=3)
    times = phased_arrivals(process, phases, seed=1)
    assert times == phased_arrivals(process, phases, seed=1)
    assert times != phased_arrivals(process, phases, seed=2)
    counts = {k: len(v) for k, v in split_by_phase(
        [_record(i, t) for i, t in enumerate(times)], phases).items()}  # fmt: skip
    # 300 and 1500 expected; a Poisson count's standard deviation is its root (~17 and ~39).
    assert 240 < counts["baseline"] < 360 and 240 < counts["cooldown"] < 360
    assert 1350 < counts["burst"] < 1650


def test_shapes_with_their_own_timing_are_refused() -> None:
    phases = BurstPlan(baseline_s=1, burst_s=1, cooldown_s=1, factor=2).phases()
    with pytest.raises(ValueError, match="--shape constant, poisson, gamma"):
        phased_arrivals(ArrivalProcess(shape="onoff", rate=1), phases, seed=0)


def test_closed_loop_windows_add_workers_for_the_burst_only() -> None:
    phases = BurstPlan(baseline_s=2, burst_s=3, cooldown_s=4, factor=3).phases()
    windows = worker_windows(phases, 2)
    assert sorted(windows) == [(0, 9), (0, 9), (2, 5), (2, 5), (2, 5), (2, 5)]
    # A burst at the start: the extra workers start with the run; rounding 1.5 x 3 = 4.5 -> 4.
    start = BurstPlan(baseline_s=0, burst_s=3, cooldown_s=4, factor=1.5).phases()
    assert sorted(worker_windows(start, 3)) == [(0, 3), (0, 7), (0, 7), (0, 7)]
