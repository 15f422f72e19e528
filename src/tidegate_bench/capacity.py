"""How fast can the client itself go? The self-benchmark behind the README's client figures.

Starts the instant fake upstream as its own process (pinned to another core when there is one),
pins this process to one core, and runs constant-rate open loops at rising rates. A rate is
sustained when the run is not client-bound (see ``selfcheck``), nothing failed and the achieved
request rate is within 5% of the target rate. Streaming runs report content chunks per second.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tidegate_bench.aio import run_async
from tidegate_bench.coldstart import wait_healthy
from tidegate_bench.runner import LoadPoint, LoadRunner, RunSettings
from tidegate_bench.schedule import ArrivalProcess
from tidegate_bench.spec import Target
from tidegate_bench.tokenizer import TokenCounter
from tidegate_bench.workloads import Prompt

_SUSTAINED_FRACTION = 0.95


@dataclass(frozen=True, kw_only=True)
class CapacityStep:
    rate: float
    achieved_rps: float
    chunks_per_s: float
    failed: int
    schedule_lag_p99_ms: float
    loop_lag_p99_ms: float
    cpu_percent: float
    client_bound: bool

    @property
    def sustained(self) -> bool:
        return (
            not self.client_bound
            and self.failed == 0
            and self.achieved_rps >= _SUSTAINED_FRACTION * self.rate
        )


@contextlib.contextmanager
def fake_upstream_process(*, tokens: int) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = [sys.executable, "-m", "tidegate_testing.fake_server", "--port", str(port)]
    proc = subprocess.Popen([*argv, "--tokens", str(tokens)], stdout=subprocess.DEVNULL)
    try:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 1:
            os.sched_setaffinity(proc.pid, set(cores[1:]))
            os.sched_setaffinity(0, {cores[0]})
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def measure(
    *, url: str, rates: Sequence[float], stream: bool, duration_s: float
) -> list[CapacityStep]:
    await wait_healthy(url, timeout_s=30.0)
    prompt = Prompt(messages=({"role": "user", "content": "hi"},), max_tokens=None, input_tokens=1)
    steps = []
    for rate in rates:
        settings = RunSettings(
            duration_s=duration_s, warmup_s=min(1.0, duration_s / 4), stream=stream, timeout_s=30
        )
        runner = LoadRunner(
            targets=[(Target(name="fake", url=url), "fake-model")],
            prompts=[prompt],
            tenants=[],
            settings=settings,
            counter=TokenCounter(None),
        )
        try:
            result = await runner.run(
                LoadPoint(label=f"rate={rate}", process=ArrivalProcess(shape="constant", rate=rate))
            )
        finally:
            runner.close()
        records = [r for r in result.records["fake"] if r.measured]
        ok = [r for r in records if r.ok]
        span = max((r.end_s for r in records), default=0.0) - result.window_start_s
        health = result.health
        steps.append(
            CapacityStep(
                rate=rate,
                achieved_rps=len(ok) / span if span > 0 else 0.0,
                chunks_per_s=sum(len(r.content_s) for r in ok) / span if span > 0 else 0.0,
                failed=len(records) - len(ok),
                schedule_lag_p99_ms=health.schedule_lag_p99_ms,
                loop_lag_p99_ms=health.loop_lag_p99_ms,
                cpu_percent=health.cpu_percent,
                client_bound=health.over_capacity,
            )
        )
        if not steps[-1].sustained:
            break
    return steps


def run_capacity(
    *, rates: Sequence[float], stream: bool, tokens: int, duration_s: float
) -> list[CapacityStep]:
    with fake_upstream_process(tokens=tokens) as url:
        return run_async(measure(url=url, rates=rates, stream=stream, duration_s=duration_s))
