"""A self-hosted pool's cost figures from a `tidegate bench run` JSON result.

The result lists runs (one per load point, each with a ``label``) and, per run, each target's
``output_throughput`` (tok/s) and ``cost.per_million_output_tokens_usd`` (the accelerator's
hourly price spread over those tokens). Read at config load, so a missing file, run or target
is a config error; the keys are read here rather than through ``tidegate_bench``, which the
server never imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def bench_figures(path: str, *, target: str | None, run: str | None) -> tuple[float, float | None]:
    """(output_throughput, accelerator_per_hour or None when the run had no gpu_hour)."""
    try:
        document = json.loads(Path(path).read_text())
        runs: list[dict[str, Any]] = document["runs"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"bench_result {path!r} is not a readable `tidegate bench run` result: {error}"
        ) from None
    labels = [str(r.get("label")) for r in runs]
    if not runs or (run is not None and run not in labels):
        raise ValueError(f"bench_result {path!r} has no run {run!r} (runs: {', '.join(labels)})")
    chosen = runs[-1] if run is None else runs[labels.index(run)]
    targets = {str(t.get("name")): t for t in chosen.get("targets") or []}
    if target is None and len(targets) == 1:
        target = next(iter(targets))
    if target not in targets:
        raise ValueError(
            f"bench_result {path!r}: set bench_target to one of {', '.join(targets) or 'none'}"
        )
    figures = targets[target]
    throughput = figures.get("output_throughput")
    if not isinstance(throughput, int | float) or throughput <= 0:
        raise ValueError(f"bench_result {path!r}: target {target!r} has no output_throughput")
    per_million = (figures.get("cost") or {}).get("per_million_output_tokens_usd")
    per_hour = (
        float(per_million) * float(throughput) * 3600 / 1e6
        if isinstance(per_million, int | float) and per_million > 0
        else None
    )
    return float(throughput), per_hour
