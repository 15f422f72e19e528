"""A simulation's summary on a hand-computed case: percentiles, SLA attainment over all
requests (refused ones count against it), the verdict's misses, replica-hours and cost."""

from __future__ import annotations

import pytest

from tidegate.plan.pool_model import PoolModel
from tidegate.plan.simulate import QueueSettings, simulate
from tidegate.plan.simulate_inputs import Sla, parse_sla
from tidegate.plan.simulate_report import simulation_json, summarize, summary_table
from tidegate.plan.traces import TraceRequest

POOL = PoolModel(max_concurrency=1, first_token_s=1.0, tpot_s=0.0, cold_start_s=10.0)


def four_at_once() -> list[TraceRequest]:
    return [TraceRequest(0.0, 1, 1) for _ in range(4)]


def test_figures_attainment_and_cost() -> None:
    # One slot, 1 s each, a queue of 2: TTFTs 1, 2, 3 s; the fourth is refused (429).
    queue = QueueSettings(max_queue_depth=2, queue_timeout_s=60.0)
    result = simulate(four_at_once(), POOL, 1, queue=queue)
    summary = summarize(
        result, sla=parse_sla("ttft_p95=2.5s,error_rate=0.3"), replica_hour_usd=3600.0
    )
    assert (summary.requests, summary.completed, summary.rejected_429) == (4, 3, 1)
    assert summary.timed_out_503 == 0 and summary.error_rate == 0.25
    assert summary.ttft_p50_s == 2.0 and summary.ttft_p95_s == pytest.approx(2.9)
    assert summary.queue_wait_p95_s == pytest.approx(1.9)
    assert summary.sla_attainment == 0.5  # 2 of 4 within 2.5 s: the refused one counts
    assert summary.sla_met is False and summary.sla_misses == ["ttft_p95"]
    assert summary.replica_hours == pytest.approx(3.0 / 3600)  # the run lasts 3 s
    assert summary.cost_usd == pytest.approx(3.0)
    assert summary.cost_per_request_usd == pytest.approx(1.0)
    assert summary.peak_replicas == 1 and (summary.scale_ups, summary.scale_downs) == (0, 0)


def test_the_error_rate_target_and_no_sla() -> None:
    queue = QueueSettings(max_queue_depth=2, queue_timeout_s=60.0)
    result = simulate(four_at_once(), POOL, 1, queue=queue)
    strict = summarize(result, sla=parse_sla("ttft_p99=10s,error_rate=0.1"))
    assert strict.sla_misses == ["error_rate"] and strict.cost_usd is None
    none = summarize(result, sla=Sla(times={}))
    assert none.sla_met is None and none.sla_attainment is None


def test_the_json_document_and_the_table() -> None:
    sla = parse_sla("ttft_p95=2s")
    results = [simulate(four_at_once(), POOL, n, name=f"n{n}") for n in (1, 2)]
    summaries = [summarize(r, sla=sla, replica_hour_usd=1.0) for r in results]
    doc = simulation_json(
        results, summaries, pool=POOL, queue=QueueSettings(), sla=sla, trace="t.jsonl"
    )
    one, two = doc["policies"]
    assert (one["name"], two["name"]) == ("n1", "n2")
    assert one["timeline"]["t"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert two["timeline"]["ready"] == [2, 2, 2] and two["timeline"]["in_flight"][0] == 2
    assert doc["sla"] == {"ttft_p95": 2.0, "error_rate": None}
    table = summary_table(summaries, sla=sla)
    assert [c.header for c in table.columns] == ["figure", "n1", "n2"]
    assert table.row_count >= 14
