"""The burst benchmark's shared-host model: the pool model's ``host_speedup``, ``loading_load``
and ``cold_start_busy_s`` derived from the three configurations' own measurements (no extra
engine time), and each configuration predicted twice: ``nominal`` (the idle-host model fitted
to the calibration run) and ``shared-host`` (that model with the derived fields).

The derivation, from the burst phase of each run:

- ``host_speedup`` [1, s]: s = requests the warm-standby run served ÷ those the fixed run served
  (two replicas on the host against one, the same requests offered);
- ``cold_start_busy_s``: the autoscale run's second replica, from the policy asking for it to
  routed ready; when it never became ready in the run, the time it was seen loading is a lower
  bound (reported as "≥ X s" and used as the value);
- ``loading_load``: the share of the host a loading replica takes from the serving one, from
  the autoscale run's served ÷ the fixed run's while the second replica was loading all
  through the burst (clamped to [0, 1]; left at 1 when it became ready within the burst).

Circularity: a figure calibrated from the run it predicts is not a prediction. The fixed
configuration's shared-host model is its nominal one (one replica, nothing loading), so it is
out of sample; the autoscale prediction takes ``host_speedup`` from the other two runs but its
``cold_start_busy_s`` and ``loading_load`` from itself; the standby prediction takes
``host_speedup`` from itself. Each configuration's ``circular`` list names the fields, and its
``out_of_sample`` prediction is the shared-host one with those fields left at their idle-host
defaults (leave-one-out: only what the other runs measured).

``python -m benchmarks.burst --resimulate bench-results/burst.json`` runs ``resimulate``: the
measured figures re-read from the saved request CSVs and both predictions recomputed, no engine.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from benchmarks.burst_sim import Figures, measured, predict, relative_error
from tidegate.config import AutoscalingPolicy, SchedulingConfig
from tidegate.plan.pool_model import PoolModel
from tidegate.plan.simulate import QueueSettings
from tidegate_bench.phases import BurstPlan, Phase
from tidegate_bench.records import RequestRecord

WITHIN = 0.25
"""The issue's bar: a prediction within 25% of the measurement."""
SHARED_FIELDS = ("host_speedup", "loading_load", "cold_start_busy_s")
"""The pool model's shared-host fields: the nominal model has them unset."""


@dataclass(frozen=True, kw_only=True)
class SharedHost:
    host_speedup: tuple[float, ...] | None
    loading_load: float
    cold_start_busy_s: float | None
    cold_start_busy_lower_bound: bool
    """True: the second replica never became ready; the figure is a lower bound."""
    sources: dict[str, str]

    def apply(self, pool: PoolModel) -> PoolModel:
        return replace(
            pool, host_speedup=self.host_speedup, loading_load=self.loading_load,
            cold_start_busy_s=self.cold_start_busy_s,
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "host_speedup": None if self.host_speedup is None else list(self.host_speedup),
            "loading_load": self.loading_load, "cold_start_busy_s": self.cold_start_busy_s,
            "cold_start_busy_lower_bound": self.cold_start_busy_lower_bound,
            "sources": self.sources,
        }  # fmt: skip


CIRCULAR = {
    "fixed": [],
    "autoscale": ["cold_start_busy_s", "loading_load"],
    "standby": ["host_speedup"],
}
"""Per configuration, the shared-host fields calibrated from its own run."""
IDLE_HOST: dict[str, Any] = {"host_speedup": None, "loading_load": 1.0, "cold_start_busy_s": None}
"""The shared-host fields' defaults: the idle-host model."""


def _loading_span(block: dict[str, Any], burst_start_s: float) -> tuple[float, bool] | None:
    """The autoscale run's second replica: (asked for → ready, True) or, never ready, (asked
    for → last sample still loading, False)."""
    ups = list(block.get("scale_up", {}).values())
    up = ups[0] if ups else {}
    asked = up.get("to_desired_up_s")
    if asked is None:
        return None
    ready = up.get("to_ready_up_s")
    if ready is not None:
        return max(0.0, ready - asked), True
    series: list[dict[str, Any]] = next(iter(block.get("replicas", {}).values()), [])
    loading = [p["t_s"] for p in series if (p.get("starting") or 0) > 0]
    if not loading:
        return None
    return loading[-1] - (burst_start_s + asked), False


def derive(
    figures: dict[str, Figures], blocks: dict[str, dict[str, Any]], burst: Phase
) -> SharedHost:
    """The shared-host fields from whichever of the three runs are there."""
    sources: dict[str, str] = {}
    speedup: tuple[float, ...] | None = None
    fixed, standby, auto = figures.get("fixed"), figures.get("standby"), figures.get("autoscale")
    if fixed and standby and fixed.served["burst"]:
        s2 = standby.served["burst"] / fixed.served["burst"]
        speedup = (1.0, s2)
        sources["host_speedup"] = (
            f"standby served {standby.served['burst']} / fixed {fixed.served['burst']} in the "
            f"burst = {s2:.2f}"
        )
    busy_s, lower = None, False
    span = _loading_span(blocks["autoscale"], burst.start_s) if "autoscale" in blocks else None
    if span is not None:
        busy_s, ready = span
        lower = not ready
        sources["cold_start_busy_s"] = (
            f"autoscale: asked for to ready {busy_s:.1f} s"
            if ready
            else f"autoscale: never ready, still loading {busy_s:.1f} s after it was asked for "
            "(a lower bound)"
        )
    load = 1.0
    if fixed and auto and speedup is not None and lower and fixed.served["burst"]:
        # Loading all through the burst: served ratio r = S(1 + L) / (1 + L), S linear
        # between 1 and s2, so L = (1 - r) / (1 + r - s2).
        r, s2 = auto.served["burst"] / fixed.served["burst"], speedup[1]
        denominator = 1.0 + r - s2
        load = 0.0 if r >= 1.0 or denominator <= 0 else min(1.0, (1.0 - r) / denominator)
        sources["loading_load"] = (
            f"autoscale served {auto.served['burst']} / fixed {fixed.served['burst']} = {r:.2f} "
            f"while loading -> {load:.2f}"
        )
    else:
        sources["loading_load"] = "default (1: a loading replica weighs as a serving one)"
    return SharedHost(
        host_speedup=speedup, loading_load=load, cold_start_busy_s=busy_s,
        cold_start_busy_lower_bound=lower, sources=sources,
    )  # fmt: skip


def nominal_pool(doc: dict[str, Any]) -> PoolModel:
    """The report's idle-host pool model (its shared-host fields, if any, dropped)."""
    fields = {k: v for k, v in doc.items() if k not in SHARED_FIELDS}
    return PoolModel(**fields)


def policy_from(row: dict[str, Any]) -> AutoscalingPolicy | None:
    policy = row.get("policy")
    return None if policy is None else AutoscalingPolicy.model_validate(policy)


def read_records(path: Path) -> list[RequestRecord]:
    """A bench request CSV back as records (TTFT and E2E relative to the due time, as written)."""
    out: list[RequestRecord] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            scheduled = float(row["scheduled_s"])
            ttft, e2e = row["ttft_ms"], row["e2el_ms"]
            out.append(RequestRecord(
                index=int(row["index"]), target=row["target"], tenant=row["tenant"],
                scheduled_s=scheduled, sent_s=float(row["sent_s"]),
                end_s=scheduled + float(e2e) / 1000.0 if e2e else float(row["sent_s"]),
                content_s=(scheduled + float(ttft) / 1000.0,) if ttft else (),
                prompt_tokens=int(row["prompt_tokens"]) if row["prompt_tokens"] else None,
                output_tokens=int(row["output_tokens"]) if row["output_tokens"] else None,
                cached_tokens=None, token_mismatch=False, status=int(row["status"] or 0),
                error=row["error"],
            ))  # fmt: skip
    return out


def shared_host_rows(
    rows: list[dict[str, Any]],
    records: dict[str, Sequence[RequestRecord]],
    blocks: dict[str, dict[str, Any]],
    *,
    pool: PoolModel,
    queue: QueueSettings,
    phases: Sequence[Phase],
) -> dict[str, Any]:
    """Derives the shared-host model from the rows' measurements and adds each row's
    ``shared_host`` prediction (and ``circular``); returns the model's JSON."""
    burst = next(p for p in phases if p.name == "burst")
    figures = {row["config"]: measured(records[row["config"]], blocks[row["config"]], phases)
               for row in rows}  # fmt: skip
    host = derive(figures, blocks, burst)
    shared = host.apply(pool)
    for row in rows:
        name = row["config"]
        policy = policy_from(row)
        nominal, _ = predict(records[name], pool=pool, policy=policy, queue=queue, phases=phases)
        calibrated, _ = predict(
            records[name], pool=shared, policy=policy, queue=queue, phases=phases
        )
        row["measured"] = figures[name].as_json()
        row["simulated"] = nominal.as_json()
        row["shared_host"] = calibrated.as_json()
        row["circular"] = CIRCULAR.get(name, list(SHARED_FIELDS))
        left_out = replace(shared, **{f: IDLE_HOST[f] for f in row["circular"]})
        outside, _ = predict(
            records[name], pool=left_out, policy=policy, queue=queue, phases=phases
        )
        row["out_of_sample"] = outside.as_json()
    return {"pool_model": shared.as_json(), **host.as_json()}


def resimulate(path: Path) -> dict[str, Any]:
    """The saved report with its measured figures re-read from the request CSVs and both
    predictions recomputed (no engine)."""
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    plan = BurstPlan(**report["plan"])
    phases = plan.phases()
    records: dict[str, Sequence[RequestRecord]] = {}
    blocks: dict[str, dict[str, Any]] = {}
    for row in report["configs"]:
        result = Path(row["result"])
        if not result.exists():  # the report moved: its runs sit beside it
            result = path.with_suffix("") / result.name
        doc = orjson.loads(result.read_bytes())
        blocks[row["config"]] = doc["runs"][0]["burst"]
        csvs = sorted(result.with_name(f"{result.stem}_requests").glob("*.csv"))
        if len(csvs) != 1:
            raise ValueError(f"{result}: expected one request CSV beside it, found {len(csvs)}")
        records[row["config"]] = read_records(csvs[0])
    pool = nominal_pool(report["pool_model"])
    queue = QueueSettings.from_config(SchedulingConfig().interactive)
    report["pool_model"] = pool.as_json()
    report["shared_host"] = shared_host_rows(
        report["configs"], records, blocks, pool=pool, queue=queue, phases=phases
    )
    return report


METRICS: tuple[tuple[str, str], ...] = (
    ("TTFT p95 burst s", "ttft"),
    ("served (burst)", "served"),
    ("503 (run)", "http_503"),
    ("2nd replica 1st request s", "first_request"),
)


def metric(figures: dict[str, Any], key: str) -> float | None:
    if key == "ttft":
        value = figures["ttft_p95_s"]["burst"]
    elif key == "served":
        value = figures["served"]["burst"]
    elif key == "first_request":
        value = figures["to_new_replica_first_request_s"]
    else:
        value = figures[key]
    return None if value is None else float(value)


def within(measured_value: float | None, predicted: float | None) -> str:
    """ "yes"/"no" against the 25% bar; both None (never happened, nor predicted) agree."""
    if measured_value is None and predicted is None:
        return "yes (neither)"
    if measured_value is None or predicted is None:
        return "no"
    if measured_value == 0:
        return "yes" if predicted == 0 else "no"
    err = relative_error(measured_value, predicted)
    return "yes" if err is not None and math.fabs(err) <= WITHIN else "no"


def censored_first_request(row: dict[str, Any], host: dict[str, Any]) -> float | None:
    """The autoscale run's second replica never served: its first request would have come no
    sooner than the policy's ask plus the loading seen (a lower bound), else None."""
    if row["config"] != "autoscale" or not host.get("cold_start_busy_lower_bound"):
        return None
    if row["measured"]["to_new_replica_first_request_s"] is not None:
        return None
    ups = list(row.get("scale_up", {}).values())
    asked = ups[0].get("to_desired_up_s") if ups else None
    busy = host.get("cold_start_busy_s")
    return None if asked is None or busy is None else float(asked) + float(busy)


def comparison(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per configuration and metric: measured, nominal, shared-host and the 25% verdicts (the
    README's table)."""
    host = report.get("shared_host", {})
    out = []
    for row in report["configs"]:
        for label, key in METRICS:
            m = metric(row["measured"], key)
            bound = censored_first_request(row, host) if key == "first_request" else None
            entry: dict[str, Any] = {"config": row["config"], "metric": label, "measured": m,
                                     "measured_at_least": bound}  # fmt: skip
            for model in ("simulated", "shared_host", "out_of_sample"):
                if model not in row:
                    continue
                p = metric(row[model], key)
                entry[model] = p
                if bound is not None:
                    ok = p is None or p >= bound * (1 - WITHIN)
                    entry[f"{model}_within"] = "yes (>= bound)" if ok else "no"
                else:
                    entry[f"{model}_within"] = within(m, p)
            entry["circular"] = bool(row.get("circular"))
            entry["count"] = key in ("served", "http_503")
            out.append(entry)
    return out
