"""``tidegate bench run --scenario burst``: its options checked before the run, then the run,
the JSON and CSVs, and the tables.

Exit codes: 0 done (SLA met or none given), 1 the run failed, 3 the run completed and missed
the SLA.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tidegate_bench.aio import run_async
from tidegate_bench.burst import view
from tidegate_bench.burst.gateway_metrics import REPLICA_STATES
from tidegate_bench.burst.run import GatewayWatch, run_burst
from tidegate_bench.burst.scraper import default_metrics_url
from tidegate_bench.burst.sla import Sla, parse_sla
from tidegate_bench.console import client_line
from tidegate_bench.phases import BURST_SHAPES, BurstPlan
from tidegate_bench.records import RequestRecord
from tidegate_bench.results import build_document, slug, write_document
from tidegate_bench.runner import LoadPoint, RunSettings
from tidegate_bench.spec import Slo, Target, Tenant
from tidegate_bench.tokenizer import TokenCounter
from tidegate_bench.workloads import Prompt

SLA_MISSED_EXIT = 3


@dataclass(frozen=True, kw_only=True)
class BurstArgs:
    target: Target
    plan: BurstPlan
    sla: Sla | None
    watch: GatewayWatch


def burst_args(
    *,
    targets: list[Target],
    concurrency: str | None,
    rate: str | None,
    shape: str,
    num_requests: int | None,
    duration: float | None,
    warmup: float,
    cooldown: float,
    baseline_s: float,
    burst_factor: float,
    burst_s: float,
    cooldown_s: float,
    sla: str | None,
    metrics_url: str | None,
    metrics_key: str | None,
    scrape_interval: float,
    pools: list[str],
) -> BurstArgs:
    """Every burst option checked; raises ValueError with a message naming the option."""
    if len(targets) != 1:
        raise ValueError("--scenario burst takes one --target (the gateway whose replicas scale)")
    if not concurrency and not rate:
        raise ValueError("--scenario burst needs the baseline load: --rate R or --concurrency C")
    for name, value in (("--rate", rate), ("--concurrency", concurrency)):
        if value and "," in value:
            raise ValueError(f"--scenario burst takes one {name} value (the baseline), not a sweep")
    if rate and shape not in BURST_SHAPES:
        raise ValueError(f"--scenario burst takes --shape {', '.join(BURST_SHAPES)}, got {shape!r}")
    if num_requests is not None or duration is not None:
        raise ValueError(
            "--scenario burst lasts --baseline-s + --burst-s + --cooldown-s: drop -n/--duration"
        )
    if warmup or cooldown:
        raise ValueError(
            "--scenario burst measures every phase: drop --warmup/--cooldown (the cool-down "
            "phase is --cooldown-s)"
        )
    plan = BurstPlan(
        baseline_s=baseline_s, burst_s=burst_s, cooldown_s=cooldown_s, factor=burst_factor
    )
    target = targets[0]
    url = default_metrics_url(target.url) if metrics_url is None else metrics_url
    if scrape_interval <= 0:
        raise ValueError(f"--scrape-interval must be > 0 seconds, got {scrape_interval}")
    watch = GatewayWatch(
        url=None if url == "off" else url,
        token=metrics_key or target.key,
        interval_s=scrape_interval,
        pools=tuple(pools),
    )
    if watch.url is not None and not watch.url.startswith(("http://", "https://")):
        raise ValueError(f"--metrics-url must be an http(s) URL or off, got {watch.url!r}")
    return BurstArgs(
        target=target, plan=plan, sla=None if sla is None else parse_sla(sla), watch=watch
    )


def write_replicas_csv(path: Path, replicas: dict[str, list[dict[str, float | None]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("pool", "t_s", "desired", *REPLICA_STATES))
        for pool, rows in replicas.items():
            for row in rows:
                values = [row["t_s"], row["desired"], *(row[s] for s in REPLICA_STATES)]
                writer.writerow([pool, *("" if v is None else f"{v:g}" for v in values)])


def run_burst_command(
    args: BurstArgs,
    point: LoadPoint,
    *,
    settings: RunSettings,
    prompts: list[Prompt],
    tenants: list[Tenant],
    counter: TokenCounter,
    workload: dict[str, Any],
    slo: Slo,
    json_path: Path,
    seed: int,
    started: datetime,
    show_progress: bool,
    min_effect: float,
    command: str,
    out: Console,
    err: Console,
) -> int:
    plan = args.plan
    load = f"rate={point.process.rate:g}" if point.process else f"c={point.concurrency}"
    point = replace(point, label=f"burst {load} x{plan.factor:g}", phases=plan.phases())
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(), console=err, transient=True, disable=not show_progress,
    )  # fmt: skip
    errors = 0

    def tick(record: RequestRecord) -> None:
        nonlocal errors
        errors += 0 if record.ok else 1
        progress.update(task, completed=min(plan.total_s, record.end_s), errors=errors)

    with progress:
        task = progress.add_task(point.label, total=plan.total_s, errors=0)
        try:
            outcome = run_async(
                run_burst(
                    target=args.target, point=point, plan=plan, settings=settings,
                    prompts=prompts, tenants=tenants, counter=counter, watch=args.watch,
                    sla=args.sla, on_record=tick,
                    warn=lambda text: err.print(f"[yellow]warning:[/yellow] {text}"),
                )
            )  # fmt: skip
        except (ValueError, OSError, TimeoutError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            return 1
    document = build_document(
        command=command, workload=workload, results=[outcome.result],
        targets=[(args.target, outcome.model)], slo=slo, json_path=json_path, seed=seed,
        min_effect=min_effect, started_at=started,
    )  # fmt: skip
    block = outcome.block
    csv_path = (
        json_path.parent / f"{json_path.stem}_requests" / f"{slug(point.label)}__replicas.csv"
    )
    try:
        write_replicas_csv(csv_path, block["replicas"])
        block["replicas_csv"] = str(csv_path.relative_to(json_path.parent))
        document["scenario"] = "burst"
        document["runs"][0]["burst"] = block
        write_document(json_path, document)
    except OSError as exc:
        err.print(f"[red]error:[/red] could not write the results to {json_path}: {exc}")
        return 1
    out.print(view.phases_table(block))
    for table in (view.scale_up_table(block), view.sla_table(block)):
        if table is not None:
            out.print(table)
    line = view.gateway_line(block)
    if line:
        out.print(line)
    out.print(client_line(document))
    out.print(f"results: {json_path}")
    sla = block["sla"]
    return SLA_MISSED_EXIT if sla is not None and sla["verdict"] == "fail" else 0
