"""``tidegate shadow report MODEL``: the shadow comparison side by side, one table per
(primary pool, shadow pool). Reads the configured store directly, like ``tidegate usage``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.table import Table

from tidegate.commands.store_cli import ConfigOption, open_store, run_command, table_console

if TYPE_CHECKING:  # the reports (and the store under them) load when the command runs
    from tidegate.rollout.shadow_reports import PairSummary, SideSummary

shadow_app = typer.Typer(
    no_args_is_help=True, help="Read the comparison of mirrored (shadow) requests."
)


@shadow_app.command()
def report(
    model: Annotated[str, typer.Argument(help="The public model name.")],
    since: Annotated[
        str | None, typer.Option("--since", help="From this UTC day (YYYY-MM-DD) or ISO time.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Latency, errors, answer checks and output differences, primary next to shadow."""

    async def run() -> list[PairSummary]:
        from tidegate.metering.periods import parse_bound
        from tidegate.rollout.shadow_reports import ShadowReports

        start = parse_bound(since, param="--since", end=False)
        async with open_store(config) as (_, sessions):
            return await ShadowReports(sessions=sessions).summary(model, since=start)

    pairs = run_command(run())
    console = table_console()
    if not pairs:
        console.print(f"No shadow comparisons recorded for {model}.")
        return
    for pair in pairs:
        # A line of its own: a table title would wrap at the (narrow) table's width.
        console.print(
            f"{model}: {pair.primary_pool} (primary) vs {pair.shadow_pool} (shadow), "
            f"{pair.count:,} requests",
            style="bold",
            markup=False,
        )
        console.print(pair_table(pair))


def pair_table(pair: PairSummary) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("", no_wrap=True)
    table.add_column(pair.primary_pool, justify="right", no_wrap=True)
    table.add_column(pair.shadow_pool, justify="right", no_wrap=True)
    for label, values in _side_rows(pair.primary, pair.shadow):
        table.add_row(label, *values)
    table.add_row("outputs differ", _percent(pair.difference_rate), "")
    similarity = "-" if pair.mean_similarity is None else f"{pair.mean_similarity:.3f}"
    table.add_row("mean similarity", similarity, "")
    return table


def _side_rows(primary: SideSummary, shadow: SideSummary) -> list[tuple[str, tuple[str, str]]]:
    def both(render: str, name: str) -> tuple[str, str]:
        values = (getattr(primary, name), getattr(shadow, name))
        return (
            _ms(values[0]) if render == "ms" else _percent(values[0]),
            _ms(values[1]) if render == "ms" else _percent(values[1]),
        )

    return [
        ("error rate", both("%", "error_rate")),
        ("TTFT p50 / p95 (ms)", _pair(both("ms", "ttft_p50_ms"), both("ms", "ttft_p95_ms"))),
        ("ITL p50 / p95 (ms)", _pair(both("ms", "itl_p50_ms"), both("ms", "itl_p95_ms"))),
        ("E2E p50 / p95 (ms)", _pair(both("ms", "e2e_p50_ms"), both("ms", "e2e_p95_ms"))),
        ("JSON valid", both("%", "json_valid_rate")),
        ("tool calls ok", both("%", "tool_calls_ok_rate")),
        ("refusals", both("%", "refusal_rate")),
    ]


def _pair(p50: tuple[str, str], p95: tuple[str, str]) -> tuple[str, str]:
    return f"{p50[0]} / {p95[0]}", f"{p50[1]} / {p95[1]}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
