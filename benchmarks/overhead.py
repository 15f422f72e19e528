"""What tidegate's hop costs: the same load straight at a fake upstream, through the smallest
Starlette + aiohttp pass-through proxy, and through tidegate, each in its own process on loopback.

    python -m benchmarks.overhead [--duration 8] [--warmup 2] [--quick] [--out PATH]

It reports and never asserts (exit status 0 whatever the figures), so it can run anywhere; the
pass/fail column says how tidegate compares with the project's overhead targets.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from benchmarks.protections import provision_tenant
from benchmarks.report import Row, Scenario, compare, make_row, render, to_json
from benchmarks.targets import (
    Processes,
    StartError,
    Target,
    TidegateLauncher,
    fake_upstream_launch,
    free_port,
    passthrough_launch,
    tidegate_launch,
)

MODEL = "bench-model"
STREAM_TOKENS = 64
NON_STREAM_TOKENS = 16
SCENARIOS = [
    Scenario("chat c=1", stream=False, concurrency=1),
    Scenario("chat c=16", stream=False, concurrency=16),
    Scenario(f"stream{STREAM_TOKENS} c=1", stream=True, concurrency=1),
]
# tidegate as `make run` starts it, then with every protection on (limits, budgets, validation
# with the model tokenizer, metering) using the in-process and the Redis limit store.
TIDEGATE_VARIANTS: dict[str, str | None] = {
    "tidegate": None,
    "tidegate-protected": "memory",
    "tidegate-redis": "redis",
}
TARGETS = ("direct", "passthrough", *TIDEGATE_VARIANTS)


@dataclass(frozen=True)
class Options:
    warmup_s: float = 2.0
    duration_s: float = 8.0
    targets: tuple[str, ...] = TARGETS
    out: Path = Path("bench-results/overhead.json")
    ready_timeout_s: float = 90.0


def _body(scenario: Scenario) -> bytes:
    messages = [{"role": "user", "content": "Say hello to the benchmark."}]
    if scenario.stream:
        return orjson.dumps(
            {"model": MODEL, "messages": messages, "max_tokens": STREAM_TOKENS, "stream": True}
        )
    return orjson.dumps({"model": MODEL, "messages": messages, "max_tokens": NON_STREAM_TOKENS})


def _load(target: Target, scenario: Scenario, options: Options) -> dict[str, Any]:
    """One load-generator process against one target; its JSON result."""
    command = [
        sys.executable,
        "-m",
        "tidegate_bench.loadgen",
        *("--url", f"{target.base_url}/chat/completions"),
        *("--body", _body(scenario).decode()),
        *("--concurrency", str(scenario.concurrency)),
        *("--warmup", str(options.warmup_s), "--duration", str(options.duration_s)),
        *(arg for name, value in target.headers for arg in ("--header", f"{name}: {value}")),
    ]
    done = subprocess.run(
        command, capture_output=True, timeout=options.warmup_s + options.duration_s + 30
    )
    if done.returncode != 0:
        raise LoadError(done.stderr.decode(errors="replace")[-2000:])
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


class LoadError(RuntimeError):
    """The load generator failed; the message is the end of its stderr."""


def run_benchmark(
    options: Options,
    *,
    console: Console | None = None,
    launch_tidegate: TidegateLauncher = tidegate_launch,
) -> dict[str, Any]:
    """Start the servers, run every scenario against every target, write and return the JSON."""
    # A wide table wraps into nonsense at the 80 columns Rich assumes without a terminal.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-") as tmp:
        workdir = Path(tmp)
        with Processes(workdir) as procs:
            targets = _start(procs, options, workdir, skipped, launch_tidegate)
            for scenario in SCENARIOS:
                for target in targets:
                    console.log(f"{target.name}: {scenario.name}")
                    try:
                        raw = _load(target, scenario, options)
                    except (LoadError, subprocess.TimeoutExpired) as exc:
                        failures.append(f"{target.name} / {scenario.name}: {exc}")
                        continue
                    rows.append(make_row(target.name, scenario, raw))
        compare(rows, SCENARIOS)
        render(rows, console)
        for name, why in skipped.items():
            console.print(f"[yellow]{name} skipped:[/] {why}")
        for failure in failures:
            console.print(f"[red]load generator failed:[/] {failure}")
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "options": {
            "warmup_s": options.warmup_s,
            "duration_s": options.duration_s,
            "targets": list(options.targets),
            "stream_tokens": STREAM_TOKENS,
            "non_stream_tokens": NON_STREAM_TOKENS,
        },
        "skipped": skipped,
        "failures": failures,
        "rows": to_json(rows),
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    console.print(f"wrote {options.out}")
    return report


def _start(
    procs: Processes,
    options: Options,
    workdir: Path,
    skipped: dict[str, str],
    launch_tidegate: TidegateLauncher,
) -> list[Target]:
    """Start the upstream and every requested proxy; a tidegate that fails to start is skipped
    (and said so) rather than failing the run, so the yardsticks are still measured."""
    timeout = options.ready_timeout_s
    port = free_port()
    # Non-streaming requests cap tokens with max_tokens, so one upstream serves every scenario.
    procs.start("upstream", fake_upstream_launch(port=port, model=MODEL, tokens=STREAM_TOKENS), 15)
    origin = f"http://127.0.0.1:{port}"
    targets = [Target("direct", f"{origin}/v1")] if "direct" in options.targets else []
    if "passthrough" in options.targets:
        proxy_port = free_port()
        procs.start("passthrough", passthrough_launch(port=proxy_port, upstream_origin=origin), 15)
        targets.append(Target("passthrough", f"http://127.0.0.1:{proxy_port}/v1"))
    for name, limits_backend in TIDEGATE_VARIANTS.items():
        if name not in options.targets:
            continue
        gate_port = free_port()
        home = workdir / f"{name}-home"
        home.mkdir()
        launch = launch_tidegate(
            upstream_base_url=f"{origin}/v1",
            model=MODEL,
            port=gate_port,
            home=home,
            limits_backend=limits_backend,
        )
        gate = f"http://127.0.0.1:{gate_port}"
        try:
            procs.start(name, launch, timeout)
            headers = launch.headers
            if limits_backend is not None:
                key = provision_tenant(gate, launch.env["TIDEGATE_ADMIN_KEY"])
                headers = (("Authorization", f"Bearer {key}"),)
        except (StartError, OSError) as exc:
            log = workdir / f"{name}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            skipped[name] = f"{exc}\n{tail}".strip()
        else:
            targets.append(Target(name, f"{gate}/v1", headers))
    return targets


def _parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description="Measure the overhead of tidegate's hop.")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 0.1 s + 0.3 s runs")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=Options.out)
    parser.add_argument("--ready-timeout", type=float, default=Options.ready_timeout_s)
    args = parser.parse_args(argv)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}; choose from {TARGETS}")
    warmup, duration = (0.1, 0.3) if args.quick else (args.warmup, args.duration)
    return Options(warmup, duration, targets, args.out, args.ready_timeout)


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parse_args(argv))


if __name__ == "__main__":
    main()
