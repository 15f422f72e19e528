"""``tidegate bench report RESULT.json --out DIR``: plots and an HTML report from saved results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidegate_bench.needs_extra import bench_extra


def bench_report(
    result: Annotated[
        Path, typer.Argument(help="Result JSON written by `tidegate bench` (CSVs beside it).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.html and the PNG plots.")
    ],
    title: Annotated[
        str | None, typer.Option(help="Report title (default: tidegate bench report).")
    ] = None,
) -> None:
    """Write report.html (self-contained, plots embedded) and the PNG plots into --out."""
    with bench_extra("bench report"):  # matplotlib, numpy
        from tidegate_bench.reporting import ResultError, write_report
    try:
        written = write_report(result, out, title=title)
    except ResultError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for note in written.notes:
        typer.echo(f"note: {note}", err=True)
    for path in written.plots:
        typer.echo(f"plot    {path}")
    typer.echo(f"report  {written.html}")
