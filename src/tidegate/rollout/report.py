"""A rollout's report, in Markdown or HTML with the same content: its parameters and outcome,
every transition, per step the stable and candidate pools side by side (the figures the gates
judged) and, when the candidate was shadowed before, the shadow comparison.

The report is built as a small document (sections of paragraphs and tables of strings) and then
rendered, so both formats say the same; HTML escapes every value.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from tidegate.rollout.gates import evaluate, side_figures
from tidegate.rollout.shadow_reports import PairSummary, SideSummary
from tidegate.rollout.stats import PoolTotals
from tidegate.rollout.transitions import RolloutInfo, baseline

ReportFormat = Literal["md", "html"]
REPORT_FORMATS: tuple[ReportFormat, ...] = ("md", "html")


@dataclass(slots=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(slots=True)
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def render_report(
    info: RolloutInfo,
    totals: dict[tuple[int, str], PoolTotals],
    *,
    format: ReportFormat = "md",
    shadow: Sequence[PairSummary] | None = None,
) -> str:
    title = f"Rollout {info.id}: {info.model}, {info.candidate_pool} over {info.stable_pool}"
    sections = [
        _parameters(info),
        _history(info),
        *(_step(info, index, totals) for index in range(len(info.steps))),
        _shadow(info, shadow),
    ]
    return _html(title, sections) if format == "html" else _markdown(title, sections)


def _parameters(info: RolloutInfo) -> Section:
    gates = info.gates
    rows = [
        ["model", info.model],
        ["stable pool", info.stable_pool],
        ["candidate pool", info.candidate_pool],
        ["steps (candidate share)", ", ".join(f"{step:g}%" for step in info.steps)],
        ["hold per step", f"{info.hold_s:g} s"],
        [
            "gates",
            f"error rate delta ≤ {gates.error_rate_delta:g}, TTFT p95 ratio ≤ "
            f"{gates.ttft_p95_ratio:g}, ITL p95 ratio ≤ {gates.itl_p95_ratio:g}, JSON validity "
            f"delta ≤ {gates.json_validity_delta:g}, at least {gates.min_samples} requests "
            "per pool",
        ],
        ["started", f"{info.created_at:%Y-%m-%d %H:%M:%S} UTC by {info.created_by}"],
        ["state", info.state],
        ["step", f"{info.step_index + 1} of {len(info.steps)} ({info.share:g}%)"],
        ["finished", f"{info.finished_at:%Y-%m-%d %H:%M:%S} UTC" if info.finished_at else "-"],
        ["reason", info.reason or "-"],
    ]
    return Section("Parameters and outcome", tables=[Table(["", ""], rows)])


def _history(info: RolloutInfo) -> Section:
    rows = [
        [
            str(entry.get("at", ""))[:19].replace("T", " "),
            str(entry.get("from") or "-"),
            str(entry.get("to", "")),
            str(int(entry.get("step", 0)) + 1),
            f"{float(entry.get('share', 0)):g}%",
            str(entry.get("reason", "")),
            str(entry.get("actor", "")),
        ]
        for entry in info.history
    ]
    headers = ["at (UTC)", "from", "to", "step", "share", "reason", "by"]
    return Section("Transitions", tables=[Table(headers, rows)])


_STEP_ROWS = [
    ("requests", "requests", "count"),
    ("error rate", "error_rate", "rate"),
    ("TTFT p50", "ttft_p50_s", "ms"),
    ("TTFT p95", "ttft_p95_s", "ms"),
    ("ITL p95", "itl_p95_s", "ms"),
    ("E2E p95", "e2e_p95_s", "ms"),
    ("JSON validity", "json_validity", "rate"),
]


def _step(info: RolloutInfo, index: int, totals: dict[tuple[int, str], PoolTotals]) -> Section:
    share = info.steps[index]
    at_step = _at_step(info, index)
    stable = baseline(at_step, totals)
    candidate = totals.get((index, info.candidate_pool), PoolTotals())
    left, right = side_figures(stable), side_figures(candidate)
    rows = [
        [label, _show(left[key], unit), _show(right[key], unit)] for label, key, unit in _STEP_ROWS
    ]
    rows[-1][1] += f" (n={stable.json_requests})"
    rows[-1][2] += f" (n={candidate.json_requests})"
    stable_header = f"stable {info.stable_pool}"
    if share >= 100:
        stable_header += " (baseline: earlier steps)"
    paragraphs = []
    if index <= info.step_index and (stable.requests or candidate.requests):
        result = evaluate(info.gates, stable, candidate)
        paragraphs.append(f"Gates: {result.verdict} ({result.reason}).")
    elif index > info.step_index:
        paragraphs.append("Not reached.")
    table = Table(["", stable_header, f"candidate {info.candidate_pool}"], rows)
    return Section(f"Step {index + 1}: {share:g}% to the candidate", paragraphs, [table])


def _at_step(info: RolloutInfo, index: int) -> RolloutInfo:
    return replace(info, step_index=index)


_SHADOW_ROWS = [
    ("errors", "errors", "count"),
    ("error rate", "error_rate", "rate"),
    ("TTFT p50", "ttft_p50_ms", "raw_ms"),
    ("TTFT p95", "ttft_p95_ms", "raw_ms"),
    ("ITL p95", "itl_p95_ms", "raw_ms"),
    ("E2E p95", "e2e_p95_ms", "raw_ms"),
    ("JSON validity", "json_valid_rate", "rate"),
    ("tool calls parsed", "tool_calls_ok_rate", "rate"),
    ("refusals", "refusal_rate", "rate"),
]


def _shadow(info: RolloutInfo, shadow: Sequence[PairSummary] | None) -> Section:
    section = Section("Shadow comparison")
    pairs = [pair for pair in shadow or () if pair.shadow_pool == info.candidate_pool]
    if not pairs:
        section.paragraphs.append(f"No shadow traffic was mirrored to {info.candidate_pool}.")
    for pair in pairs:
        rows = [
            [label, _show(_side(pair.primary, key), unit), _show(_side(pair.shadow, key), unit)]
            for label, key, unit in _SHADOW_ROWS
        ]
        rows.append(["outputs differ", "", _show(pair.difference_rate, "rate")])
        rows.append(["mean similarity", "", _show(pair.mean_similarity, "float")])
        section.paragraphs.append(
            f"{pair.count} mirrored requests, primary {pair.primary_pool} vs shadow "
            f"{pair.shadow_pool}."
        )
        headers = ["", f"primary {pair.primary_pool}", f"shadow {pair.shadow_pool}"]
        section.tables.append(Table(headers, rows))
    return section


def _side(side: SideSummary, key: str) -> float | int | None:
    value: float | int | None = getattr(side, key)
    return value


def _show(value: float | int | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "count":
        return str(int(value))
    if unit == "rate":
        return f"{value * 100:.1f}%"
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    if unit == "raw_ms":
        return f"{value:.1f} ms"
    return f"{value:.3f}"


def _markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        for table in section.tables:
            lines.append("| " + " | ".join(table.headers) + " |")
            lines.append("|" + "---|" * len(table.headers))
            lines += [
                "| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows
            ]
            lines.append("")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _html(title: str, sections: list[Section]) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        "</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        parts += [f"<p>{e(paragraph)}</p>" for paragraph in section.paragraphs]
        for table in section.tables:
            parts.append("<table><thead><tr>")
            parts += [f"<th>{e(header)}</th>" for header in table.headers]
            parts.append("</tr></thead><tbody>")
            for row in table.rows:
                parts.append("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>")
            parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
