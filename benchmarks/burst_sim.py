"""The burst benchmark's figures, measured and simulated, in the same shape so they sit side by
side: TTFT p95 and requests served per phase and over the run, 429s and 503s, peak replicas,
and the seconds from the burst's start to the first request of a replica that had served none
before it.

The simulator is ``tidegate plan simulate``'s (``tidegate.plan.simulate``), replaying the very
requests the bench sent (their due times and token counts) against a pool model fitted to the
calibration run and the policy the gateway ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidegate.config import AutoscalingPolicy
from tidegate.percentiles import percentile
from tidegate.plan.pool_model import PoolModel
from tidegate.plan.simulate import (
    QueueSettings,
    SimulationResult,
    simulate,
)
from tidegate.plan.traces import TraceRequest
from tidegate_bench.phases import Phase
from tidegate_bench.records import RequestRecord


@dataclass(frozen=True, kw_only=True)
class Figures:
    ttft_p95_s: dict[str, float | None]
    """Phase name (and ``run``: every phase) -> TTFT p95 of the successful requests due in it."""
    served: dict[str, int]
    """Phase name (and ``run``) -> successful requests due in it."""
    http_429: int
    http_503: int
    peak_ready: int | None
    to_ready_up_s: float | None
    """From the burst's start to one more routed ready replica than at its start."""
    to_new_replica_first_request_s: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "ttft_p95_s": self.ttft_p95_s, "served": self.served, "http_429": self.http_429,
            "http_503": self.http_503,
            "peak_ready": self.peak_ready, "to_ready_up_s": self.to_ready_up_s,
            "to_new_replica_first_request_s": self.to_new_replica_first_request_s,
        }  # fmt: skip


def _p95_by_phase(
    points: Sequence[tuple[float, float | None]], phases: Sequence[Phase]
) -> dict[str, float | None]:
    """``points``: (due time, TTFT seconds or None for a failure)."""
    out: dict[str, float | None] = {}
    for phase in phases:
        values = [v for t, v in points if phase.start_s <= t < phase.end_s and v is not None]
        out[phase.name] = percentile(values, 95)
    out["run"] = percentile([v for _, v in points if v is not None], 95)
    return out


def _served_by_phase(
    points: Sequence[tuple[float, float | None]], phases: Sequence[Phase]
) -> dict[str, int]:
    out: dict[str, int] = {
        phase.name: sum(1 for t, v in points if phase.start_s <= t < phase.end_s and v is not None)
        for phase in phases
    }
    out["run"] = sum(1 for _, v in points if v is not None)
    return out


def measured(
    records: Sequence[RequestRecord], block: dict[str, Any], phases: Sequence[Phase]
) -> Figures:
    """From the bench's records and its run's ``burst`` block."""
    ttft = [(r.scheduled_s, None if r.ttft_ms is None else r.ttft_ms / 1000.0) for r in records]
    ups = list(block["scale_up"].values())
    up = ups[0] if ups else {}
    peak = up.get("max_ready")
    return Figures(
        ttft_p95_s=_p95_by_phase(ttft, phases),
        served=_served_by_phase(ttft, phases),
        http_429=sum(1 for r in records if r.status == 429),
        http_503=sum(1 for r in records if r.status == 503),
        peak_ready=None if peak is None else round(peak),
        to_ready_up_s=up.get("to_ready_up_s"),
        to_new_replica_first_request_s=up.get("to_new_replica_first_request_s"),
    )


def trace_of(records: Sequence[RequestRecord]) -> list[TraceRequest]:
    """The requests the bench sent, as the simulator's trace (failed ones: the median sizes)."""
    sizes = sorted((r.prompt_tokens or 0, r.output_tokens or 0) for r in records if r.ok)
    fill = sizes[len(sizes) // 2] if sizes else (1, 1)
    return sorted(
        (
            TraceRequest(r.scheduled_s, *(
                (r.prompt_tokens or fill[0], r.output_tokens or fill[1]) if r.ok else fill))
            for r in records
        ),
        key=lambda t: t.t,
    )  # fmt: skip


def simulated(result: SimulationResult, phases: Sequence[Phase]) -> Figures:
    burst = next(p for p in phases if p.name == "burst")
    ttft = [(r.arrival_s, r.ttft_s if r.ok else None) for r in result.requests]
    # As the bench counts it: the replicas routed at the start serve first; the next one by
    # first-request time is the new one (before the burst: a negative time).
    incumbents = result.timeline[0].ready if result.timeline else 0
    firsts = sorted(r.first_request_s for r in result.replicas if r.first_request_s is not None)
    firsts = firsts[incumbents:]
    return Figures(
        ttft_p95_s=_p95_by_phase(ttft, phases),
        served=_served_by_phase(ttft, phases),
        http_429=result.count("queue_full"),
        http_503=result.count("queue_timeout"),
        peak_ready=max((p.ready for p in result.timeline), default=None),
        to_ready_up_s=_ready_up(result, burst.start_s),
        to_new_replica_first_request_s=firsts[0] - burst.start_s if firsts else None,
    )


def _ready_up(result: SimulationResult, start_s: float) -> float | None:
    before = [p.ready for p in result.timeline if p.t <= start_s]
    base = before[-1] if before else 0
    later = (p.t for p in result.timeline if p.t > start_s and p.ready > base)
    first = next(later, None)
    return None if first is None else first - start_s


def predict(
    records: Sequence[RequestRecord],
    *,
    pool: PoolModel,
    policy: AutoscalingPolicy | None,
    queue: QueueSettings,
    phases: Sequence[Phase],
) -> tuple[Figures, SimulationResult]:
    """The simulator's figures for the requests the bench sent (``policy`` None: one fixed
    replica)."""
    result = simulate(trace_of(records), pool, 1 if policy is None else policy, queue=queue)
    return simulated(result, phases), result


def relative_error(measured_value: float | None, simulated_value: float | None) -> float | None:
    """(simulated - measured) / measured."""
    if measured_value is None or simulated_value is None or measured_value == 0:
        return None
    return (simulated_value - measured_value) / measured_value
