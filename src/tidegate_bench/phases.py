"""The burst scenario's phases: a baseline, a burst of ``factor`` times the load, a cool-down.

Open loop: each phase is its own arrival process at ``rate × factor`` (seeded per phase, so a
rerun sends the same schedule). Closed loop: ``concurrency × factor`` workers are active in a
phase; a worker whose phase ends sends nothing more (its request in flight still finishes).
Requests belong to the phase in which they were due (``scheduled_s``), whatever phase they end in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from tidegate_bench.records import RequestRecord
from tidegate_bench.schedule import ArrivalProcess, arrival_times

PhaseName = Literal["baseline", "burst", "cooldown"]
PHASE_NAMES: tuple[PhaseName, ...] = ("baseline", "burst", "cooldown")
# Arrival processes whose shape is only their gaps: onoff and ramp bring their own timing.
BURST_SHAPES = ("constant", "poisson", "gamma")


@dataclass(frozen=True, kw_only=True)
class Phase:
    name: PhaseName
    start_s: float
    end_s: float
    factor: float
    """Load relative to the baseline (1 for baseline and cool-down)."""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, kw_only=True)
class BurstPlan:
    baseline_s: float
    burst_s: float
    cooldown_s: float
    factor: float

    def __post_init__(self) -> None:
        for name in ("baseline_s", "cooldown_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 seconds, got {value}")
        if not (math.isfinite(self.burst_s) and self.burst_s > 0):
            raise ValueError(f"--burst-s must be > 0 seconds, got {self.burst_s}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"--burst-factor must be >= 1, got {self.factor}")

    @property
    def total_s(self) -> float:
        return self.baseline_s + self.burst_s + self.cooldown_s

    def phases(self) -> tuple[Phase, ...]:
        """The phases with a duration, in order (a zero-length baseline or cool-down is omitted)."""
        out = []
        start = 0.0
        steps: tuple[tuple[PhaseName, float, float], ...] = (
            ("baseline", self.baseline_s, 1.0),
            ("burst", self.burst_s, self.factor),
            ("cooldown", self.cooldown_s, 1.0),
        )
        for name, length, factor in steps:
            if length > 0:
                out.append(Phase(name=name, start_s=start, end_s=start + length, factor=factor))
            start += length
        return tuple(out)


def phase_at(phases: Sequence[Phase], t: float) -> Phase | None:
    """The phase holding time ``t`` ([start, end); the last phase also holds its end)."""
    for phase in phases:
        if phase.start_s <= t < phase.end_s:
            return phase
    if phases and t == phases[-1].end_s:
        return phases[-1]
    return None


def split_by_phase(
    records: Sequence[RequestRecord], phases: Sequence[Phase]
) -> dict[str, list[RequestRecord]]:
    """Each phase's requests, by when they were due."""
    out: dict[str, list[RequestRecord]] = {p.name: [] for p in phases}
    for record in records:
        phase = phase_at(phases, record.scheduled_s)
        if phase is not None:
            out[phase.name].append(record)
    return out


def phased_arrivals(process: ArrivalProcess, phases: Sequence[Phase], *, seed: int) -> list[float]:
    """Send times: ``process`` at ``rate × factor`` inside each phase."""
    if process.shape not in BURST_SHAPES:
        raise ValueError(
            f"--scenario burst takes --shape {', '.join(BURST_SHAPES)}, got {process.shape!r}"
        )
    out: list[float] = []
    for i, phase in enumerate(phases):
        scaled = replace(process, rate=process.rate * phase.factor)
        times = arrival_times(scaled, count=None, duration_s=phase.duration_s, seed=seed + 7919 * i)
        out.extend(phase.start_s + t for t in times)
    return out


def worker_windows(phases: Sequence[Phase], concurrency: int) -> list[tuple[float, float]]:
    """Closed loop: one (start, end) window per worker slot and stretch of phases it is active in.

    A phase runs ``round(concurrency × factor)`` workers; worker ``k`` is active in the phases
    that run more than ``k`` workers, and contiguous phases merge into one window.
    """
    counts = [max(1, round(concurrency * p.factor)) for p in phases]
    windows: list[tuple[float, float]] = []
    for k in range(max(counts, default=0)):
        start: float | None = None
        for phase, count in zip(phases, counts, strict=True):
            if count > k and start is None:
                start = phase.start_s
            elif count <= k and start is not None:
                windows.append((start, phase.start_s))
                start = None
        if start is not None:
            windows.append((start, phases[-1].end_s))
    return windows
