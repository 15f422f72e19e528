"""Arrival schedules for open-loop load: when each request is due, relative to the run's start.

The schedule is computed up front from a seeded generator, so every target gets the same send
times and a test can check the process itself without a clock. Shapes (as ``vllm bench serve``
defines them where it has them):

- constant: one request every 1/rate seconds.
- poisson: exponential inter-arrival times with mean 1/rate.
- gamma: gamma inter-arrival times, shape = burstiness, mean 1/rate; burstiness < 1 is burstier
  than Poisson, > 1 smoother, 1 is Poisson.
- onoff: Poisson at ``rate`` during ``on_s``-second bursts separated by ``off_s`` seconds of
  silence.
- ramp: a Poisson process whose rate grows linearly from ``rate_start`` to ``rate`` over
  ``duration_s`` (arrivals by time rescaling of a unit-rate process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

OpenShape = Literal["constant", "poisson", "gamma", "onoff", "ramp"]
OPEN_SHAPES: tuple[OpenShape, ...] = ("constant", "poisson", "gamma", "onoff", "ramp")
# Never materialise an unbounded schedule: a generous cap on the arrivals one run may hold.
MAX_ARRIVALS = 5_000_000


@dataclass(frozen=True, kw_only=True)
class ArrivalProcess:
    shape: OpenShape
    rate: float
    """Requests per second (the peak rate for onoff, the final rate for ramp)."""
    burstiness: float = 1.0
    on_s: float = 5.0
    off_s: float = 5.0
    rate_start: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or not math.isfinite(self.rate):
            raise ValueError(f"rate must be a positive number, got {self.rate}")
        if self.burstiness <= 0:
            raise ValueError(f"burstiness must be positive, got {self.burstiness}")
        if self.shape == "onoff" and (self.on_s <= 0 or self.off_s < 0):
            raise ValueError("onoff needs on_s > 0 and off_s >= 0")


def arrival_times(
    process: ArrivalProcess, *, count: int | None, duration_s: float | None, seed: int
) -> list[float]:
    """Send times in seconds from the start, ascending, bounded by ``count`` and ``duration_s``
    (whichever comes first; at least one of them must be given)."""
    if count is None and duration_s is None:
        raise ValueError("an open-loop run needs a request count, a duration or both")
    if process.shape == "ramp" and duration_s is None:
        raise ValueError("a ramp needs a duration")
    limit = min(count if count is not None else MAX_ARRIVALS, MAX_ARRIVALS)
    horizon = duration_s if duration_s is not None else math.inf
    rng = np.random.default_rng(seed)
    if process.shape == "ramp":
        assert duration_s is not None
        times = _ramp(process, rng, limit, duration_s)
    else:
        times = _renewal(process, rng, limit, horizon)
    return [t for t in times if t < horizon][:limit]


def _gaps(process: ArrivalProcess, rng: np.random.Generator, n: int) -> np.ndarray:
    mean = 1.0 / process.rate
    if process.shape == "constant":
        return np.full(n, mean)
    if process.shape == "gamma":
        return rng.gamma(shape=process.burstiness, scale=mean / process.burstiness, size=n)
    return rng.exponential(mean, size=n)  # poisson, and onoff inside its bursts


def _renewal(
    process: ArrivalProcess, rng: np.random.Generator, limit: int, horizon: float
) -> list[float]:
    # Draw gaps in blocks until the count or the horizon is reached.
    out: list[float] = []
    busy = 0.0  # time spent "on" (for onoff, arrivals are placed on the on-time axis)
    first = process.shape != "constant"  # constant sends its first request at t=0
    while len(out) < limit:
        block = _gaps(process, rng, min(limit - len(out), 65_536))
        if not first:
            block[0] = 0.0
            first = True
        on_times = busy + np.cumsum(block)
        busy = float(on_times[-1])
        wall = _onoff_wall(process, on_times) if process.shape == "onoff" else on_times
        out.extend(float(t) for t in wall)
        if out and out[-1] >= horizon:
            break
    return out


def _onoff_wall(process: ArrivalProcess, on_times: np.ndarray) -> np.ndarray:
    """Map time on the on-axis to wall time: each full burst adds an off period."""
    bursts = np.floor(on_times / process.on_s)
    wall: np.ndarray = on_times + bursts * process.off_s
    return wall


def _ramp(
    process: ArrivalProcess, rng: np.random.Generator, limit: int, duration_s: float
) -> list[float]:
    r0, r1 = process.rate_start, process.rate
    slope = (r1 - r0) / duration_s
    out: list[float] = []
    cumulative = 0.0
    while len(out) < limit:
        cumulative += float(rng.exponential(1.0))
        # Solve r0 t + slope t^2 / 2 = cumulative for t >= 0.
        if abs(slope) < 1e-12:
            t = cumulative / r0 if r0 > 0 else math.inf
        else:
            disc = r0 * r0 + 2.0 * slope * cumulative
            t = (-r0 + math.sqrt(disc)) / slope if disc >= 0 else math.inf
        if t >= duration_s:
            break
        out.append(t)
    return out
