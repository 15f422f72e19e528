"""The run's JSON document (``"tidegate_bench": 1``) and one CSV of requests per run and target.

The layout is documented in the README; the HTML report reads it. CSV paths in the JSON are
relative to the JSON file's folder.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from rich.console import Console

from tidegate_bench.metrics import target_figures
from tidegate_bench.records import RequestRecord
from tidegate_bench.runner import PointResult
from tidegate_bench.selfcheck import ClientHealth
from tidegate_bench.spec import Slo, Target
from tidegate_bench.stats import paired_difference

SCHEMA_VERSION = 1
COMPARED = ("ttft_ms", "e2el_ms", "tpot_ms")
CSV_HEADER = (
    "index", "target", "tenant", "scheduled_s", "sent_s", "ttft_ms", "e2el_ms", "tpot_ms",
    "prompt_tokens", "output_tokens", "status", "error",
)  # fmt: skip


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "x"


def comparisons(
    result: PointResult, names: Sequence[str], *, seed: int, min_effect: float
) -> list[dict[str, Any]]:
    """Paired differences b - a for every pair of targets, over prompts both served."""
    out = []
    for a, b in itertools.combinations(names, 2):
        ra = {r.index: r for r in result.records[a] if r.measured and r.ok}
        rb = {r.index: r for r in result.records[b] if r.measured and r.ok}
        for metric in COMPARED:
            pairs = [
                (va, vb)
                for i in sorted(ra.keys() & rb.keys())
                if (va := getattr(ra[i], metric)) is not None
                and (vb := getattr(rb[i], metric)) is not None
            ]
            diff = paired_difference(
                [p[0] for p in pairs], [p[1] for p in pairs], seed=seed, min_effect=min_effect
            )
            if diff is None:
                continue
            out.append({
                "a": a, "b": b, "metric": metric, "median_diff_ms": diff.median_diff_ms,
                "ci95": list(diff.ci95), "ratio": diff.ratio, "significant": diff.significant,
                "pairs": diff.pairs,
            })  # fmt: skip
    return out


def write_csv(path: Path, records: Sequence[RequestRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for r in records:
            writer.writerow([
                r.index, r.target, r.tenant, f"{r.scheduled_s:.6f}", f"{r.sent_s:.6f}",
                _ms(r.ttft_ms), _ms(r.e2el_ms), _ms(r.tpot_ms),
                "" if r.prompt_tokens is None else r.prompt_tokens,
                "" if r.output_tokens is None else r.output_tokens,
                r.status, r.error,
            ])  # fmt: skip


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def build_document(
    *,
    command: str,
    workload: dict[str, Any],
    results: Sequence[PointResult],
    targets: Sequence[tuple[Target, str]],
    slo: Slo,
    json_path: Path,
    seed: int,
    min_effect: float,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """Write every CSV next to ``json_path`` and return the JSON document (not yet written)."""
    csv_dir = json_path.parent / f"{json_path.stem}_requests"
    runs = []
    for result in results:
        point = result.point
        rows = []
        for target, model in targets:
            records = result.records[target.name]
            csv_path = csv_dir / f"{slug(point.label)}__{slug(target.name)}.csv"
            write_csv(csv_path, records)
            rows.append(
                target_figures(
                    target=target,
                    model=model,
                    records=records,
                    window_start_s=result.window_start_s,
                    slo=slo,
                    csv_path=str(csv_path.relative_to(json_path.parent)),
                )
            )
        process = point.process
        runs.append({
            "label": point.label,
            "shape": point.shape,
            "concurrency": point.concurrency,
            "rate": process.rate if process is not None else None,
            "duration_s": max((float(str(t["duration_s"])) for t in rows), default=0.0),
            "client": result.health.as_json(),
            "targets": rows,
            "comparisons": comparisons(
                result, [t.name for t, _ in targets], seed=seed, min_effect=min_effect
            ),
        })  # fmt: skip
    health = ClientHealth.worst([r.health for r in results])
    return {
        "tidegate_bench": SCHEMA_VERSION,
        "started_at": (started_at or datetime.now(UTC)).isoformat(),
        "command": command,
        "workload": workload,
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "e2el_ms": slo.e2el_ms},
        "client": health.as_json(),
        "runs": runs,
    }


def report_header(benchmark: str, options: Any) -> dict[str, Any]:
    """What a standalone benchmark's JSON report starts with: its name, when, the machine, and
    its ``options`` (a dataclass; paths as strings)."""
    return {
        "benchmark": benchmark,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }


class _Standalone(Protocol):
    @property
    def out(self) -> Path: ...


_O = TypeVar("_O", bound=_Standalone)


def run_standalone(
    options: _O,
    run: Callable[[_O, Console], Coroutine[Any, Any, dict[str, Any]]],
    render: Callable[[dict[str, Any], Console], None],
) -> None:
    """A standalone benchmark's ``main``: run it, print its report, write the JSON to
    ``options.out``."""
    console = Console(width=None if sys.stdout.isatty() else 170)
    report = asyncio.run(run(options, console))
    render(report, console)
    write_document(options.out, report)
    console.print(f"wrote {options.out}")


def write_document(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def read_document(path: Path) -> dict[str, Any]:
    doc = orjson.loads(path.read_bytes())
    if not isinstance(doc, dict) or doc.get("tidegate_bench") != SCHEMA_VERSION:
        raise ValueError(f"{path} is not a tidegate bench result (version {SCHEMA_VERSION})")
    return doc
