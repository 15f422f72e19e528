"""A simulation's figures: one summary per policy (for the side-by-side table and ``--json``)
and the JSON document with each policy's replica timeline.

SLA attainment is the share of ALL requests (refused and timed out ones included) that got a
first token within the SLA's TTFT limit; the verdict holds every target the SLA names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

from tidegate.percentiles import percentile
from tidegate.plan.pool_model import PoolModel
from tidegate.plan.simulate import QueueSettings, SimulationResult
from tidegate.plan.simulate_inputs import Sla


@dataclass(frozen=True, kw_only=True)
class Summary:
    name: str
    requests: int
    completed: int
    rejected_429: int
    timed_out_503: int
    no_replica_503: int
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    ttft_p99_s: float | None
    queue_wait_p95_s: float | None
    e2e_p95_s: float | None
    error_rate: float
    sla_attainment: float | None
    sla_met: bool | None
    sla_misses: list[str]
    replica_hours: float
    peak_replicas: int
    scale_ups: int
    scale_downs: int
    cost_usd: float | None
    cost_per_request_usd: float | None


def _figures(result: SimulationResult) -> dict[str, float | None]:
    ok = [r for r in result.requests if r.ok]
    ttft = [v for r in ok if (v := r.ttft_s) is not None]
    wait = [v for r in ok if (v := r.queue_wait_s) is not None]
    e2e = [v for r in ok if (v := r.e2e_s) is not None]
    return {
        "ttft_p50": percentile(ttft, 50),
        "ttft_p95": percentile(ttft, 95),
        "ttft_p99": percentile(ttft, 99),
        "queue_wait_p95": percentile(wait, 95),
        "e2e_p95": percentile(e2e, 95),
    }


def summarize(
    result: SimulationResult, *, sla: Sla, replica_hour_usd: float | None = None
) -> Summary:
    figures = _figures(result)
    total = len(result.requests)
    completed = sum(1 for r in result.requests if r.ok)
    errors = total - completed
    error_rate = errors / total if total else 0.0
    limit = sla.ttft_limit_s
    attained = None
    if limit is not None:
        good = sum(1 for r in result.requests if (v := r.ttft_s) is not None and v <= limit)
        attained = good / total if total else None
    misses = [
        key
        for key, target in sla.times.items()
        if (value := figures[key]) is None or value > target
    ]
    if sla.error_rate is not None and error_rate > sla.error_rate:
        misses.append("error_rate")
    hours = result.replica_hours
    cost = None if replica_hour_usd is None else hours * replica_hour_usd
    return Summary(
        name=result.name,
        requests=total,
        completed=completed,
        rejected_429=result.count("queue_full"),
        timed_out_503=result.count("queue_timeout"),
        no_replica_503=result.count("no_replica"),
        ttft_p50_s=figures["ttft_p50"],
        ttft_p95_s=figures["ttft_p95"],
        ttft_p99_s=figures["ttft_p99"],
        queue_wait_p95_s=figures["queue_wait_p95"],
        e2e_p95_s=figures["e2e_p95"],
        error_rate=error_rate,
        sla_attainment=attained,
        sla_met=None if not sla.times and sla.error_rate is None else not misses,
        sla_misses=misses,
        replica_hours=hours,
        peak_replicas=max((p.ready + p.standby + p.starting for p in result.timeline), default=0),
        scale_ups=sum(1 for e in result.events if e.direction == "up"),
        scale_downs=sum(1 for e in result.events if e.direction == "down"),
        cost_usd=cost,
        cost_per_request_usd=cost / completed if cost is not None and completed else None,
    )


def timeline_json(result: SimulationResult) -> dict[str, list[float] | list[int]]:
    """Column-wise, one entry per second (and the last instant)."""
    points = result.timeline
    return {
        "t": [p.t for p in points],
        "desired": [p.desired for p in points],
        "ready": [p.ready for p in points],
        "standby": [p.standby for p in points],
        "starting": [p.starting for p in points],
        "draining": [p.draining for p in points],
        "waiting": [p.waiting for p in points],
        "in_flight": [p.in_flight for p in points],
    }


def simulation_json(
    results: list[SimulationResult],
    summaries: list[Summary],
    *,
    pool: PoolModel,
    queue: QueueSettings,
    sla: Sla,
    trace: str,
) -> dict[str, Any]:
    return {
        "tidegate_simulation": 1,
        "trace": trace,
        "pool": pool.as_json(),
        "queue": asdict(queue),
        "sla": sla.as_json(),
        "policies": [
            {
                **asdict(summary),
                "duration_s": result.duration_s,
                "timeline": timeline_json(result),
                "scale_events": [asdict(e) for e in result.events],
                "replicas": [asdict(r) for r in result.replicas],
            }
            for result, summary in zip(results, summaries, strict=True)
        ],
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summary_table(summaries: list[Summary], *, sla: Sla) -> Table:
    targets = ", ".join(f"{k}≤{_seconds(v)}" for k, v in sla.times.items())
    if sla.error_rate is not None:
        targets = ", ".join(filter(None, (targets, f"error_rate≤{sla.error_rate:.2%}")))
    table = Table(title=f"Simulated policies (SLA: {targets or 'none'})")
    table.add_column("figure")
    for summary in summaries:
        table.add_column(summary.name, justify="right", overflow="fold")
    rows: list[tuple[str, list[str]]] = [
        ("requests", [f"{s.requests:,}" for s in summaries]),
        ("TTFT p50", [_seconds(s.ttft_p50_s) for s in summaries]),
        ("TTFT p95", [_seconds(s.ttft_p95_s) for s in summaries]),
        ("queue wait p95", [_seconds(s.queue_wait_p95_s) for s in summaries]),
        ("E2E p95", [_seconds(s.e2e_p95_s) for s in summaries]),
        ("429 (queue full)", [str(s.rejected_429) for s in summaries]),
        ("503 (queue timeout)", [str(s.timed_out_503) for s in summaries]),
        ("503 (no replica ready)", [str(s.no_replica_503) for s in summaries]),
        ("error rate", [_share(s.error_rate) for s in summaries]),
        ("SLA attainment", [_share(s.sla_attainment) for s in summaries]),
        ("replica-hours", [f"{s.replica_hours:.3f}" for s in summaries]),
        ("peak replicas", [str(s.peak_replicas) for s in summaries]),
        ("scale ups / downs", [f"{s.scale_ups} / {s.scale_downs}" for s in summaries]),
    ]
    if any(s.cost_usd is not None for s in summaries):
        rows.append(
            ("cost", [f"${s.cost_usd:.4f}" if s.cost_usd is not None else "-" for s in summaries])
        )
        rows.append((
            "cost / request",
            [f"${v:.6f}" if (v := s.cost_per_request_usd) is not None else "-" for s in summaries],
        ))  # fmt: skip
    verdicts = []
    for s in summaries:
        if s.sla_met is None:
            verdicts.append("-")
        elif s.sla_met:
            verdicts.append("[green]met[/green]")
        else:
            verdicts.append(f"[red]missed: {', '.join(s.sla_misses)}[/red]")
    rows.append(("verdict", verdicts))
    for label, cells in rows:
        table.add_row(label, *cells)
    return table
