"""``make bench-burst``'s shared-host model without an engine: the fields derived from the three
runs' measurements (a lower bound when the second replica never became ready), the request CSVs
read back as the records they were written from, and ``--resimulate`` recomputing a saved
report's nominal, shared-host and leave-one-out predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.burst import Options, main, policy_of
from benchmarks.burst_shared import (
    comparison,
    derive,
    read_records,
    resimulate,
    within,
)
from benchmarks.burst_sim import Figures
from tidegate.plan.pool_model import PoolModel
from tidegate_bench.phases import BurstPlan
from tidegate_bench.records import RequestRecord
from tidegate_bench.results import write_csv

PLAN = BurstPlan(baseline_s=10, burst_s=20, cooldown_s=10, factor=4)


def figures(served_burst: int) -> Figures:
    return Figures(
        ttft_p95_s={"burst": 1.0}, served={"burst": served_burst, "run": served_burst},
        http_429=0, http_503=0, peak_ready=1, to_ready_up_s=None,
        to_new_replica_first_request_s=None,
    )  # fmt: skip


def loading_block(asked: float | None, ready: float | None, last_loading: float) -> dict[str, Any]:
    series = [{"t_s": t, "starting": 1.0} for t in (12.0, last_loading)]
    return {
        "scale_up": {"p": {"to_desired_up_s": asked, "to_ready_up_s": ready}},
        "replicas": {"p": [{"t_s": 0.0, "starting": 0.0}, *series]},
    }


def test_the_speedup_is_standby_over_fixed_and_a_never_ready_cold_start_a_lower_bound() -> None:
    burst = next(p for p in PLAN.phases() if p.name == "burst")
    got = {"fixed": figures(300), "standby": figures(420), "autoscale": figures(270)}
    host = derive(got, {"autoscale": loading_block(2.0, None, 95.0)}, burst)
    assert host.host_speedup == pytest.approx((1.0, 1.4))
    assert host.cold_start_busy_s == pytest.approx(95.0 - 12.0)  # burst at 10, asked at +2
    assert host.cold_start_busy_lower_bound
    # Served 0.9 of fixed while loading: (1 + 0.4 L) / (1 + L) = 0.9 -> L = 0.1 / 0.5.
    assert host.loading_load == pytest.approx(0.2)
    # Serving more than fixed while loading: the loading replica took nothing.
    host = derive(
        {**got, "autoscale": figures(330)}, {"autoscale": loading_block(2.0, None, 95.0)}, burst
    )
    assert host.loading_load == 0.0


def test_a_replica_that_became_ready_gives_its_cold_start_and_no_loading_share() -> None:
    burst = next(p for p in PLAN.phases() if p.name == "burst")
    got = {"fixed": figures(300), "standby": figures(420), "autoscale": figures(350)}
    host = derive(got, {"autoscale": loading_block(2.0, 40.0, 50.0)}, burst)
    assert host.cold_start_busy_s == pytest.approx(38.0) and not host.cold_start_busy_lower_bound
    assert host.loading_load == 1.0  # not derivable: it served within the burst
    only_fixed = derive({"fixed": figures(300)}, {}, burst)
    assert only_fixed.host_speedup is None and only_fixed.cold_start_busy_s is None


def test_within_25_percent() -> None:
    assert within(100.0, 125.0) == "yes" and within(100.0, 126.0) == "no"
    assert within(None, None) == "yes (neither)" and within(None, 3.0) == "no"
    assert within(0.0, 0.0) == "yes" and within(0.0, 1.0) == "no"


def _burst_records(name: str, rate: float) -> list[RequestRecord]:
    """One request every 1 / (rate × factor) s; in the burst, past one replica's capacity,
    every third one a 503."""
    out: list[RequestRecord] = []
    for phase in PLAN.phases():
        step = 1.0 / (rate * phase.factor)
        for i in range(round(phase.duration_s / step)):
            t = phase.start_s + i * step
            bad = phase.name == "burst" and i % 3 == 2
            out.append(RequestRecord(
                index=len(out), target=name, tenant="default", scheduled_s=t, sent_s=t + 0.001,
                end_s=t + 1.5, content_s=() if bad else (t + 0.25,), prompt_tokens=40,
                output_tokens=None if bad else 8, cached_tokens=None, token_mismatch=False,
                status=503 if bad else 200, error="http_5xx" if bad else "",
            ))  # fmt: skip
    return out


def test_request_csvs_read_back_as_their_records(tmp_path: Path) -> None:
    records = _burst_records("fixed", 1.0)
    write_csv(tmp_path / "r.csv", records)
    back = read_records(tmp_path / "r.csv")
    assert [(r.scheduled_s, r.status, r.error) for r in back] == [
        (pytest.approx(r.scheduled_s), r.status, r.error) for r in records
    ]
    assert [r.ttft_ms for r in back] == [
        None if r.ttft_ms is None else pytest.approx(r.ttft_ms, abs=1e-3) for r in records
    ]


def _saved_report(tmp_path: Path) -> Path:
    out = tmp_path / "burst.json"
    runs = tmp_path / "burst"
    options = Options(max_num_seqs=2)
    pool = PoolModel(max_concurrency=2, first_token_s=0.2, tpot_s=0.2, cold_start_s=10.0)
    rows = []
    for name, asked, ready in (("fixed", None, None), ("autoscale", 2.0, None),
                               ("standby", 0.5, 0.5)):  # fmt: skip
        write_csv(
            runs / f"{name}_requests" / f"burst_{name}__{name}.csv", _burst_records(name, 1.0)
        )
        up = {"to_desired_up_s": asked, "to_ready_up_s": ready, "max_ready": 2.0 if ready else 1.0,
              "to_new_replica_first_request_s": ready}  # fmt: skip
        block = {"scale_up": {"p": up}, "replicas": {"p": [
            {"t_s": 30.0, "starting": 1.0 if name == "autoscale" else 0.0}]}}  # fmt: skip
        (runs / f"{name}.json").write_bytes(orjson.dumps({"runs": [{"burst": block}]}))
        policy = policy_of(name, options)
        rows.append({
            "config": name, "policy": None if policy is None else policy.model_dump(mode="json"),
            "scale_up": block["scale_up"], "result": str(tmp_path / "elsewhere" / f"{name}.json"),
        })  # fmt: skip
    report = {
        "plan": {"baseline_s": PLAN.baseline_s, "burst_s": PLAN.burst_s,
                 "cooldown_s": PLAN.cooldown_s, "factor": PLAN.factor},
        "pool_model": pool.as_json(), "configs": rows, "capacity_rps": 2.0, "burst_rps": 8.0,
    }  # fmt: skip
    out.write_bytes(orjson.dumps(report))
    return out


def test_resimulate_recomputes_both_predictions_from_the_saved_csvs(tmp_path: Path) -> None:
    path = _saved_report(tmp_path)
    report = resimulate(path)
    host = report["shared_host"]
    # The fixture's runs serve the same requests: no speedup from two replicas.
    assert host["host_speedup"] == [1.0, 1.0]
    assert host["cold_start_busy_s"] == pytest.approx(30.0 - 12.0)
    assert host["cold_start_busy_lower_bound"] is True
    assert report["pool_model"]["host_speedup"] is None  # the nominal model stays idle-host
    by = {row["config"]: row for row in report["configs"]}
    assert by["fixed"]["measured"]["served"]["burst"] == 54  # 80 due, every third a 503
    assert by["fixed"]["measured"]["http_503"] == 26
    assert by["fixed"]["circular"] == [] and by["standby"]["circular"] == ["host_speedup"]
    # One replica: the shared host changes nothing; two at speedup 1.0 serve less than at 2.
    assert by["fixed"]["shared_host"] == by["fixed"]["simulated"]
    standby = by["standby"]
    assert standby["shared_host"]["served"]["burst"] < standby["simulated"]["served"]["burst"]
    # Leave-one-out for standby drops its own speedup: the idle-host prediction again.
    assert standby["out_of_sample"] == standby["simulated"]
    rows = comparison(report)
    assert {r["metric"] for r in rows} >= {"served (burst)", "503 (run)"}
    auto_first = next(r for r in rows if r["config"] == "autoscale" and "1st" in r["metric"])
    assert auto_first["measured_at_least"] == pytest.approx(2.0 + 18.0)


def test_the_resimulate_option_rewrites_the_report_without_an_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _saved_report(tmp_path)
    main(["--resimulate", str(path)])
    rewritten = orjson.loads(path.read_bytes())
    assert "shared_host" in rewritten and "shared_host" in rewritten["configs"][0]
    printed = capsys.readouterr().out
    assert "shared-host" in printed and "leave-one-out" in printed
    other = tmp_path / "other.json"
    main(["--resimulate", str(path), "--out", str(other)])
    assert orjson.loads(other.read_bytes())["shared_host"] == rewritten["shared_host"]
