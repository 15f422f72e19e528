"""Plots and the self-contained HTML report for a ``tidegate bench`` result file.

Reads only the result JSON and its per-request CSVs (see ``model`` for the layout), so a report
can be rebuilt from saved results without rerunning the load.
"""

from __future__ import annotations

from tidegate_bench.reporting.model import BenchResult, ResultError, load_result, parse_result
from tidegate_bench.reporting.writer import REPORT_FILE, WrittenReport, write_report

__all__ = [
    "REPORT_FILE",
    "BenchResult",
    "ResultError",
    "WrittenReport",
    "load_result",
    "parse_result",
    "write_report",
]
