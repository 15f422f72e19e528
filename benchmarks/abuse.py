"""What abusive inputs cost a gateway (``make bench-abuse``): how fast each is refused, how long
``/healthz`` takes meanwhile, the gateway's memory, and whether budgets hold in a race.

    python -m benchmarks.abuse [--count 200] [--large-count 10] [--class-seconds 10]
                                   [--min-class-seconds 2]
                                   [--batch-count 3] [--batch-lines 50000] [--race-requests 200]
                                   [--skip-race] [--out bench-results/abuse.json]

1. One ``tidegate up`` process (SQLite, in-process limits) in front of the fake upstream. Every
   abusive input class (``abuse_inputs``) is sent ``--count`` times one after another (the 300 MB
   ones ``--large-count`` times) and for at least ``--min-class-seconds``, each class for at most
   ``--class-seconds``: its answers and their latency p50/p99/max. A poller process GETs
   ``/healthz`` every 10 ms throughout; each class gets the polls made while it ran. The
   gateway's RSS is read from /proc before and after each class. Then batches from a
   50,000-line file (``abuse_batches``).
2. The budget race (``budget_race``): three gateways sharing PostgreSQL and Redis, 200 concurrent
   requests of one tenant per variant: tokens admitted (from the usage store) against the budget.

Targets: every input refused in < 100 ms, ``/healthz`` never above 50 ms, zero overspend. It
reports and never asserts (exit status 0 whatever the figures), like the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from benchmarks.abuse_batches import BatchRun, Gateway, batch_run_json, run_batch
from benchmarks.abuse_inputs import Case, batch_file, request_cases
from benchmarks.abuse_report import HEALTHZ_TARGET_MS, REFUSAL_TARGET_MS, render
from benchmarks.batch_procs import gateway_launch
from benchmarks.budget_race import RaceOptions, create_tenant, run_race
from benchmarks.raw_http import Reply, send
from benchmarks.targets import (
    Launch,
    Processes,
    StartError,
    fake_upstream_launch,
    free_port,
)
from tidegate.config import ServerConfig
from tidegate_bench.healthz_poller import Poll, parse_polls
from tidegate_bench.results import report_header, run_standalone
from tidegate_bench.stats import percentile

MODEL = "abuse-model"
SETTLE_S = 0.3
"""After a class's last answer, polls still count for it (work the gateway finishes late)."""


@dataclass(frozen=True)
class Options:
    count: int = 200
    large_count: int = 10
    class_seconds: float = 10.0
    min_class_seconds: float = 2.0
    """Fast classes keep sending this long past ``count``, so /healthz gets enough polls."""
    batch_count: int = 3
    batch_lines: int = 50_000
    messages: int = 100_000
    prompts: int = 100_000
    upload_mb: int = 300
    poll_interval_s: float = 0.01
    request_timeout_s: float = 60.0
    race: bool = True
    race_requests: int = 200
    postgres_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    redis_url: str = "redis://127.0.0.1:6379/0"
    ready_timeout_s: float = 90.0
    out: Path = Path("bench-results/abuse.json")


@dataclass(frozen=True)
class Window:
    start: float
    end: float


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, in MB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = int(value.split()[0]) / 1024
    return {"rss_mb": round(figures["VmRSS"], 1), "peak_rss_mb": round(figures["VmHWM"], 1)}


def _ms(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
    }


def healthz_figures(polls: Sequence[Poll], *windows: Window) -> dict[str, Any]:
    inside = [p for p in polls if any(w.start <= p.start <= w.end for w in windows)]
    failed = sum(1 for p in inside if p.status != 200)
    return {"polls": len(inside), "failed": failed, **_ms([p.latency_ms for p in inside])}


def _error_code(reply: Reply) -> str:
    try:
        error = orjson.loads(reply.body)["error"]
        return str(error.get("code") or error.get("type"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "(not an OpenAI error body)" if reply.status else reply.error


def replies_figures(replies: Sequence[Reply]) -> dict[str, Any]:
    statuses = Counter(r.status for r in replies)
    codes = Counter(f"{r.status} {_error_code(r)}" for r in replies if r.status != 200)
    return {
        "sent": len(replies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "answers": dict(codes),
        "refused": all(400 <= r.status < 500 for r in replies),
        "latency_ms": _ms([r.elapsed_ms for r in replies]),
        "body_sent_mb_max": round(max(r.sent_bytes for r in replies) / 1e6, 2),
        "first_answer": replies[0].body[:300].decode(errors="replace"),
    }


class Poller:
    """The /healthz poller process; its polls are read once it has stopped."""

    def __init__(self, url: str, interval_s: float, workdir: Path) -> None:
        self._path = workdir / "healthz-polls.txt"
        self._out = self._path.open("wb")
        command = [sys.executable, "-m", "tidegate_bench.healthz_poller", "--url", url]
        command += ["--interval", str(interval_s)]
        self._proc = subprocess.Popen(command, stdout=self._out, stdin=subprocess.DEVNULL)

    def stop(self) -> list[Poll]:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._out.close()
        return parse_polls(self._path.read_text())


class AbuseRun:
    """The single-gateway half: every class in turn, with its window and memory."""

    def __init__(self, gateway: Gateway, pid: int, options: Options, log: Callable[[str], None]):
        self.gateway = gateway
        self.pid = pid
        self.options = options
        self.log = log
        self.classes: list[dict[str, Any]] = []
        self.windows: list[Window] = []
        self.batch_runs: list[BatchRun] = []

    async def request_class(self, case: Case) -> None:
        options = self.options
        count = options.large_count if case.large else options.count
        self.log(f"{case.name}: up to {count} requests, {case.body.length / 1e6:,.1f} MB each")
        headers = [self.gateway.auth, ("Content-Type", case.content_type)]
        started = time.monotonic()
        deadline = started + options.class_seconds
        replies: list[Reply] = []
        accepted: Reply | None = None
        enough = started + options.min_class_seconds
        while not replies or (
            (len(replies) < count or time.monotonic() < enough) and time.monotonic() < deadline
        ):
            reply = await send(
                self.gateway.port,
                case.method,
                case.path,
                headers=headers,
                chunks=case.body.chunks(),
                length=None if case.chunked else case.body.length,
                timeout_s=options.request_timeout_s,
            )
            replies.append(reply)
            if case.batch_file and accepted is None and reply.status == 200:
                accepted = reply  # kept for the batch below
            elif case.path == "/v1/files":
                await self.gateway.forget(reply)  # an accepted upload is deleted again
        entry = {
            "name": case.name,
            "description": case.description,
            "body_mb": round(case.body.length / 1e6, 2),
            **replies_figures(replies),
        }
        if case.note:
            entry["note"] = case.note
        if accepted is not None:
            file_id = orjson.loads(accepted.body)["id"]
            run = await run_batch(self.gateway, file_id, cancel=True)
            entry["batch_from_it"] = batch_run_json(run)
            # Refused one step later: the batch fails validation naming the line and field.
            entry["refused_at_validation"] = run.status_after_validation == "failed"
            await self.gateway.forget(accepted)
        await self._close(entry, started)

    async def batch_class(self) -> None:
        options = self.options
        self.log(
            f"batch-50k-lines: a {options.batch_lines:,}-line file, {options.batch_count} batches"
        )
        started = time.monotonic()
        content = batch_file(options.batch_lines, MODEL)
        upload = await self.gateway.upload(content)
        runs: list[BatchRun] = []
        if upload.status == 200:
            file_id = orjson.loads(upload.body)["id"]
            deadline = started + 6 * options.class_seconds
            while len(runs) < options.batch_count and (not runs or time.monotonic() < deadline):
                runs.append(await run_batch(self.gateway, file_id, cancel=True))
        creates = [r.create_ms for r in runs]
        validations = [r.validation_s for r in runs if r.validation_s is not None]
        entry = {
            "name": "batch-50k-lines",
            "description": f"POST /v1/batches from a {options.batch_lines:,}-line file",
            "body_mb": round(len(content) / 1e6, 2),
            "upload": {"status": upload.status, "ms": round(upload.elapsed_ms, 3)},
            "sent": len(runs),
            "statuses": dict(Counter(str(r.create_status) for r in runs)),
            "answers": {},
            "refused": False,  # accepted by design: the file is within batch.max_file_lines
            "latency_ms": _ms(creates),
            "validation_s_max": round(max(validations), 3) if validations else None,
            "runs": [batch_run_json(r) for r in runs],
        }
        self.batch_runs = runs
        await self._close(entry, started)

    async def _close(self, entry: dict[str, Any], started: float) -> None:
        await asyncio.sleep(SETTLE_S)
        self.windows.append(Window(started, time.monotonic()))
        entry["memory_after"] = memory_mb(self.pid)
        self.classes.append(entry)


async def _abuse_half(
    options: Options, procs: Processes, workdir: Path, upstream: str, log: Callable[[str], None]
) -> dict[str, Any]:
    port = free_port()
    home = workdir / "abuse-gw"
    home.mkdir()
    config = {
        "server": {"access_log": False, "log_level": "warning"},
        "upstreams": [{"url": upstream, "model": MODEL}],
        "batch": {"poll_interval_s": 0.2},
    }
    launch, admin_key = gateway_launch(home=home, port=port, config=config)
    proc = await asyncio.to_thread(procs.start, "abuse-gateway", launch, options.ready_timeout_s)
    _, key = await create_tenant(Gateway(port, admin_key), "abuser", {})
    gateway = Gateway(port, key)
    poller = Poller(f"http://127.0.0.1:{port}/healthz", options.poll_interval_s, workdir)
    run = AbuseRun(gateway, proc.pid, options, log)
    try:
        idle_start = time.monotonic()
        await asyncio.sleep(2.0)  # the idle baseline of /healthz
        idle = Window(idle_start, time.monotonic())
        before = memory_mb(proc.pid)
        cases = request_cases(
            model=MODEL,
            max_body_bytes=ServerConfig().max_body_bytes,
            messages=options.messages,
            prompts=options.prompts,
            upload_mb=options.upload_mb,
        )
        for case in cases:
            await run.request_class(case)
        await run.batch_class()
    finally:
        polls = poller.stop()
    for entry, window in zip(run.classes, run.windows, strict=True):
        entry["healthz_ms"] = healthz_figures(polls, window)
    if run.batch_runs:
        entry = run.classes[-1]  # which step of a batch's life holds the loop
        validating = [Window(r.started, r.validated_at) for r in run.batch_runs if r.validated_at]
        ending = [
            Window(r.validated_at, r.ended_at)
            for r in run.batch_runs
            if r.validated_at and r.ended_at
        ]
        entry["healthz_while_validating_ms"] = healthz_figures(polls, *validating)
        entry["healthz_while_cancelling_ms"] = healthz_figures(polls, *ending)
    return {
        "gateway": {"pid": proc.pid, "store": "sqlite", "limits": "memory"},
        "healthz_idle_ms": healthz_figures(polls, idle),
        "memory_before": before,
        "memory_after": memory_mb(proc.pid),
        "classes": run.classes,
    }


async def run_benchmark(options: Options, console: Console) -> dict[str, Any]:
    def log(message: str) -> None:
        console.log(message, markup=False)

    report: dict[str, Any] = {
        **report_header("abuse", options),
        "targets": {
            "refusal_ms": REFUSAL_TARGET_MS,
            "healthz_ms": HEALTHZ_TARGET_MS,
            "overspend_pct": 0,
        },
    }
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-abuse-") as tmp:
        workdir = Path(tmp)
        with Processes(workdir) as procs:
            upstream_port = free_port()
            upstream: Launch = fake_upstream_launch(port=upstream_port, model=MODEL, tokens=16)
            procs.start("fake-upstream", upstream, 30)
            upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
            report["single_gateway"] = await _abuse_half(options, procs, workdir, upstream_url, log)
            if options.race:
                race = RaceOptions(
                    postgres_url=options.postgres_url,
                    redis_url=options.redis_url,
                    requests=options.race_requests,
                    ready_timeout_s=options.ready_timeout_s,
                )
                try:
                    report["budget_race"] = await run_race(
                        race,
                        procs=procs,
                        workdir=workdir,
                        model=MODEL,
                        log=log,
                    )
                except (OSError, SQLAlchemyError, RedisError, StartError) as exc:
                    # No PostgreSQL or Redis here: the first half's figures still count.
                    report["budget_race_skipped"] = repr(exc)
    return report


def _parse_args(argv: list[str] | None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=defaults.count)
    parser.add_argument("--large-count", type=int, default=defaults.large_count)
    parser.add_argument("--class-seconds", type=float, default=defaults.class_seconds)
    parser.add_argument("--min-class-seconds", type=float, default=defaults.min_class_seconds)
    parser.add_argument("--batch-count", type=int, default=defaults.batch_count)
    parser.add_argument("--batch-lines", type=int, default=defaults.batch_lines)
    parser.add_argument("--upload-mb", type=int, default=defaults.upload_mb)
    parser.add_argument("--race-requests", type=int, default=defaults.race_requests)
    parser.add_argument("--skip-race", action="store_true")
    parser.add_argument("--postgres-url", default=defaults.postgres_url)
    parser.add_argument("--redis-url", default=defaults.redis_url)
    parser.add_argument("--out", type=Path, default=defaults.out)
    args = parser.parse_args(argv)
    return Options(
        count=args.count,
        large_count=args.large_count,
        class_seconds=args.class_seconds,
        min_class_seconds=args.min_class_seconds,
        batch_count=args.batch_count,
        batch_lines=args.batch_lines,
        upload_mb=args.upload_mb,
        race=not args.skip_race,
        race_requests=args.race_requests,
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
        out=args.out,
    )


def main(argv: list[str] | None = None) -> None:
    run_standalone(_parse_args(argv), run_benchmark, render)


if __name__ == "__main__":
    main()
