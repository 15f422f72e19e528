"""``tidegate bench run | compare | cold-start | client-capacity``.

Tables go to stdout, progress to stderr. The run's JSON (and one CSV of requests per load point
and target, in a folder beside it) is what the HTML report reads.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tidegate.commands.listing import table_console
from tidegate_bench import console as views
from tidegate_bench.aio import run_async
from tidegate_bench.needs_extra import bench_extra
from tidegate_bench.report_cli import bench_report
from tidegate_bench.spec import Slo, Target, parse_target, parse_tenant

if TYPE_CHECKING:
    from tidegate_bench.burst.command import BurstArgs
    from tidegate_bench.records import RequestRecord
    from tidegate_bench.runner import LoadPoint, PointResult, RunSettings

# The runner, the workloads and the results need the `bench` extra (numpy): each command
# imports what it needs, so `tidegate bench --help` starts fast and works without it.
bench_app = typer.Typer(help="Load-test OpenAI-compatible endpoints.", no_args_is_help=True)
# Off a terminal (CI logs, files) Rich would wrap the wide results table at 80 columns.
out_console = table_console()
err = Console(stderr=True)


def _targets(specs: list[str], model: str | None, key: str | None) -> list[Target]:
    try:
        targets = [parse_target(s, default_model=model, default_key=key) for s in specs]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--target") from exc
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise typer.BadParameter("targets need distinct names (name=...)", param_hint="--target")
    return targets


def _out_path(out: Path | None, default_name: str) -> Path:
    """Where a result goes: ``out``, or a file named ``default_name`` inside it when it is a folder.

    Checked before the run so a bad ``--out`` does not cost a whole load test.
    """
    if out is None:
        return Path("bench-results") / default_name
    path = out / default_name if out.is_dir() else out
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"{parent} is a file, not a folder", param_hint="--out")
    if path.exists() and not path.is_file():
        raise typer.BadParameter(f"{path} exists and is not a file", param_hint="--out")
    return path


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


async def _run_points(
    *,
    targets: list[Target],
    points: list[LoadPoint],
    runner_args: dict[str, Any],
    settings: RunSettings,
    show_progress: bool,
) -> tuple[list[tuple[Target, str]], list[PointResult]]:
    from tidegate_bench.runner import LoadRunner, resolve_model

    bound = [(t, await resolve_model(t, timeout_s=settings.timeout_s)) for t in targets]
    results = []
    with _progress() if show_progress else _NoProgress() as progress:
        for point in points:
            total = settings.count * len(targets) if settings.count is not None else None
            task = progress.add_task(point.label, total=total, errors=0)
            errors = 0

            def tick(record: RequestRecord, task: Any = task) -> None:
                nonlocal errors
                errors += 0 if record.ok else 1
                progress.update(task, advance=1, errors=errors)

            runner = LoadRunner(targets=bound, settings=settings, on_record=tick, **runner_args)
            try:
                results.append(await runner.run(point))
            finally:
                runner.close()
            progress.update(task, visible=False)
    return bound, results


def _command_line() -> str:
    if "run" in sys.argv:
        return " ".join(["tidegate", "bench", *sys.argv[sys.argv.index("run") :]])
    return "tidegate bench run"


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> TaskID:
        return TaskID(0)

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


@bench_app.command()
def run(
    target: Annotated[
        list[str],
        typer.Option(
            "--target",
            "-t",
            help="[NAME=]URL, or name=..,url=..,model=..,key=..,input_price=..,"
            "cached_input_price=..,output_price=.. (USD per million tokens),gpu_hour=.. "
            "(USD per accelerator hour). Repeat for side by side.",
        ),
    ],
    model: Annotated[str | None, typer.Option(help="Model for targets without model=.")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="OPENAI_API_KEY", help="Key for targets without key=.")
    ] = None,
    concurrency: Annotated[
        str | None, typer.Option("--concurrency", "-c", help="Closed loop; a sweep: 1,10,50.")
    ] = None,
    rate: Annotated[
        str | None, typer.Option(help="Open loop requests/s; a sweep: 5,10,20.")
    ] = None,
    shape: Annotated[str, typer.Option(help="constant|poisson|gamma|onoff|ramp.")] = "poisson",
    burstiness: Annotated[float, typer.Option(help="gamma shape; 1 = Poisson.")] = 1.0,
    on_s: Annotated[float, typer.Option(help="onoff: burst length, s.")] = 5.0,
    off_s: Annotated[float, typer.Option(help="onoff: pause length, s.")] = 5.0,
    ramp_start: Annotated[float, typer.Option(help="ramp: starting rate, req/s.")] = 0.0,
    num_requests: Annotated[
        int | None, typer.Option("--num-requests", "-n", help="Requests per load point.")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds per load point.")] = None,
    warmup: Annotated[float, typer.Option(help="Seconds excluded at the start.")] = 0.0,
    cooldown: Annotated[float, typer.Option(help="Seconds excluded at the end.")] = 0.0,
    workload: Annotated[str, typer.Option(help="synthetic|shared-prefix|jsonl.")] = "synthetic",
    dataset: Annotated[Path | None, typer.Option(help="JSONL prompts (--workload jsonl).")] = None,
    input_len: Annotated[int, typer.Option(help="Mean prompt tokens.")] = 256,
    output_len: Annotated[int, typer.Option(help="Mean max_tokens.")] = 128,
    len_dist: Annotated[str, typer.Option(help="fixed|uniform|normal.")] = "fixed",
    len_spread: Annotated[float, typer.Option(help="uniform ±fraction; normal std/mean.")] = 0.0,
    conversations: Annotated[int, typer.Option(help="shared-prefix: conversations.")] = 16,
    turns: Annotated[int, typer.Option(help="shared-prefix: turns per conversation.")] = 4,
    prefixes: Annotated[int, typer.Option(help="shared-prefix: distinct system prompts.")] = 2,
    prefix_len: Annotated[int, typer.Option(help="shared-prefix: system prompt tokens.")] = 512,
    tokenizer: Annotated[
        Path | None, typer.Option(help="tokenizer.json or a model dir, to size and count tokens.")
    ] = None,
    tenant: Annotated[
        list[str] | None,
        typer.Option(help="NAME[:KEY[:WEIGHT[:PRIORITY]]]; repeat for a tenant mix."),
    ] = None,
    priority_header: Annotated[str, typer.Option()] = "x-tidegate-priority",
    slo_ttft_ms: Annotated[float | None, typer.Option(help="Goodput SLO on TTFT.")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="Goodput SLO on TPOT.")] = None,
    slo_e2el_ms: Annotated[float | None, typer.Option(help="Goodput SLO on E2E latency.")] = None,
    api: Annotated[str, typer.Option(help="chat|completions.")] = "chat",
    stream: Annotated[bool, typer.Option(help="Stream (needed for TTFT/ITL).")] = True,
    ignore_eos: Annotated[bool, typer.Option(help="Send vLLM's ignore_eos.")] = False,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, s.")] = 300.0,
    seed: Annotated[int, typer.Option()] = 0,
    min_effect: Annotated[
        float, typer.Option(help="Smallest relative difference a comparison reports.")
    ] = 0.05,
    out: Annotated[
        Path | None,
        typer.Option(help="JSON path, or a folder to write bench-<time>.json in (CSVs beside it)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Live progress bar.")] = True,
    scenario: Annotated[
        str,
        typer.Option(
            help="sweep: one run per --rate/--concurrency value. burst: a baseline at --rate "
            "(or -c), a burst of --burst-factor times it for --burst-s, a cool-down; per-phase "
            "figures, the gateway's replicas over time and an --sla verdict."
        ),
    ] = "sweep",
    baseline_s: Annotated[float, typer.Option(help="burst: baseline seconds.")] = 30.0,
    burst_factor: Annotated[float, typer.Option(help="burst: load multiplier in the burst.")] = 4.0,
    burst_s: Annotated[float, typer.Option(help="burst: burst seconds.")] = 60.0,
    cooldown_s: Annotated[
        float, typer.Option(help="burst: cool-down seconds (at the baseline load).")
    ] = 60.0,
    sla: Annotated[
        str | None,
        typer.Option(
            help="burst: bounds every phase must meet, e.g. ttft_p95=2s,error_rate=0.01 (keys "
            "ttft_p50|p95|p99, e2e_p50|p95|p99, queue_wait_p95, error_rate). Missed: exit 3."
        ),
    ] = None,
    metrics_url: Annotated[
        str | None,
        typer.Option(
            help="burst: the gateway's /metrics (default: beside the target's /v1; off: none)."
        ),
    ] = None,
    metrics_key: Annotated[
        str | None,
        typer.Option(
            envvar="TIDEGATE_METRICS_TOKEN",
            help="burst: server.metrics_token or an admin key for /metrics (default: the "
            "target's key).",
        ),
    ] = None,
    scrape_interval: Annotated[
        float, typer.Option(help="burst: seconds between /metrics scrapes.")
    ] = 1.0,
    pool: Annotated[
        list[str] | None, typer.Option(help="burst: only these pools' replicas and queue wait.")
    ] = None,
) -> None:
    """Run a load test against one or several targets."""
    if scenario not in ("sweep", "burst"):
        raise typer.BadParameter("sweep or burst", param_hint="--scenario")
    if scenario == "sweep" and sla is not None:
        raise typer.BadParameter("--sla needs --scenario burst", param_hint="--sla")
    with bench_extra("bench run"):
        from tidegate_bench.results import build_document, write_document
        from tidegate_bench.runner import RunSettings
        from tidegate_bench.tokenizer import TokenCounter
        from tidegate_bench.workload_options import WorkloadOptions, build_workload, load_points
    targets = _targets(target, model, api_key)
    burst: BurstArgs | None = None
    if scenario == "burst":
        with bench_extra("bench run"):
            from tidegate_bench.burst.command import burst_args
        try:
            burst = burst_args(
                targets=targets, concurrency=concurrency, rate=rate, shape=shape,
                num_requests=num_requests, duration=duration, warmup=warmup, cooldown=cooldown,
                baseline_s=baseline_s, burst_factor=burst_factor, burst_s=burst_s,
                cooldown_s=cooldown_s, sla=sla, metrics_url=metrics_url, metrics_key=metrics_key,
                scrape_interval=scrape_interval, pools=pool or [],
            )  # fmt: skip
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        duration = burst.plan.total_s
    if num_requests is None and duration is None:
        num_requests = 200
    if api not in ("chat", "completions"):
        raise typer.BadParameter("chat or completions", param_hint="--api")
    options = WorkloadOptions(
        kind=workload, dataset=dataset, input_len=input_len, output_len=output_len,
        len_dist=len_dist, len_spread=len_spread, conversations=conversations, turns=turns,
        prefixes=prefixes, prefix_len=prefix_len, count=num_requests or 1000, seed=seed,
    )  # fmt: skip
    try:
        counter = TokenCounter.load(tokenizer)
        prompts, workload_json = build_workload(options, counter)
        points = load_points(
            concurrency=concurrency, rate=rate, shape=shape, burstiness=burstiness,
            on_s=on_s, off_s=off_s, ramp_start=ramp_start,
        )  # fmt: skip
        tenants = [parse_tenant(t) for t in tenant or []]
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = RunSettings(
        count=num_requests, duration_s=duration, warmup_s=warmup, cooldown_s=cooldown, seed=seed,
        timeout_s=timeout, api=api, stream=stream, ignore_eos=ignore_eos,  # type: ignore[arg-type]
        priority_header=priority_header,
    )  # fmt: skip
    slo = Slo(ttft_ms=slo_ttft_ms, tpot_ms=slo_tpot_ms, e2el_ms=slo_e2el_ms)
    started = datetime.now(UTC)
    json_path = _out_path(out, f"bench-{started:%Y%m%d-%H%M%S}.json")
    if burst is not None:
        from tidegate_bench.burst.command import run_burst_command

        code = run_burst_command(
            burst, points[0], settings=settings, prompts=prompts, tenants=tenants,
            counter=counter, workload=workload_json, slo=slo, json_path=json_path, seed=seed,
            started=started, show_progress=progress, min_effect=min_effect,
            command=_command_line(), out=out_console, err=err,
        )  # fmt: skip
        if code:
            raise typer.Exit(code)
        return
    try:
        bound, results = run_async(
            _run_points(
                targets=targets,
                points=points,
                runner_args={"prompts": prompts, "tenants": tenants, "counter": counter},
                settings=settings,
                show_progress=progress,
            )
        )
    except (ValueError, OSError, TimeoutError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    document = build_document(
        command=_command_line(),
        workload=workload_json, results=results, targets=bound, slo=slo, json_path=json_path,
        seed=seed, min_effect=min_effect, started_at=started,
    )  # fmt: skip
    try:
        write_document(json_path, document)
    except OSError as exc:
        err.print(f"[red]error:[/red] could not write the results to {json_path}: {exc}")
        raise typer.Exit(1) from exc
    out_console.print(views.results_table(document))
    table = views.comparisons_table(document)
    if table is not None:
        out_console.print(table)
    out_console.print(views.client_line(document))
    out_console.print(f"results: {json_path}")


@bench_app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Baseline result JSON.")],
    b: Annotated[Path, typer.Argument(help="Result JSON to compare with it.")],
) -> None:
    """Print the differences between two results (runs and targets matched by name)."""
    with bench_extra("bench compare"):
        from tidegate_bench.results import read_document
    try:
        doc_a, doc_b = read_document(a), read_document(b)
    except (ValueError, OSError, orjson.JSONDecodeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    rows = views.diff_rows(doc_a, doc_b)
    if not rows:
        err.print("[yellow]no load point and target in common[/yellow]")
        raise typer.Exit(1)
    out_console.print(views.diff_table(doc_a, doc_b, names=(a.name, b.name)))


@bench_app.command("cold-start")
def cold_start(
    command: Annotated[
        str | None,
        typer.Option(help="Start this server instead of a local engine replica (needs --url)."),
    ] = None,
    url: Annotated[str | None, typer.Option(help="The --command server's base URL (/v1).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (--command mode).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY")] = None,
    config: Annotated[Path | None, typer.Option(help="tidegate config (engine mode).")] = None,
    warm: Annotated[int, typer.Option(help="Warm requests after the first.")] = 5,
    max_tokens: Annotated[int, typer.Option()] = 16,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for /health.")] = 900.0,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, s.")] = 300.0,
    out: Annotated[Path | None, typer.Option(help="Write the result as JSON here.")] = None,
) -> None:
    """Start a fresh server, time it to ready and its first request against warm ones."""
    from tidegate.config import load_config

    with bench_extra("bench cold-start"):
        from tidegate_bench import coldstart

    out = None if out is None else _out_path(out, "cold-start.json")

    async def go() -> coldstart.ColdStart:
        measure = functools.partial(
            coldstart.measure, key=api_key, warm=warm, max_tokens=max_tokens,
            ready_timeout_s=ready_timeout, request_timeout_s=timeout,
        )  # fmt: skip
        if command is not None:
            if url is None or model is None:
                raise typer.BadParameter("--command needs --url and --model")
            log = (out.parent if out else Path(tempfile.gettempdir())) / "cold-start-command.log"
            async with coldstart.user_command(command, log_path=log) as spawned:
                return await measure(spawned_at=spawned, base_url=url, model=model)
        async with coldstart.engine_replica(load_config(config)) as (spawned, base, name):
            return await measure(spawned_at=spawned, base_url=base, model=name)

    try:
        result = run_async(go())
    except (OSError, TimeoutError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    data = result.as_json()
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            err.print(f"[red]error:[/red] could not write the result to {out}: {exc}")
            raise typer.Exit(1) from exc
    table = Table(title="cold start", header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in data.items():
        if key != "tidegate_bench_cold_start":
            table.add_row(
                key,
                "-"
                if value is None
                else str(round(value, 3) if isinstance(value, float) else value),
            )
    out_console.print(table)


_CAPACITY_RATES = "500,1000,2000,3000,4000,6000"


@bench_app.command("client-capacity")
def client_capacity(
    stream: Annotated[
        bool, typer.Option(help="Streamed replies (chunks/s) or whole ones.")
    ] = False,
    rates: Annotated[
        str, typer.Option(help="Rates to try, ascending.")
    ] = "500,1000,2000,3000,4000,6000",
    tokens: Annotated[int, typer.Option(help="Tokens per reply (chunks per stream).")] = 64,
    duration: Annotated[float, typer.Option(help="Seconds per rate.")] = 5.0,
) -> None:
    """Highest rate this client sustains on one core against the instant fake upstream."""
    with bench_extra("bench client-capacity"):
        from tidegate_bench.capacity import run_capacity

    steps = run_capacity(
        rates=[float(r) for r in rates.split(",")],
        stream=stream,
        tokens=tokens if stream else 1,
        duration_s=duration,
    )
    table = Table(title=f"client capacity ({'streaming' if stream else 'non-streaming'})")
    for col in ("rate", "achieved req/s", "chunks/s", "failed", "sched lag p99 ms",
                "loop lag p99 ms", "CPU %", "sustained"):  # fmt: skip
        table.add_column(col, justify="right")
    for s in steps:
        table.add_row(
            f"{s.rate:g}", f"{s.achieved_rps:,.0f}", f"{s.chunks_per_s:,.0f}", str(s.failed),
            f"{s.schedule_lag_p99_ms:.2f}", f"{s.loop_lag_p99_ms:.2f}", f"{s.cpu_percent:.0f}",
            "yes" if s.sustained else "no",
        )  # fmt: skip
    out_console.print(table)
    best = max((s for s in steps if s.sustained), key=lambda s: s.rate, default=None)
    if best is None:
        out_console.print("no rate was sustained")
    else:
        out_console.print(
            f"sustained: {best.achieved_rps:,.0f} req/s, {best.chunks_per_s:,.0f} chunks/s"
        )


bench_app.command("report", help="Plots and an HTML report from a `bench run` result.")(
    bench_report
)
