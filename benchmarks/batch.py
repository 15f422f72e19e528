"""The Batch API benchmark (``make bench-batch``).

    python -m benchmarks.batch [--lines 10000] [--crashes 3] [--seed N]
                                   [--engine-lines 200] [--skip-engine] [--out PATH]

1. Fake upstream (``batch_crash``): a 10,000-line batch through a ``tidegate up`` process:
   lines/s; then the same batch while the gateway is killed with ``kill -9`` at three random
   moments and restarted on the same store: every custom_id exactly once across the output and
   error files, and request counts that add up.
2. Real engine (``batch_engine``): a 200-line batch on one local vLLM replica while an
   interactive tenant chats: interactive TTFT p95 against its idle value (target: within 1.5x),
   and batch lines/s and tokens/s. Needs ``make engine``; about 3 minutes.

It prints a table and writes JSON; it reports and never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.batch_crash import CrashOptions, run_crash_benchmark
from benchmarks.batch_engine import EngineOptions, run_engine_benchmark
from tidegate.commands.batch_client import BatchApiError


async def run_benchmark(
    crash: CrashOptions | None, engine: EngineOptions | None, console: Console
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "benchmark": "batch",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    if crash is not None:
        summary["fake_upstream"] = await run_crash_benchmark(crash, console)
    if engine is not None:
        try:
            summary["engine"] = await run_engine_benchmark(engine, console)
        except (RuntimeError, OSError, TimeoutError, BatchApiError) as exc:
            # Keep the fake-upstream figures (minutes of work) when the engine half fails.
            console.log(f"engine half failed: {exc!r}")
            summary["engine_error"] = repr(exc)
    return summary


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def render(summary: dict[str, Any], console: Console) -> None:
    fake = summary.get("fake_upstream")
    if fake is not None:
        table = Table(title="Batch through tidegate, fake upstream (instant answers)")
        for column in ("run", "status", "lines", "seconds", "lines/s", "crashes"):
            table.add_column(column, justify="left" if column in ("run", "status") else "right")
        for column in ("output", "errors", "missing", "duplicated", "counts add up"):
            table.add_column(column, justify="right")
        for run in fake["runs"]:
            check = run["verification"]
            table.add_row(
                run["name"],
                run["status"],
                f"{run['lines']:,}",
                f"{run['seconds']:.1f}",
                f"{run['lines_per_s']:,.0f}",
                str(len(run["crashes"])),
                f"{check['output_lines']:,}",
                f"{check['error_lines']:,}",
                str(check["missing"]),
                str(check["duplicated"]),
                "yes" if check["counts_add_up"] else "NO",
            )
        console.print(table)
        for run in fake["runs"]:
            for crash in run["crashes"]:
                console.print(
                    f"  kill -9 at {crash['at_progress']:.0%} ({crash['lines_done']:,} lines "
                    f"done), back up in {crash['restart_s']:.1f} s",
                    markup=False,
                )
        console.print(f"  crash moments seed: {fake['seed']}", markup=False)
    engine = summary.get("engine")
    if engine is not None:
        _render_engine(engine, console)
    if "engine_error" in summary:
        console.print(f"engine half failed: {summary['engine_error']}", markup=False)


def _render_engine(engine: dict[str, Any], console: Console) -> None:
    table = Table(title="Batch on one vLLM CPU replica with an interactive tenant")
    for column in ("phase", "interactive ok/sent", "TTFT p50", "TTFT p95", "TTFT max", "errors"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for label, stats in (
        ("idle (interactive only)", engine["idle"]),
        ("during the batch", engine["during_batch"]),
    ):
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(stats["errors"].items())) or "0"
        table.add_row(
            label,
            f"{stats['ok']}/{stats['sent']}",
            _s(stats["p50_s"]),
            _s(stats["p95_s"]),
            _s(stats["max_s"]),
            errors,
        )
    console.print(table)
    batch = engine["batch"]
    counts = batch["request_counts"]
    console.print(
        f"batch {batch['status']}: {counts['completed']}/{counts['total']} lines "
        f"({counts['failed']} failed) in {batch['in_progress_s']:.1f} s in progress: "
        f"{batch['lines_per_s']:.2f} lines/s, {batch['tokens_per_s']:.1f} completion tokens/s",
        markup=False,
    )
    for name, check in engine["checks"].items():
        verdict = "pass" if check["pass"] else "FAIL"
        console.print(f"{name}: {check['ratio']:.2f} ({check['target']}) {verdict}", markup=False)


def _parse_args(argv: list[str] | None) -> tuple[CrashOptions | None, EngineOptions | None, Path]:
    crash, engine = CrashOptions(), EngineOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=crash.lines)
    parser.add_argument("--crashes", type=int, default=crash.crashes)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--engine-lines", type=int, default=engine.lines)
    parser.add_argument("--engine-max-tokens", type=int, default=engine.batch_max_tokens)
    parser.add_argument("--idle", type=float, default=engine.idle_s)
    parser.add_argument(
        "--interactive-interval",
        type=float,
        default=engine.interactive_interval_s,
        help="seconds between interactive requests; 0 (default): calibrated on the replica",
    )
    parser.add_argument(
        "--engine-cpus", default=engine.engine_cpus, help="dedicated engine cores, e.g. 0"
    )
    parser.add_argument(
        "--engine-batch-concurrency",
        type=int,
        default=engine.batch_concurrency,
        help="batch.concurrency_per_batch of the real-engine half (lines in flight at once)",
    )
    parser.add_argument("--skip-fake", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench-results/batch.json"))
    args = parser.parse_args(argv)
    return (
        None
        if args.skip_fake
        else CrashOptions(lines=args.lines, crashes=args.crashes, seed=args.seed),
        None
        if args.skip_engine
        else EngineOptions(
            lines=args.engine_lines,
            batch_max_tokens=args.engine_max_tokens,
            idle_s=args.idle,
            interactive_interval_s=args.interactive_interval,
            engine_cpus=args.engine_cpus,
            batch_concurrency=args.engine_batch_concurrency,
        ),
        args.out,
    )


def main(argv: list[str] | None = None) -> None:
    crash, engine, out = _parse_args(argv)
    console = Console(width=150)
    summary = asyncio.run(run_benchmark(crash, engine, console))
    render(summary, console)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
