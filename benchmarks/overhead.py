"""What tidegate's hop costs: the same load straight at a fake upstream, through the smallest
Starlette + aiohttp pass-through proxy, and through tidegate, each in its own process on loopback.

    python -m benchmarks.overhead [--duration 8] [--warmup 2] [--c1-requests 20000] [--quick]
        [--out PATH]

Three parts: latency and throughput per scenario (chat c=1 runs until ``--c1-requests`` requests
are measured, so its p99 sees rare stalls); what each tidegate process says about its own event
loop afterwards (the worst stall and the worst full garbage collection, from its /metrics); and
streams sustained, the most concurrent paced streams (64 chunks, 20 ms apart) carried with no
frame lost and no stream paused past 200 ms, direct, through the pass-through and through
tidegate, against an upstream of their own. The content-safety gates (``overhead_gates``): tidegate
with a deny-list, the PII detectors or a classifier on a fake guard pool, and the latency each
adds over tidegate without it.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from benchmarks.gateway_stalls import LoopReport, read_loop_report
from benchmarks.overhead_gates import (
    GATE_VARIANTS,
    check_enforced,
    gate_costs,
    gated_launch,
    guard_launch,
    render_gates,
)
from benchmarks.protections import provision_tenant
from benchmarks.report import Row, Scenario, compare, make_row, render, to_json
from benchmarks.stream_capacity import Capacity, capacity_json, streams_sustained
from benchmarks.stream_report import render_capacity, render_loops
from benchmarks.targets import (
    Launch,
    Processes,
    StartError,
    Target,
    TidegateLauncher,
    fake_upstream_launch,
    free_port,
    passthrough_launch,
    tidegate_launch,
    with_config_file,
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
TARGETS = ("direct", "passthrough", *TIDEGATE_VARIANTS, *GATE_VARIANTS)
# Streams sustained: who is measured (tidegate as `make run` starts it) and how streams are paced.
CAPACITY_TARGETS = ("direct", "passthrough", "tidegate")
PACED_CHUNKS = 64
PACE_S = 0.02


@dataclass(frozen=True)
class Options:
    warmup_s: float = 2.0
    duration_s: float = 8.0
    targets: tuple[str, ...] = TARGETS
    out: Path = Path("bench-results/overhead.json")
    ready_timeout_s: float = 90.0
    c1_requests: int = 20_000
    """chat c=1 runs until this many requests are measured (0: for ``duration_s``)."""
    c1_max_s: float = 150.0
    """... but for no longer than this."""
    capacity_start: int = 16
    capacity_ceiling: int = 4096


def _body(scenario: Scenario) -> bytes:
    messages = [{"role": "user", "content": "Say hello to the benchmark."}]
    if scenario.stream:
        return orjson.dumps(
            {"model": MODEL, "messages": messages, "max_tokens": STREAM_TOKENS, "stream": True}
        )
    return orjson.dumps({"model": MODEL, "messages": messages, "max_tokens": NON_STREAM_TOKENS})


def _load(target: Target, scenario: Scenario, options: Options) -> dict[str, Any]:
    """One load-generator process against one target; its JSON result."""
    duration = options.duration_s
    until: tuple[str, ...] = ()
    if scenario.concurrency == 1 and not scenario.stream and options.c1_requests:
        duration, until = options.c1_max_s, ("--requests", str(options.c1_requests))
    command = [
        sys.executable,
        "-m",
        "tidegate_bench.loadgen",
        *("--url", f"{target.base_url}/chat/completions"),
        *("--body", _body(scenario).decode()),
        *("--concurrency", str(scenario.concurrency)),
        *("--warmup", str(options.warmup_s), "--duration", str(duration), *until),
        *(arg for name, value in target.headers for arg in ("--header", f"{name}: {value}")),
    ]
    # The result goes through a file: from a pipe, results over 128 KiB (20,000 latencies) came
    # back cut short now and then.
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.PIPE, timeout=options.warmup_s + duration + 30
        )
        if done.returncode != 0:
            raise LoadError(done.stderr.decode(errors="replace")[-2000:])
        out.seek(0)
        result: dict[str, Any] = orjson.loads(out.read())
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
    loops: list[LoopReport] = []
    capacities: list[Capacity] = []
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
            loops = _loop_reports(targets, failures)
        with Processes(workdir) as procs:
            capacities = _capacities(procs, options, workdir, launch_tidegate, console, failures)
        compare(rows, SCENARIOS)
        render(rows, console)
        render_loops(loops, console)
        render_capacity(capacities, console)
        gates = gate_costs(rows)
        render_gates(gates, console)
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
            "c1_requests": options.c1_requests,
            "paced_chunks": PACED_CHUNKS,
            "pace_ms": PACE_S * 1000,
        },
        "skipped": skipped,
        "failures": failures,
        "rows": to_json(rows),
        "event_loop": [asdict(loop) | {"gc_ok": loop.gc_ok} for loop in loops],
        "streams_sustained": capacity_json(capacities),
        "safety_gates": gates,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    console.print(f"wrote {options.out}")
    return report


def _loop_reports(targets: list[Target], failures: list[str]) -> list[LoopReport]:
    """After the load: what each tidegate says about its event loop (scraped with its admin key,
    ``Target.metrics_headers``)."""
    reports = []
    for target in targets:
        if not target.name.startswith("tidegate"):
            continue
        origin = target.base_url.removesuffix("/v1")
        try:
            reports.append(read_loop_report(target.name, origin, target.metrics_headers))
        except OSError as exc:
            failures.append(f"{target.name} /metrics: {exc}")
    return reports


def _capacities(
    procs: Processes,
    options: Options,
    workdir: Path,
    launch_tidegate: TidegateLauncher,
    console: Console,
    failures: list[str],
) -> list[Capacity]:
    """Streams sustained against a paced upstream of their own (so the search cannot disturb the
    latency figures, and a stalled gateway's metrics above are not from it)."""
    wanted = [name for name in CAPACITY_TARGETS if name in options.targets]
    if not wanted:
        return []
    port = free_port()
    upstream = fake_upstream_launch(port=port, model=MODEL, tokens=PACED_CHUNKS)
    paced = replace(upstream, command=[*upstream.command, "--token-delay-s", str(PACE_S)])
    procs.start("paced-upstream", paced, 15)
    origin = f"http://127.0.0.1:{port}"
    targets = {"direct": Target("direct", f"{origin}/v1")}
    if "passthrough" in wanted:
        proxy_port = free_port()
        launch = passthrough_launch(port=proxy_port, upstream_origin=origin)
        procs.start("paced-passthrough", launch, 15)
        targets["passthrough"] = Target("passthrough", f"http://127.0.0.1:{proxy_port}/v1")
    if "tidegate" in wanted:
        gate_port = free_port()
        home = workdir / "paced-tidegate-home"
        home.mkdir()
        launch = _uncapped(
            launch_tidegate(
                upstream_base_url=f"{origin}/v1", model=MODEL, port=gate_port, home=home
            ),
            home / "tidegate.yaml",
            upstream_base_url=f"{origin}/v1",
        )
        try:
            procs.start("paced-tidegate", launch, options.ready_timeout_s)
        except (StartError, OSError) as exc:
            failures.append(f"streams sustained, tidegate: {exc}")
        else:
            base = f"http://127.0.0.1:{gate_port}/v1"
            targets["tidegate"] = Target("tidegate", base, launch.headers)
    body = orjson.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Stream to the benchmark."}],
            "max_tokens": PACED_CHUNKS,
            "stream": True,
        }
    )
    capacities = []
    for name in wanted:
        if name not in targets:
            continue
        console.log(f"{name}: streams sustained")
        capacities.append(
            streams_sustained(
                targets[name],
                body,
                start=options.capacity_start,
                ceiling=options.capacity_ceiling,
            )
        )
    return capacities


def _uncapped(launch: Launch, config_path: Path, *, upstream_base_url: str) -> Launch:
    """The same gateway with its upstream's ``max_concurrency`` (64 by default; beyond it the
    scheduler queues, then refuses with 429) above any stream count searched, so the search
    measures the relay, not the admission policy."""
    upstream = {"url": upstream_base_url, "model": MODEL, "max_concurrency": 1_000_000}
    return with_config_file(launch, config_path, {"upstreams": [upstream]})


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
            targets.append(Target(name, f"{gate}/v1", headers, launch.headers))
    targets += _start_gated(procs, options, workdir, skipped, launch_tidegate, origin)
    return targets


def _start_gated(
    procs: Processes,
    options: Options,
    workdir: Path,
    skipped: dict[str, str],
    launch_tidegate: TidegateLauncher,
    origin: str,
) -> list[Target]:
    """tidegate with one content-safety gate each (and the fake guard pool the classifier asks)."""
    wanted = [name for name in GATE_VARIANTS if name in options.targets]
    guard_base_url = None
    if "tidegate-guard" in wanted:
        guard_port = free_port()
        procs.start("guard", guard_launch(guard_port), 15)
        guard_base_url = f"http://127.0.0.1:{guard_port}/v1"
    targets = []
    for name in wanted:
        gate_port = free_port()
        home = workdir / f"{name}-home"
        home.mkdir()
        launch = gated_launch(
            launch_tidegate(
                upstream_base_url=f"{origin}/v1", model=MODEL, port=gate_port, home=home
            ),
            home / "tidegate.yaml",
            variant=name,
            model=MODEL,
            upstream_base_url=f"{origin}/v1",
            guard_base_url=guard_base_url if name == "tidegate-guard" else None,
        )
        base = f"http://127.0.0.1:{gate_port}/v1"
        try:
            procs.start(name, launch, options.ready_timeout_s)
            not_enforced = check_enforced(name, base, MODEL, launch.headers)
        except (StartError, OSError) as exc:
            skipped[name] = str(exc)
            continue
        if not_enforced is not None:
            skipped[name] = not_enforced
            continue
        targets.append(Target(name, base, launch.headers, launch.headers))
    return targets


def _parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description="Measure the overhead of tidegate's hop.")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    parser.add_argument(
        "--c1-requests",
        type=int,
        default=Options.c1_requests,
        help="chat c=1 runs until this many requests are measured (0: --duration)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 0.2 s + 0.6 s runs, streams sustained searched up to 4",
    )
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=Options.out)
    parser.add_argument("--ready-timeout", type=float, default=Options.ready_timeout_s)
    args = parser.parse_args(argv)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}; choose from {TARGETS}")
    if args.quick:
        return Options(0.2, 0.6, targets, args.out, args.ready_timeout, 0, 0.6, 2, 4)
    return Options(
        args.warmup, args.duration, targets, args.out, args.ready_timeout, args.c1_requests
    )


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parse_args(argv))


if __name__ == "__main__":
    main()
