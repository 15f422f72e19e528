"""Render the self-contained HTML report: inline CSS, plots as base64 data URIs, no scripts.

Jinja2 autoescapes everything, so target names, URLs and the command line from the result file
cannot inject markup.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined

from tidegate_bench.reporting.model import BenchResult, Run
from tidegate_bench.reporting.plots import Plot

NONE_TEXT = "—"


@dataclass(frozen=True)
class RunSection:
    run: Run
    plots: Sequence[Plot]


@dataclass(frozen=True)
class TargetInfo:
    name: str
    url: str
    model: str


def _num(value: float | None, digits: int = 1) -> str:
    return NONE_TEXT if value is None else f"{value:,.{digits}f}"


def _usd(value: float | None) -> str:
    if value is None:
        return NONE_TEXT
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    # Three significant digits, never scientific notation: $0.000754, $0.0000342.
    return f"${value:.{max(2, 2 - math.floor(math.log10(abs(value))))}f}"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _compact(value: object) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("tidegate_bench.reporting", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, usd=_usd, data_uri=_data_uri, compact=_compact)
    return env


def targets_of(result: BenchResult) -> list[TargetInfo]:
    """Each distinct target once, in order of first appearance."""
    seen = {(t.name, t.url, t.model): None for run in result.runs for t in run.targets}
    return [TargetInfo(name, url, model) for name, url, model in seen]


def render_html(
    result: BenchResult,
    *,
    title: str,
    overview: Sequence[Plot],
    sections: Sequence[RunSection],
    notes: Sequence[str],
) -> str:
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title,
        result=result,
        workload=result.workload.details(),
        targets=targets_of(result),
        overview=overview,
        sections=sections,
        notes=notes,
        has_comparisons=any(run.comparisons for run in result.runs),
    )
