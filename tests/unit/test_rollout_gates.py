"""The rollout's pure pieces: latency histograms, request counting, the gates, the controller's
decision, step validation and the report."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tidegate.commands.rollout import parse_duration
from tidegate.errors import InvalidRequestError
from tidegate.observability.capture import ResponseCapture
from tidegate.observability.records import RequestRecord
from tidegate.rollout.controller import next_move
from tidegate.rollout.gates import Gates, evaluate
from tidegate.rollout.report import render_report
from tidegate.rollout.rollouts import check_steps
from tidegate.rollout.stats import (
    BUCKETS_S,
    PoolTotals,
    bucket_of,
    count_request,
    is_error,
    percentile,
)
from tidegate.rollout.transitions import RolloutInfo, baseline, judge

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def pool(
    requests: int,
    *,
    errors: int = 0,
    ttft_s: float = 0.1,
    itl_s: float = 0.01,
    json: tuple[int, int] = (0, 0),
) -> PoolTotals:
    totals = PoolTotals(requests=requests, errors=errors)
    totals.json_requests, totals.json_valid = json
    for _ in range(requests - errors):
        totals.observe_latency("ttft", ttft_s)
        totals.observe_latency("itl", itl_s)
        totals.observe_latency("e2e", ttft_s + 10 * itl_s)
    return totals


def rollout(**fields: object) -> RolloutInfo:
    info = RolloutInfo(
        id="ro_test",
        model="chat",
        stable_pool="blue",
        candidate_pool="green",
        steps=(5.0, 25.0, 100.0),
        hold_s=60.0,
        gates=Gates(min_samples=10),
        state="running",
        step_index=0,
        step_started_at=T0,
        reason=None,
        history=(),
        created_at=T0,
        created_by="cli:test",
        updated_at=T0,
        finished_at=None,
    )
    return replace(info, **fields)  # type: ignore[arg-type]


# -- histograms -----------------------------------------------------------------------------------


def test_buckets_are_log_spaced_from_5ms_to_120s() -> None:
    assert BUCKETS_S[0] == 0.005
    assert 100 <= BUCKETS_S[-1] <= 130
    ratios = {round(b / a, 3) for a, b in zip(BUCKETS_S, BUCKETS_S[1:], strict=False)}
    assert max(ratios) < 1.3


def test_percentile_interpolates_inside_the_bucket() -> None:
    counts = [0] * (len(BUCKETS_S) + 1)
    counts[bucket_of(0.1)] = 100
    p50 = percentile(counts, 0.5)
    assert p50 is not None
    index = bucket_of(0.1)
    assert BUCKETS_S[index - 1] <= p50 <= BUCKETS_S[index]
    assert percentile([0] * len(counts), 0.5) is None
    counts[-1] = 1000  # the overflow bucket answers with the last bound
    assert percentile(counts, 0.99) == BUCKETS_S[-1]


def test_totals_add_up() -> None:
    total = PoolTotals.summed([pool(10, errors=1), pool(20, json=(5, 4))])
    assert (total.requests, total.errors, total.json_requests, total.json_valid) == (30, 1, 5, 4)
    assert sum(total.histograms["ttft"]) == 29


# -- counting -------------------------------------------------------------------------------------


def record(**fields: object) -> RequestRecord:
    rec = RequestRecord(request_id="r", route="chat", model="chat", pool="green")
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def test_server_failures_are_errors_and_refusals_are_not() -> None:
    assert is_error(record(outcome="upstream", status=502))
    assert is_error(record(outcome="timeout", status=504))
    assert is_error(record(outcome="overload", status=503))  # no ready replica, queue timeout
    assert not is_error(record(outcome="overload", status=429))  # a limit
    assert not is_error(record(outcome="validation", status=400))
    assert not is_error(record(outcome="client_closed", status=499))
    assert not is_error(record())


def test_a_stream_gives_ttft_itl_and_e2e() -> None:
    totals = PoolTotals()
    rec = record(stream=True, ttft_s=0.2, completion_tokens=11)
    count_request(totals, rec, duration_s=1.2, json_mode=False)
    assert totals.requests == 1 and totals.errors == 0
    assert totals.histograms["ttft"][bucket_of(0.2)] == 1
    assert totals.histograms["itl"][bucket_of(0.1)] == 1  # (1.2 - 0.2) / 10
    assert totals.histograms["e2e"][bucket_of(1.2)] == 1


def test_a_whole_response_counts_its_duration_as_ttft_and_no_itl() -> None:
    totals = PoolTotals()
    count_request(totals, record(completion_tokens=16), duration_s=0.5, json_mode=False)
    assert totals.histograms["ttft"][bucket_of(0.5)] == 1
    assert sum(totals.histograms["itl"]) == 0


def test_failed_requests_count_but_give_no_latency() -> None:
    totals = PoolTotals()
    count_request(totals, record(outcome="upstream", status=502), duration_s=0.5, json_mode=True)
    assert (totals.requests, totals.errors, totals.json_requests, totals.json_valid) == (1, 1, 1, 0)
    assert sum(totals.histograms["e2e"]) == 0


def test_json_validity_parses_the_captured_text() -> None:
    totals = PoolTotals()
    for text in ('{"a": 1}', "tok tok", ""):
        capture = ResponseCapture(texts=[text])
        count_request(totals, record(capture=capture), duration_s=0.1, json_mode=True)
    assert (totals.json_requests, totals.json_valid) == (3, 1)


# -- gates ----------------------------------------------------------------------------------------


def test_gates_wait_for_min_samples_per_side() -> None:
    result = evaluate(Gates(min_samples=20), pool(100), pool(19, errors=19))
    assert result.verdict == "insufficient"
    assert "19" in result.reason


def test_equal_pools_pass() -> None:
    result = evaluate(Gates(), pool(100, errors=1), pool(30))
    assert result.verdict == "pass"
    assert result.figures["stable_requests"] == 100
    assert result.figures["candidate_requests"] == 30


@pytest.mark.parametrize(
    ("candidate", "gate"),
    [
        (pool(40, errors=4), "error_rate_delta"),
        (pool(40, ttft_s=0.5), "ttft_p95_ratio"),
        (pool(40, itl_s=0.05), "itl_p95_ratio"),
        (pool(40, json=(30, 20)), "json_validity_delta"),
    ],
)
def test_each_gate_fails_a_worse_candidate(candidate: PoolTotals, gate: str) -> None:
    stable = pool(100, json=(40, 40))
    result = evaluate(Gates(), stable, candidate)
    assert result.verdict == "fail"
    assert result.gate == gate
    assert gate in result.reason and "stable" in result.reason


def test_json_gate_needs_min_json_samples_on_both_sides() -> None:
    result = evaluate(Gates(min_samples=20), pool(100, json=(40, 40)), pool(40, json=(10, 0)))
    assert result.verdict == "pass"


def test_gate_values_are_configurable() -> None:
    lenient = Gates.from_mapping({"error_rate_delta": 0.2, "min_samples": 5})
    assert evaluate(lenient, pool(100), pool(40, errors=4)).verdict == "pass"
    assert lenient.ttft_p95_ratio == 1.5


@pytest.mark.parametrize(
    "gates",
    [{"nope": 1}, {"ttft_p95_ratio": 0.5}, {"min_samples": 0}, {"error_rate_delta": "x"}],
)
def test_bad_gates_are_refused(gates: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        Gates.from_mapping(gates)


def test_the_last_step_compares_with_the_stable_pool_of_earlier_steps() -> None:
    info = rollout(step_index=2)
    totals = {(0, "blue"): pool(50), (1, "blue"): pool(30), (2, "green"): pool(20)}
    assert baseline(info, totals).requests == 80
    assert judge(info, totals).verdict == "pass"
    slow = {**totals, (2, "green"): pool(20, ttft_s=1.0)}
    assert judge(info, slow).gate == "ttft_p95_ratio"


# -- the controller's decision --------------------------------------------------------------------


def test_a_failing_gate_rolls_back_at_once() -> None:
    info = rollout()
    move = next_move(info, evaluate(info.gates, pool(50), pool(20, errors=10)), T0)
    assert move is not None and move.to == "rolled_back"
    assert "error_rate_delta" in move.reason


def test_passing_gates_advance_only_after_the_hold() -> None:
    info = rollout()
    passed = evaluate(info.gates, pool(50), pool(20))
    assert next_move(info, passed, T0 + timedelta(seconds=59)) is None
    move = next_move(info, passed, T0 + timedelta(seconds=60))
    assert move is not None and (move.to, move.step_index) == ("running", 1)
    assert move.figures is not None and move.figures["candidate_requests"] == 20


def test_not_enough_samples_holds_past_the_hold_time() -> None:
    info = rollout()
    result = evaluate(info.gates, pool(50), pool(3))
    assert next_move(info, result, T0 + timedelta(hours=1)) is None


def test_the_last_step_promotes() -> None:
    info = rollout(step_index=2)
    move = next_move(info, evaluate(info.gates, pool(50), pool(20)), T0 + timedelta(minutes=5))
    assert move is not None and move.to == "promoted"


# -- validation and the report ---------------------------------------------------------------------


def test_steps_must_increase_to_100_from_below() -> None:
    assert check_steps([5, 25, 100]) == (5.0, 25.0, 100.0)
    for bad in ([], [5, 25], [100], [25, 5, 100], [0, 100], [5, 5, 100], [50, 150]):
        with pytest.raises(InvalidRequestError):
            check_steps(bad)


def test_durations() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("10m") == 600
    assert parse_duration("1h") == 3600
    assert parse_duration("2.5") == 2.5


def test_report_has_parameters_history_and_step_tables() -> None:
    info = rollout(
        state="rolled_back",
        step_index=1,
        reason="gate ttft_p95_ratio failed <script>",
        history=(
            {"at": T0.isoformat(), "from": None, "to": "running", "step": 0, "share": 5.0},
            {"at": T0.isoformat(), "from": "running", "to": "rolled_back", "step": 1},
        ),
    )
    totals = {(0, "blue"): pool(50), (0, "green"): pool(12), (1, "green"): pool(20, ttft_s=1.0)}
    markdown = render_report(info, totals, format="md")
    assert "# Rollout ro_test" in markdown
    assert "## Step 1: 5% to the candidate" in markdown
    assert "| requests | 50 | 12 |" in markdown
    assert "Not reached." in markdown  # step 3
    assert "rolled_back" in markdown
    assert "No shadow traffic" in markdown
    page = render_report(info, totals, format="html")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<td>requests</td><td>50</td><td>12</td>" in page
