"""Build every plot and the HTML report for one result file and write them into a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tidegate_bench.reporting.html import RunSection, render_html
from tidegate_bench.reporting.model import BenchResult, Run, load_result
from tidegate_bench.reporting.plots import (
    Plot,
    burst_timeline,
    latency_cdfs,
    latency_vs_load,
    target_colors,
    throughput_over_time,
)
from tidegate_bench.reporting.samples import Latencies, read_latencies

REPORT_FILE = "report.html"
DEFAULT_TITLE = "tidegate bench report"


@dataclass(frozen=True)
class WrittenReport:
    html: Path
    plots: tuple[Path, ...]
    notes: tuple[str, ...]


def _run_latencies(run: Run, base: Path, notes: list[str]) -> dict[str, Latencies]:
    """Each target's per-request latencies; unreadable CSVs become notes, not failures."""
    found: dict[str, Latencies] = {}
    for target in run.targets:
        path = base / target.requests_csv
        try:
            found[target.name] = read_latencies(path)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            notes.append(f"{run.label} / {target.name}: no CDF, cannot read {path}: {exc}")
    return found


def build(result: BenchResult, base: Path) -> tuple[list[Plot], list[RunSection], list[str]]:
    """All plots (overview, then per run) and notes; ``base`` resolves the CSV paths."""
    notes: list[str] = []
    colors = target_colors(result)
    overview = [p for p in (latency_vs_load(result),) if p is not None]
    sections = []
    for index, run in enumerate(result.runs):
        cdf = latency_cdfs(run, index, _run_latencies(run, base, notes), colors)
        candidates = (burst_timeline(run, index), cdf, throughput_over_time(run, index, colors))
        plots = [p for p in candidates if p is not None]
        sections.append(RunSection(run=run, plots=plots))
    return overview, sections, notes


def write_report(result_path: Path, out_dir: Path, *, title: str | None = None) -> WrittenReport:
    """Write ``report.html`` and the PNGs into ``out_dir`` (created if needed)."""
    result = load_result(result_path)
    overview, sections, notes = build(result, result_path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for plot in [*overview, *(p for s in sections for p in s.plots)]:
        path = out_dir / plot.file
        path.write_bytes(plot.png)
        written.append(path)
    html = render_html(
        result,
        title=title or DEFAULT_TITLE,
        overview=overview,
        sections=sections,
        notes=notes,
    )
    html_path = out_dir / REPORT_FILE
    html_path.write_text(html, encoding="utf-8")
    return WrittenReport(html=html_path, plots=tuple(written), notes=tuple(notes))
