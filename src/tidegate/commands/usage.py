"""``tidegate usage``: usage rollups as a table, and ``tidegate usage export`` as CSV.

Both read the configured store directly (migrating it first, like ``tidegate keys``), so they
work with no gateway running. The CLI acts as the operator: it sees every tenant.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tidegate.commands.listing import JsonOption, print_json, table_console
from tidegate.errors import TidegateError

if TYPE_CHECKING:  # the store and the queries load when a command runs, not for --help
    from tidegate.metering.queries import RollupRow, UsageQueries

usage_app = typer.Typer(
    help="Usage per tenant and day or model; `usage export` writes raw records as CSV.",
    invoke_without_command=True,
)

T = TypeVar("T")


class GroupChoice(StrEnum):
    day = "day"
    model = "model"


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML config file (default: TIDEGATE_CONFIG, else none)."),
]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Only this tenant's usage (default: every tenant).")
]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="From this UTC day (YYYY-MM-DD) or ISO time.")
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", help="Up to and including this UTC day, or before this ISO time."),
]


@usage_app.callback()
def usage(
    ctx: typer.Context,
    tenant: TenantOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    by: Annotated[GroupChoice, typer.Option("--by", help="One row per day or per model.")] = (
        GroupChoice.day
    ),
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show requests, tokens and cost per tenant and day (or model). Shadow traffic is left
    out: it is never charged."""
    if ctx.invoked_subcommand is not None:
        return

    async def run() -> list[RollupRow]:
        from tidegate.metering.periods import parse_bound

        start = parse_bound(since, param="--since", end=False)
        end = parse_bound(until, param="--until", end=True)
        async with _queries(config) as queries:
            return await queries.usage_rollup(tenant, start, end, by.value)

    rows = _run(run())
    if as_json:
        print_json([{**asdict(row), "total_tokens": row.total_tokens} for row in rows])
        return
    console = table_console()
    if not rows:
        console.print("No usage recorded in that range.")
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("tenant", no_wrap=True)
    table.add_column(by.value, no_wrap=True)
    for header in ("requests", "prompt", "cached", "completion", "total tokens", "cost (USD)"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.tenant_id,
            (row.day if by is GroupChoice.day else row.model) or "-",
            f"{row.requests:,}",
            f"{row.prompt_tokens:,}",
            f"{row.cached_tokens:,}",
            f"{row.completion_tokens:,}",
            f"{row.total_tokens:,}",
            f"{row.cost_usd:,.4f}",
        )
    console.print(table)


@usage_app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="CSV file to write ('-': stdout).")],
    tenant: TenantOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    config: ConfigOption = None,
) -> None:
    """Write raw usage records (one row per request, shadow traffic included) as CSV."""

    async def run() -> int:
        from tidegate.metering.periods import parse_bound

        start = parse_bound(since, param="--since", end=False)
        end = parse_bound(until, param="--until", end=True)
        async with _queries(config) as queries:
            if str(out) == "-":
                return await _write_csv(
                    queries, typer.get_text_stream("stdout"), tenant, start, end
                )
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("w", newline="", encoding="utf-8") as stream:
                return await _write_csv(queries, stream, tenant, start, end)

    count = _run(run())
    Console(stderr=True).print(f"Wrote {count:,} usage records to {out}.", markup=False)


async def _write_csv(
    queries: UsageQueries,
    stream: TextIO,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
) -> int:
    from tidegate.metering.events import FIELD_NAMES
    from tidegate.metering.queries import MAX_PAGE

    writer = csv.writer(stream)
    writer.writerow(FIELD_NAMES)
    count, after = 0, None
    while True:  # page by page, so an export of millions of rows needs little memory
        page = await queries.list_records(tenant, since, until, limit=MAX_PAGE, after=after)
        for record in page.records:
            row = record.as_row()
            row["created_at"] = record.created_at.isoformat()
            writer.writerow(["" if row[name] is None else row[name] for name in FIELD_NAMES])
        count += len(page.records)
        if page.next_cursor is None:
            return count
        after = page.next_cursor


@asynccontextmanager
async def _queries(config_path: Path | None) -> AsyncIterator[UsageQueries]:
    from tidegate.config import load_config
    from tidegate.metering.queries import UsageQueries
    from tidegate.store import create_engine, create_sessionmaker, migrate

    config = load_config(config_path)
    await migrate(config.store_url)
    engine = create_engine(config.store_url)
    try:
        yield UsageQueries(sessions=create_sessionmaker(engine))
    finally:
        await engine.dispose()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; known failures become one line on stderr and exit code 1."""
    from pydantic import ValidationError

    try:
        return asyncio.run(coro)
    except TidegateError as exc:
        message = exc.message
    except (FileNotFoundError, PermissionError) as exc:
        message = str(exc)
    except ValidationError as exc:
        message = f"invalid configuration: {exc}"
    Console(stderr=True).print(f"error: {message}", markup=False, style="red")
    raise typer.Exit(1)
