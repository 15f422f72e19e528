"""``tidegate batch submit | status | list | cancel | download``: the Batch API from a shell.

These are client-side commands: they talk to a running gateway over its OpenAI HTTP API (like
the ``openai`` client would), so they work against a remote tidegate as well as a local one and
act as whoever the API key belongs to. Results and tables go to stdout, progress and errors to
stderr; a gateway error prints its message and exits with status 1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tidegate.commands.batch_client import Batch, BatchApiError, BatchClient
from tidegate.commands.batch_input import InputFileError, build_input_file
from tidegate.commands.listing import JsonOption, print_json, table_console

batch_app = typer.Typer(
    help="Submit, watch, cancel and download OpenAI batches through a running gateway.",
    no_args_is_help=True,
)
out = table_console()
err = Console(stderr=True)
T = TypeVar("T")

UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar="TIDEGATE_URL", help="The gateway's OpenAI base URL (ends in /v1)."
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=["TIDEGATE_API_KEY", "OPENAI_API_KEY"],
        help="API key (else TIDEGATE_API_KEY, else OPENAI_API_KEY).",
        show_default=False,
    ),
]
OutOption = Annotated[Path, typer.Option("--out", help="Directory for the output and error files.")]
DEFAULT_URL = "http://127.0.0.1:8080/v1"
_TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "expires_at",
)


@batch_app.command()
def submit(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="JSONL: full batch lines, or bare request bodies (custom_id becomes line-N).",
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Sets body.model on lines that have none.")
    ] = None,
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="/v1/chat/completions or /v1/completions.")
    ] = "/v1/chat/completions",
    window: Annotated[
        str, typer.Option("--window", help="completion_window: the deadline, e.g. 24h.")
    ] = "24h",
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="KEY=VALUE, repeatable.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the batch to its end, then download results.")
    ] = False,
    out_dir: OutOption = Path("."),
    poll_s: Annotated[float, typer.Option("--poll", help="Seconds between polls with --wait.")] = (
        1.0
    ),
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Upload FILE and create a batch from it; prints the batch id (with --wait: follows it)."""
    try:
        content, lines = build_input_file(file.read_bytes(), endpoint=endpoint, model=model)
    except InputFileError as exc:
        _fail(f"{file}: {exc}")
    tags = _parse_metadata(metadata or [])

    async def run() -> int:
        async with BatchClient(base_url=url, api_key=api_key) as client:
            file_id = await client.upload(filename=file.name, content=content)
            err.print(f"uploaded {lines:,} requests as {file_id}", markup=False)
            batch = await client.create(
                input_file_id=file_id, endpoint=endpoint, completion_window=window, metadata=tags
            )
            typer.echo(batch.id)
            if not wait:
                return 0
            batch = await _follow(client, batch, poll_s)
            return await _finish(client, batch, out_dir)

    raise typer.Exit(_run(run()))


@batch_app.command()
def status(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the batch object as JSON.")] = (
        False
    ),
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Show one batch: status, request counts, files and validation errors."""

    async def run() -> Batch:
        async with BatchClient(base_url=url, api_key=api_key) as client:
            return await client.retrieve(batch_id)

    batch = _run(run())
    if as_json:
        typer.echo(orjson.dumps(batch.raw, option=orjson.OPT_INDENT_2).decode())
        return
    _print_batch(batch)


@batch_app.command("list")
def list_batches(
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100, help="How many, newest first.")
    ] = 20,
    after: Annotated[
        str | None, typer.Option("--after", help="Continue after this batch id.")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """List your batches, newest first."""

    async def run() -> tuple[list[Batch], bool]:
        async with BatchClient(base_url=url, api_key=api_key) as client:
            page = await client.list_page(limit=limit, after=after)
            return page.batches, page.has_more

    batches, has_more = _run(run())
    if as_json:
        # The OpenAI list object, as the API returned it.
        print_json({"object": "list", "data": [b.raw for b in batches], "has_more": has_more})
        return
    if not batches:
        out.print("No batches.")
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for column in ("id", "status", "created", "endpoint"):
        table.add_column(column, no_wrap=True)
    for column in ("completed", "failed", "total"):
        table.add_column(column, justify="right", no_wrap=True)
    for b in batches:
        table.add_row(
            b.id,
            b.status,
            _time(b.created_at),
            b.endpoint,
            f"{b.completed:,}",
            f"{b.failed:,}",
            f"{b.total:,}",
        )
    out.print(table)
    if has_more:
        err.print(f"more: tidegate batch list --after {batches[-1].id}", markup=False)


@batch_app.command()
def cancel(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Cancel a batch; lines already done stay in its output (download them once cancelled)."""

    async def run() -> Batch:
        async with BatchClient(base_url=url, api_key=api_key) as client:
            return await client.cancel(batch_id)

    batch = _run(run())
    typer.echo(f"{batch.id}: {batch.status}")


@batch_app.command()
def download(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    out_dir: OutOption = Path("."),
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Save the output and error files as <batch id>_output.jsonl and _errors.jsonl."""

    async def run() -> int:
        async with BatchClient(base_url=url, api_key=api_key) as client:
            batch = await client.retrieve(batch_id)
            if batch.output_file_id is None and batch.error_file_id is None:
                raise BatchApiError(
                    f"batch {batch.id} is {batch.status}: it has no output or error file"
                    + (" yet" if not batch.terminal else "")
                )
            await _download(client, batch, out_dir)
            return 0

    raise typer.Exit(_run(run()))


async def _follow(client: BatchClient, batch: Batch, poll_s: float) -> Batch:
    """Poll until the batch ends, with a progress bar of lines done (completed + failed)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=err,
        transient=not err.is_terminal,
    )
    with progress:
        task = progress.add_task(batch.status, total=batch.total or None, failed=0)
        while True:
            progress.update(
                task,
                description=batch.status,
                total=batch.total or None,  # unknown until validation has counted the lines
                completed=batch.done,
                failed=batch.failed,
            )
            if batch.terminal:
                return batch
            await asyncio.sleep(poll_s)
            batch = await _retrieve_retrying(client, batch.id, poll_s)


async def _retrieve_retrying(client: BatchClient, batch_id: str, poll_s: float) -> Batch:
    """A poll that survives a gateway restart: the batch is durable, so it is worth waiting
    out a short outage (up to a minute) rather than abandoning the watch."""
    deadline = time.monotonic() + 60.0
    while True:
        try:
            return await client.retrieve(batch_id)
        except BatchApiError as exc:
            if (exc.status is not None and exc.status < 500) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(poll_s)


async def _finish(client: BatchClient, batch: Batch, out_dir: Path) -> int:
    """After --wait: report, download what there is; exit status 0 only for completed."""
    _print_batch(batch)
    if batch.output_file_id or batch.error_file_id:
        await _download(client, batch, out_dir)
    return 0 if batch.status == "completed" else 1


async def _download(client: BatchClient, batch: Batch, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for file_id, suffix in ((batch.output_file_id, "output"), (batch.error_file_id, "errors")):
        if not file_id:
            continue
        content = await client.content(file_id)
        path = out_dir / f"{batch.id}_{suffix}.jsonl"
        path.write_bytes(content)
        lines = sum(1 for line in content.splitlines() if line.strip())
        typer.echo(f"{path} ({lines:,} lines)")


def _print_batch(batch: Batch) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    rows = [
        ("id", batch.id),
        ("status", batch.status),
        ("endpoint", batch.endpoint),
        ("created", _time(batch.created_at)),
        ("window", batch.completion_window),
        (
            "requests",
            f"{batch.completed:,} completed, {batch.failed:,} failed, {batch.total:,} total",
        ),
        ("input file", batch.input_file_id),
        ("output file", batch.output_file_id or "-"),
        ("error file", batch.error_file_id or "-"),
    ]
    for key in _TIMESTAMPS:
        value = batch.raw.get(key)
        if isinstance(value, int):
            rows.append((key.removesuffix("_at").replace("_", " ") + " at", _time(value)))
    metadata = batch.raw.get("metadata")
    if isinstance(metadata, dict) and metadata:
        rows.append(("metadata", ", ".join(f"{k}={v}" for k, v in metadata.items())))
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    for error in batch.errors:
        where = f"line {error.line}: " if error.line is not None else ""
        code = f" [{error.code}]" if error.code else ""
        out.print(f"  error: {where}{error.message}{code}", markup=False, style="red")


def _time(epoch_s: int) -> str:
    if not epoch_s:
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _parse_metadata(pairs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--metadata")
        tags[key] = value
    return tags


def _fail(message: str) -> NoReturn:
    err.print(f"error: {message}", markup=False, style="red", soft_wrap=True)
    raise typer.Exit(1)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a gateway error becomes one line on stderr and exit code 1."""
    try:
        return asyncio.run(coro)
    except BatchApiError as exc:
        _fail(exc.message)
    except KeyboardInterrupt:
        # Only the watching stops: the batch lives in the gateway and runs on.
        err.print("stopped watching; the batch keeps running (tidegate batch status ID)")
        raise typer.Exit(130) from None
