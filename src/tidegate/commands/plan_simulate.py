"""``tidegate plan simulate``: replay a traffic trace against scaling policies, side by side.

The table goes to stdout (``--json``: the JSON document instead, with each policy's replica
timeline); ``--out`` writes the JSON document too. Errors go to stderr. Exit status: 0, or 1
with ``--check`` when a policy misses the SLA (a gate for CI); 2 on bad input.
Only Typer at import: the simulator (and pydantic under it) loads when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tidegate.plan.pool_model import PoolModel
    from tidegate.plan.simulate import QueueSettings


def _pool(
    *,
    bench: Path | None,
    bench_target: str | None,
    cold_start: Path | None,
    max_num_seqs: int,
    options: dict[str, float | None],
    host_speedup: str | None = None,
) -> PoolModel:
    from tidegate.plan.pool_model import (
        PoolModel,
        PoolModelError,
        cold_start_from_bench,
        from_bench,
        parse_host_speedup,
    )

    if bench is not None:
        model = from_bench(bench, max_concurrency=max_num_seqs, target=bench_target)
    elif options["first_token_s"] is None or options["tpot_s"] is None:
        raise PoolModelError(
            "no pool model: give --bench RUN.json (a `tidegate bench run` of one replica), or "
            "--first-token-s and --tpot-s"
        )
    else:
        model = PoolModel(
            max_concurrency=max_num_seqs,
            first_token_s=options["first_token_s"],
            tpot_s=options["tpot_s"],
        )
    if cold_start is not None and options["cold_start_s"] is None:
        options = {**options, "cold_start_s": cold_start_from_bench(cold_start)}
    speedup = None if host_speedup is None else parse_host_speedup(host_speedup)
    return model.with_options(max_concurrency=max_num_seqs, host_speedup=speedup, **options)


def _queue(
    config: Path | None, timeout_s: float | None, depth: int | None, ttft_s: float | None
) -> tuple[QueueSettings, int | None]:
    """The interactive class's queue (from --config, then the options) and the config's
    engines.profile.max_num_seqs (None: no config given)."""
    from dataclasses import replace

    from pydantic import ValidationError

    from tidegate.plan.simulate import QueueSettings
    from tidegate.plan.simulate_inputs import SimulationInputError

    settings, seqs = QueueSettings(), None
    if config is not None:
        from tidegate.config import load_config

        try:
            loaded = load_config(config)
        except (OSError, ValueError, ValidationError) as exc:
            raise SimulationInputError(f"--config {config}: {exc}") from exc
        settings = QueueSettings.from_config(loaded.scheduling.interactive)
        seqs = loaded.engines.profile.max_num_seqs
    if timeout_s is not None:
        settings = replace(settings, queue_timeout_s=timeout_s)
    if depth is not None:
        settings = replace(settings, max_queue_depth=depth)
    if ttft_s is not None:
        settings = replace(settings, ttft_target_s=ttft_s)
    return settings, seqs


def simulate_command(
    trace: Annotated[
        Path,
        typer.Option(help="Bench request CSV, or JSONL of {t, prompt_tokens, completion_tokens}."),
    ],
    policy: Annotated[
        list[str],
        typer.Option(
            help="Policy YAML (the autoscaling block), NAME=FILE.yaml, or fixed:N. Repeat to "
            "compare.",
        ),
    ],
    bench: Annotated[
        Path | None, typer.Option(help="A `tidegate bench run` JSON to fit the pool model to.")
    ] = None,
    bench_target: Annotated[
        str | None, typer.Option(help="The bench target to fit (when it has several).")
    ] = None,
    cold_start: Annotated[
        Path | None, typer.Option(help="A `tidegate bench cold-start` JSON (its ready_s).")
    ] = None,
    max_num_seqs: Annotated[
        int | None,
        typer.Option(min=1, help="Requests per replica at once [--config's, else 64]."),
    ] = None,
    first_token_s: Annotated[
        float | None, typer.Option(min=0, help="Seconds to the first token, alone on a replica.")
    ] = None,
    tpot_s: Annotated[
        float | None, typer.Option(min=0, help="Seconds per further output token, alone.")
    ] = None,
    prefill_tokens_per_s: Annotated[
        float | None, typer.Option(min=0, help="Prompt tokens per second (default: in TTFT).")
    ] = None,
    slowdown: Annotated[
        float | None,
        typer.Option(min=0, help="Per extra concurrent request, relative slowdown [0]."),
    ] = None,
    cold_start_s: Annotated[
        float | None, typer.Option(min=0, help="A new replica's start to ready [60].")
    ] = None,
    host_speedup: Annotated[
        str | None,
        typer.Option(
            help="Shared host: total throughput of 1, 2, ... replicas relative to one, e.g. "
            "1,1.41 [linear].",
        ),
    ] = None,
    loading_load: Annotated[
        float | None,
        typer.Option(
            min=0, max=1, help="A loading replica's share of the host (with --host-speedup) [1]."
        ),
    ] = None,
    cold_start_busy_s: Annotated[
        float | None,
        typer.Option(min=0, help="Start to ready while another replica serves [--cold-start-s]."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Take scheduling.interactive and max_num_seqs from it."),
    ] = None,
    queue_timeout_s: Annotated[
        float | None, typer.Option(min=0, help="Queue timeout (503) [30].")
    ] = None,
    max_queue_depth: Annotated[
        int | None, typer.Option(min=0, help="Most waiting requests (then 429) [256].")
    ] = None,
    ttft_target_s: Annotated[
        float | None, typer.Option(min=0, help="Interactive TTFT target (predicted_wait) [2].")
    ] = None,
    sla: Annotated[
        str, typer.Option(help="Targets: ttft_p50|p95|p99, queue_wait_p95, e2e_p95, error_rate.")
    ] = "ttft_p95=2s,error_rate=0.01",
    replica_hour_usd: Annotated[
        float | None, typer.Option(min=0, help="Price of one replica-hour, for the cost rows.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The JSON document on stdout.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the JSON document here too.")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when a policy misses the SLA.")
    ] = False,
) -> None:
    """Replay a traffic trace against a pool model and scaling policies, side by side."""
    from rich.console import Console
    from rich.markup import escape

    from tidegate.commands.listing import table_console
    from tidegate.plan.errors import PlanError
    from tidegate.plan.simulate import simulate
    from tidegate.plan.simulate_inputs import SimulationInputError, parse_policy, parse_sla
    from tidegate.plan.simulate_report import simulation_json, summarize, summary_table
    from tidegate.plan.traces import load_trace

    err = Console(stderr=True)
    try:
        if queue_timeout_s == 0 or ttft_target_s == 0 or prefill_tokens_per_s == 0:
            raise SimulationInputError(
                "--queue-timeout-s, --ttft-target-s and --prefill-tokens-per-s must be > 0"
            )
        targets = parse_sla(sla)
        specs = [parse_policy(p) for p in policy]
        if len({s.name for s in specs}) < len(specs):
            raise SimulationInputError("two --policy columns have the same name: use NAME=FILE")
        queue, config_seqs = _queue(config, queue_timeout_s, max_queue_depth, ttft_target_s)
        pool = _pool(
            bench=bench,
            bench_target=bench_target,
            cold_start=cold_start,
            max_num_seqs=max_num_seqs or config_seqs or 64,
            options={
                "first_token_s": first_token_s,
                "tpot_s": tpot_s,
                "prefill_tokens_per_s": prefill_tokens_per_s,
                "slowdown": slowdown,
                "cold_start_s": cold_start_s,
                "loading_load": loading_load,
                "cold_start_busy_s": cold_start_busy_s,
            },
            host_speedup=host_speedup,
        )
        requests = load_trace(trace)
    except PlanError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    results = [simulate(requests, pool, spec, queue=queue) for spec in specs]
    summaries = [summarize(r, sla=targets, replica_hour_usd=replica_hour_usd) for r in results]
    document = simulation_json(
        results, summaries, pool=pool, queue=queue, sla=targets, trace=str(trace)
    )
    if out is not None:
        out.write_text(json.dumps(document, indent=1), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(document, indent=1))
    else:
        console = table_console()
        console.print(
            f"{len(requests):,} requests over {requests[-1].t:.0f} s; a replica: "
            f"{pool.max_concurrency} at once, first token {pool.first_token_s:.3f} s, "
            f"{pool.tpot_s * 1000:.1f} ms/token, slowdown {pool.slowdown:.3f}, "
            f"cold start {pool.cold_start_s:.0f} s{_shared_host(pool)}",
            soft_wrap=True,
            highlight=False,
        )
        console.print(summary_table(summaries, sla=targets))
    if out is not None:
        err.print(f"wrote {out}")
    if check and any(s.sla_met is False for s in summaries):
        err.print("[red]a policy misses the SLA[/red]")
        raise typer.Exit(1)


def _shared_host(pool: PoolModel) -> str:
    if pool.host_speedup is None and pool.cold_start_busy_s is None:
        return ""
    speedup = (
        "linear" if pool.host_speedup is None else ",".join(f"{v:g}" for v in pool.host_speedup)
    )
    busy = pool.cold_start_for(busy=True)
    return (
        f"; shared host: speedup {speedup}, loading {pool.loading_load:g}, "
        f"busy cold start {busy:.0f} s"
    )
