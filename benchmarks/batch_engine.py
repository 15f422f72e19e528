"""The real-engine half of ``make bench-batch``: a batch on one local vLLM replica while an
interactive tenant keeps chatting, both through one tidegate gateway.

Two phases on the same gateway and replica (``--max-num-seqs 16``):

- ``idle``: only the interactive tenant (a streamed chat turn at the calibrated interval): its
  TTFT baseline;
- ``batch``: the same interactive load while a batch of ``lines`` requests runs at the batch
  class. Interactive TTFT counts requests sent while the batch keeps the replica saturated: from
  the batch reaching in_progress until fewer lines are left than the batch may run at once (the
  tail, with free slots, would flatter the figure).

Batch throughput is lines and completion tokens (from the output file's usage) per second of
in_progress time. It reports and never asserts; the target is TTFT p95 within 1.5x of idle.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console

from benchmarks.batch_procs import RestartableProcess, gateway_launch, tenant_key
from benchmarks.engines import ready_engines
from benchmarks.priority import (
    BATCH_PROMPT,
    INTERACTIVE_PROMPT,
    INTERACTIVE_SYSTEM,
    _body,
    _Endpoint,
    _Sink,
    _stream,
    calibrate_interval,
    pin_off_engine_cpus,
    wait_engine_idle,
)
from benchmarks.priority import Options as PriorityOptions
from benchmarks.targets import free_port
from tidegate.commands.batch_client import Batch, BatchClient
from tidegate.config import Config, EngineProfile, EnginesConfig, load_config
from tidegate.engines.shared_home import with_shared_engine
from tidegate_bench.stats import percentile

TTFT_TARGET_RATIO = 1.5


@dataclass(frozen=True)
class EngineOptions:
    lines: int = 200
    batch_max_tokens: int = 64
    idle_s: float = 90.0
    """The idle phase: ~12 interactive requests at the calibrated interval."""
    interactive_interval_s: float = 0.0
    """One interactive request every this many seconds. 0: calibrated on the replica as in
    bench-priority, so the interactive tenant takes ``interactive_share`` of its time (a fixed
    interval would overload a slow host's replica before the batch even starts)."""
    interactive_share: float = 0.10
    interactive_max_tokens: int = 16
    max_num_seqs: int = 16
    interactive_reserve: float = 0.125
    """scheduling.interactive_reserve: 2 of the replica's 16 slots stay free for interactive."""
    batch_concurrency: int = 16
    ready_timeout_s: float = 300.0
    batch_timeout_s: float = 600.0
    engine_cpus: str = ""
    """Dedicated engine cores (as bench-priority's --engine-cpus): vLLM's compute threads bound
    to them, the gateway and the load generator kept off them."""


@dataclass
class TtftStats:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None


@dataclass
class _Probe:
    """Interactive requests: (sent at, TTFT or None) each."""

    samples: list[tuple[float, float | None]] = field(default_factory=list)
    sink: _Sink = field(default_factory=_Sink)

    def stats(self, start: float, end: float) -> TtftStats:
        window = [ttft for sent, ttft in self.samples if start <= sent < end]
        values = [t for t in window if t is not None]
        result = TtftStats(sent=len(window), ok=len(values), errors=dict(self.sink.errors))
        if values:
            result.p50_s = percentile(values, 50)
            result.p95_s = percentile(values, 95)
            result.max_s = max(values)
        return result


async def _interactive(endpoint: _Endpoint, options: EngineOptions, probe: _Probe) -> None:
    """One streamed chat turn every interval until cancelled; each is recorded when done."""
    body = _body(
        endpoint.model, INTERACTIVE_PROMPT, options.interactive_max_tokens, INTERACTIVE_SYSTEM
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    pending: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession) -> None:
        sent = time.perf_counter()
        ttft = await _stream(session, endpoint, endpoint.interactive_headers, body, probe.sink)
        probe.samples.append((sent, ttft))

    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            next_at = time.perf_counter()
            while True:
                task = asyncio.create_task(one(session))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += options.interactive_interval_s
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        finally:
            # Let requests already sent finish: their TTFT belongs to the window they were sent in.
            if pending:
                await asyncio.wait(pending, timeout=30)
            for task in pending:
                task.cancel()


def _batch_input(model: str, options: EngineOptions) -> bytes:
    lines = []
    for n in range(1, options.lines + 1):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"{BATCH_PROMPT} (variant {n})"}],
            "max_tokens": options.batch_max_tokens,
            "ignore_eos": True,
        }
        lines.append(
            orjson.dumps(
                {
                    "custom_id": f"line-{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    return b"\n".join(lines) + b"\n"


def _completion_tokens(output: bytes) -> int:
    tokens = 0
    for line in output.splitlines():
        if line.strip():
            body = (orjson.loads(line).get("response") or {}).get("body") or {}
            tokens += int((body.get("usage") or {}).get("completion_tokens") or 0)
    return tokens


async def _run_batch(
    endpoint: _Endpoint, key: str, options: EngineOptions, probe: _Probe
) -> dict[str, Any]:
    async with BatchClient(base_url=endpoint.base_url, api_key=key) as client:
        file_id = await client.upload(
            filename="engine.jsonl", content=_batch_input(endpoint.model, options)
        )
        batch = await client.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="1h"
        )
        created = time.perf_counter()
        interactive = asyncio.create_task(_interactive(endpoint, options, probe))
        started: float | None = None
        saturated_until: float | None = None
        try:
            while not batch.terminal:
                if time.perf_counter() - created > options.batch_timeout_s:
                    # Report what was measured rather than nothing: a slow engine is a result.
                    batch = await client.cancel(batch.id)
                    break
                await asyncio.sleep(0.25)
                batch = await client.retrieve(batch.id)
                now = time.perf_counter()
                if started is None and batch.status == "in_progress":
                    started = now
                if (
                    started is not None  # before in_progress, total is still 0
                    and saturated_until is None
                    and batch.total - batch.done < options.batch_concurrency
                ):
                    saturated_until = now
        finally:
            interactive.cancel()
            await asyncio.gather(interactive, return_exceptions=True)
        ended = time.perf_counter()
        timed_out = not batch.terminal
        output = await client.content(batch.output_file_id) if batch.output_file_id else b""
    if timed_out:  # no output file yet: every line ran to max_tokens (ignore_eos)
        output = b""
        tokens = batch.completed * options.batch_max_tokens
    else:
        tokens = _completion_tokens(output)
    return _batch_summary(
        batch, tokens, created, started or created, saturated_until or ended, ended, timed_out
    )


def _batch_summary(
    batch: Batch,
    tokens: int,
    created: float,
    started: float,
    saturated_until: float,
    ended: float,
    timed_out: bool,
) -> dict[str, Any]:
    running_s = max(ended - started, 1e-9)
    return {
        "id": batch.id,
        "status": "timed out (cancelled)" if timed_out else batch.status,
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "created_to_done_s": ended - created,
        "in_progress_s": running_s,
        "lines_per_s": batch.completed / running_s,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / running_s,
        "window": (started, saturated_until),
    }


def _engine_config(home: Path, options: EngineOptions) -> Config:
    config = Config(
        engines=EnginesConfig(
            replicas=1,
            ready_timeout_s=options.ready_timeout_s,
            health_interval_s=0.5,
            drain_grace_s=2.0,
            profile=EngineProfile(
                device="cpu",
                enforce_eager=True,
                cpu_kvcache_space_gib=2,
                max_model_len=2048,
                max_num_seqs=options.max_num_seqs,
                extra_env=(
                    {"VLLM_CPU_OMP_THREADS_BIND": options.engine_cpus}
                    if options.engine_cpus
                    else {}
                ),
            ),
        ),
    )
    return with_shared_engine(config, home=home, shared=load_config())


def _gateway_config(replica_url: str, model: str, options: EngineOptions) -> dict[str, Any]:
    return {
        "server": {"access_log": False},
        "upstreams": [
            {"url": replica_url, "model": model, "max_concurrency": options.max_num_seqs}
        ],
        "scheduling": {"enabled": True, "interactive_reserve": options.interactive_reserve},
        "batch": {
            "concurrency_per_batch": options.batch_concurrency,
            "concurrency_per_tenant": options.batch_concurrency,
            "poll_interval_s": 0.5,
        },
    }


async def _measure(
    origin: str, admin_key: str, model: str, options: EngineOptions, console: Console
) -> dict[str, Any]:
    chat_key = tenant_key(origin, admin_key, "chat", "interactive")
    batch_key = tenant_key(origin, admin_key, "offline", "batch")
    endpoint = _Endpoint(origin + "/v1", model, {"Authorization": f"Bearer {chat_key}"}, {})
    warm = _Probe()
    warmup = asyncio.create_task(_interactive(endpoint, options, warm))
    await asyncio.sleep(3.0)  # the first requests of a fresh replica are slower; not measured
    warmup.cancel()
    await asyncio.gather(warmup, return_exceptions=True)
    console.log(f"phase idle: interactive only, {options.idle_s:.0f} s")
    idle = _Probe()
    task = asyncio.create_task(_interactive(endpoint, options, idle))
    start = time.perf_counter()
    await asyncio.sleep(options.idle_s)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    idle_stats = idle.stats(start, start + options.idle_s)
    console.log(f"phase batch: {options.lines} lines x {options.batch_max_tokens} tokens")
    busy = _Probe()
    batch = await _run_batch(endpoint, batch_key, options, busy)
    window = batch.pop("window")
    busy_stats = busy.stats(*window)
    checks: dict[str, Any] = {}
    if idle_stats.p95_s and busy_stats.p95_s:
        ratio = busy_stats.p95_s / idle_stats.p95_s
        checks["interactive_ttft_p95_vs_idle"] = {
            "ratio": ratio,
            "target": f"<= {TTFT_TARGET_RATIO}",
            "pass": ratio <= TTFT_TARGET_RATIO,
        }
    return {
        "options": asdict(options),
        "idle": asdict(idle_stats),
        "during_batch": {**asdict(busy_stats), "window_s": window[1] - window[0]},
        "batch": batch,
        "checks": checks,
    }


async def run_engine_benchmark(options: EngineOptions, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-batch-engine-") as work:
        home = Path(work)
        others = pin_off_engine_cpus(options.engine_cpus)
        if others is not None:
            console.log(f"engine cores {options.engine_cpus}; everything else on {sorted(others)}")
        config = _engine_config(home, options)
        async with ready_engines(
            config, ready_timeout_s=options.ready_timeout_s, console=console
        ) as supervisor:
            replica = supervisor.replicas[0]
            model = config.engines.served_model_name
            if options.interactive_interval_s <= 0:
                interval = await calibrate_interval(
                    _Endpoint(replica.base_url, model, {}, {}),
                    PriorityOptions(
                        interactive_share=options.interactive_share,
                        interactive_max_tokens=options.interactive_max_tokens,
                        batch_max_tokens=options.batch_max_tokens,
                        max_num_seqs=options.max_num_seqs,
                    ),
                    console,
                )
                options = replace(options, interactive_interval_s=interval)
                await wait_engine_idle(replica.base_url)
            port = free_port()
            launch, admin_key = gateway_launch(
                home=home, port=port, config=_gateway_config(replica.base_url, model, options)
            )
            with RestartableProcess("tidegate", launch, home) as gateway:
                gateway.start()
                return await _measure(
                    f"http://127.0.0.1:{port}", admin_key, model, options, console
                )
