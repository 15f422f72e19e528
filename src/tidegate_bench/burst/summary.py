"""The ``burst`` block of a run's JSON: per-phase figures, the replicas timeline, the time from
the burst's start to a new replica's first request, the load and TTFT over time, and the SLA
verdict.

Queue wait is the gateway's: the ``tidegate_queue_wait_seconds`` observations between the scrapes
at a phase's start and end (so it is by when the wait ended, and its quantiles are interpolated
inside the histogram's buckets). Every other figure is the client's own, per request due in the
phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tidegate_bench.burst.gateway_metrics import REPLICA_STATES, Histogram, Snapshot, nearest
from tidegate_bench.burst.scraper import ScrapeLog
from tidegate_bench.burst.sla import Sla, check_phases, verdict
from tidegate_bench.phases import BurstPlan, Phase, split_by_phase
from tidegate_bench.records import RequestRecord
from tidegate_bench.stats import percentile


def _pct(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) if values else None


def queue_wait_between(
    snapshots: Sequence[Snapshot], start_s: float, end_s: float
) -> Histogram | None:
    """The queue-wait observations between the scrapes nearest ``start_s`` and ``end_s`` (the
    scraper takes one at each phase boundary); None without scrapes."""
    first, last = nearest(snapshots, start_s), nearest(snapshots, end_s)
    if first is None or last is None:
        return None
    return last.sample.queue_wait.minus(first.sample.queue_wait)


def phase_figures(
    phase: Phase, records: Sequence[RequestRecord], queue: Histogram | None
) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    ttft = [v for r in ok if (v := r.ttft_ms) is not None]
    e2el = [v for r in ok if (v := r.e2el_ms) is not None]
    failed = len(records) - len(ok)
    duration = phase.duration_s

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else seconds * 1000.0

    measured_queue = queue is not None and queue.count > 0
    return {
        "name": phase.name, "start_s": phase.start_s, "end_s": phase.end_s,
        "factor": phase.factor,
        "requests": len(records), "completed": len(ok), "failed": failed,
        "error_rate": failed / len(records) if records else None,
        "http_429": sum(1 for r in records if r.status == 429),
        "http_503": sum(1 for r in records if r.status == 503),
        "timeouts": sum(1 for r in records if r.error == "timeout"),
        "offered_rps": len(records) / duration if duration > 0 else 0.0,
        "completed_rps": len(ok) / duration if duration > 0 else 0.0,
        "ttft_p50_ms": _pct(ttft, 50), "ttft_p95_ms": _pct(ttft, 95),
        "ttft_p99_ms": _pct(ttft, 99),
        "e2el_p50_ms": _pct(e2el, 50), "e2el_p95_ms": _pct(e2el, 95),
        "e2el_p99_ms": _pct(e2el, 99),
        "queue_wait_count": None if queue is None else queue.count,
        "queue_wait_mean_ms": ms(queue.mean_s) if measured_queue and queue else None,
        "queue_wait_p50_ms": ms(queue.quantile(0.5)) if measured_queue and queue else None,
        "queue_wait_p95_ms": ms(queue.quantile(0.95)) if measured_queue and queue else None,
    }  # fmt: skip


def series(
    records: Sequence[RequestRecord], total_s: float, bin_s: float
) -> list[dict[str, float | None]]:
    """Per ``bin_s`` of the run: offered load and completions (req/s), errors, TTFT p95 of the
    requests due in the bin."""
    bins = max(1, math.ceil(total_s / bin_s))
    due: list[list[RequestRecord]] = [[] for _ in range(bins)]
    done = [0] * bins
    for r in records:
        due[min(bins - 1, max(0, int(r.scheduled_s // bin_s)))].append(r)
        if r.ok and r.end_s < bins * bin_s:
            done[max(0, int(r.end_s // bin_s))] += 1
    out: list[dict[str, float | None]] = []
    for i in range(bins):
        ttft = [v for r in due[i] if (v := r.ttft_ms) is not None]
        out.append({
            "t_s": i * bin_s, "offered_rps": len(due[i]) / bin_s, "completed_rps": done[i] / bin_s,
            "errors": float(sum(1 for r in due[i] if not r.ok)), "ttft_p95_ms": _pct(ttft, 95),
        })  # fmt: skip
    return out


def replicas_timeline(snapshots: Sequence[Snapshot]) -> dict[str, list[dict[str, float | None]]]:
    """Pool -> one row per scrape: t_s, desired, and replicas per state."""
    out: dict[str, list[dict[str, float | None]]] = {}
    for snap in snapshots:
        for pool in snap.sample.pools:
            states = snap.sample.replicas.get(pool, {})
            row: dict[str, float | None] = {
                "t_s": snap.t_s,
                "desired": snap.sample.desired.get(pool),
            }
            row |= {state: states.get(state) for state in REPLICA_STATES}
            out.setdefault(pool, []).append(row)
    return out


def _first_after(rows: Sequence[dict[str, float | None]], key: str, start_s: float) -> float | None:
    """Seconds from ``start_s`` to the first row after it whose ``key`` exceeds its value then."""
    before = [r for r in rows if (r["t_s"] or 0.0) <= start_s]
    if not before or before[-1][key] is None:
        return None
    base = before[-1][key] or 0.0
    for r in rows:
        t, value = r["t_s"] or 0.0, r[key]
        if t > start_s and value is not None and value > base:
            return t - start_s
    return None


def scale_up(
    snapshots: Sequence[Snapshot],
    timeline: dict[str, list[dict[str, float | None]]],
    burst_start_s: float,
    started_unix: float,
) -> dict[str, dict[str, Any]]:
    """Per pool: replicas at the burst's start and at most, and the seconds from the burst's start
    to a higher desired count, to one more ready replica (both to the scrape interval), and to
    the first request of the first replica beyond those routed when the run began (the gateway's
    own timestamp; negative when the pool scaled up before the burst).

    The replicas routed at the start are the ones that served first: with N of them, the
    (N+1)-th replica by first-request time is the new one."""
    burst_unix = started_unix + burst_start_s
    # Every first request any scrape saw: a replica stopped in the cool-down loses its series,
    # and one that reuses its id gets a new time.
    seen = {
        (pool, replica, unix)
        for snap in snapshots
        for (pool, replica), unix in snap.sample.first_request_unix.items()
    }
    out: dict[str, dict[str, Any]] = {}
    for pool, rows in timeline.items():
        at_start = [r for r in rows if (r["t_s"] or 0.0) <= burst_start_s]
        incumbents = round(rows[0]["ready"] or 0.0) if rows else 0
        ordered = sorted((unix, replica) for p, replica, unix in seen if p == pool)
        new = ordered[incumbents:]
        first_new = new[0] if new else None
        out[pool] = {
            "ready_at_burst_start": at_start[-1]["ready"] if at_start else None,
            "max_desired": max((r["desired"] or 0.0 for r in rows), default=None),
            "max_ready": max((r["ready"] or 0.0 for r in rows), default=None),
            "to_desired_up_s": _first_after(rows, "desired", burst_start_s),
            "to_ready_up_s": _first_after(rows, "ready", burst_start_s),
            "new_replica": None if first_new is None else first_new[1],
            "to_new_replica_first_request_s": None
            if first_new is None
            else first_new[0] - burst_unix,
        }
    return out


def burst_block(
    *,
    plan: BurstPlan,
    records: Sequence[RequestRecord],
    scrapes: ScrapeLog | None,
    metrics_url: str | None,
    metrics_error: str,
    started_unix: float,
    sla: Sla | None,
    bin_s: float = 1.0,
) -> dict[str, Any]:
    phases = plan.phases()
    snapshots = scrapes.snapshots if scrapes is not None else ()
    by_phase = split_by_phase(records, phases)
    figures = []
    for p in phases:
        # The last phase ends with the final scrape, after every request has finished.
        end = math.inf if p is phases[-1] else p.end_s
        queue = queue_wait_between(snapshots, p.start_s, end) if snapshots else None
        figures.append(phase_figures(p, by_phase[p.name], queue))
    timeline = replicas_timeline(snapshots)
    burst = next(p for p in phases if p.name == "burst")
    checks = check_phases(sla, {f["name"]: f for f in figures}) if sla is not None else []
    verdict_block = None
    if sla is not None:
        verdict_block = {
            "spec": sla.spec, "checks": [c.as_json() for c in checks], "verdict": verdict(checks)
        }  # fmt: skip
    return {
        "plan": {
            "baseline_s": plan.baseline_s, "burst_s": plan.burst_s, "cooldown_s": plan.cooldown_s,
            "factor": plan.factor,
        },
        "phases": figures,
        "bin_s": bin_s,
        "series": series(records, plan.total_s, bin_s),
        "gateway": {
            "metrics_url": metrics_url,
            "error": metrics_error,
            "scrapes": len(snapshots),
            "failed_scrapes": scrapes.failures if scrapes is not None else 0,
            "last_scrape_error": scrapes.last_error if scrapes is not None else "",
        },
        "replicas": timeline,
        "scale_up": scale_up(snapshots, timeline, burst.start_s, started_unix),
        "sla": verdict_block,
    }  # fmt: skip
