"""Summaries and paired comparisons of latency samples.

Percentiles use linear interpolation between closest ranks (numpy's default method, the one
``vllm bench serve`` uses). Paired comparisons resample request pairs (the same prompt sent to two
targets at the same scheduled time) with a seeded bootstrap, so a run's verdict is reproducible
from its data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)
BOOTSTRAP_RESAMPLES = 2000


def summarize(values: Sequence[float]) -> dict[str, float]:
    """mean, median, p90, p95, p99 and std (population); zeros for no samples, as vLLM does."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0, "std": 0.0}
    arr = np.asarray(values, dtype=float)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(arr, PERCENTILES))
    return {
        "mean": float(arr.mean()),
        "median": p50,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "std": float(arr.std()),
    }


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else 0.0


@dataclass(frozen=True, kw_only=True)
class PairedDiff:
    median_diff_ms: float
    """Median over pairs of (b - a)."""
    ci95: tuple[float, float]
    ratio: float
    """median(b) / median(a)."""
    significant: bool
    pairs: int


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, seed: int, min_effect: float
) -> PairedDiff | None:
    """Compare paired samples; significant when the bootstrap 95% interval of the median
    difference excludes zero *and* the difference is at least ``min_effect`` of a's median
    (a fraction: tiny but consistent differences, such as which target was written to first,
    are not worth reporting)."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    if len(a) < 2:
        return None
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    diff = xb - xa
    rng = np.random.default_rng(seed)
    # Resample in blocks so a long run's index matrix stays small.
    block = max(1, min(BOOTSTRAP_RESAMPLES, 2_000_000 // len(diff)))
    parts = []
    for start in range(0, BOOTSTRAP_RESAMPLES, block):
        n = min(block, BOOTSTRAP_RESAMPLES - start)
        idx = rng.integers(0, len(diff), size=(n, len(diff)))
        parts.append(np.median(diff[idx], axis=1))
    medians = np.concatenate(parts)
    lo, hi = (float(v) for v in np.percentile(medians, [2.5, 97.5]))
    median_diff = float(np.median(diff))
    base = float(np.median(xa))
    ratio = float(np.median(xb)) / base if base > 0 else float("nan")
    excludes_zero = lo > 0 or hi < 0
    large_enough = abs(median_diff) >= min_effect * abs(base)
    return PairedDiff(
        median_diff_ms=median_diff,
        ci95=(lo, hi),
        ratio=ratio,
        significant=bool(excludes_zero and large_enough),
        pairs=len(diff),
    )
