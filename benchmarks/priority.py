"""Interactive latency under a batch flood: one real vLLM replica, straight and through tidegate.

    python -m benchmarks.priority [--duration 180] [--warmup 10] [--engine-cpus 0]
        [--engine-priority] [--interactive-interval S] [--out PATH]

One local vLLM CPU replica with the bundled model (``--max-num-seqs 16``) is started by tidegate's
engine supervisor from the shared engine venv and model (``make engine``). The engine runs
float32 on CPUs without native bf16 (``--dtype``; vLLM's bf16 default is emulated there and
prefill is ~5x slower). The load is sized to the replica, as the issue states it: the batch
tenant offers 3x its slots, the interactive tenant 10% of its capacity. The interactive interval
is calibrated once before the phases (``--interactive-interval 0``, the default) so that the
interactive requests take ``--interactive-share`` of the replica's time: one request costs its
prefill (its TTFT on the idle replica, which does nothing else meanwhile) plus its other output
tokens at the saturated replica's cost per token. Counting slots instead would undercount
prefill: on a CPU replica a ~750-token chat prompt costs as much engine time as ~45 saturated
decode tokens, and a request every 1.5 s (10% of 16 slots) took ~45% of the replica. Three
phases, the same engine and the same load in each:

- ``idle``: only the interactive tenant, straight to vLLM: the TTFT an interactive user gets
  from an idle replica;
- ``vllm``: the same interactive load plus a batch tenant with ``--batch-streams`` closed-loop
  streams (3x the replica's max_num_seqs), straight to vLLM (its FIFO queue);
- ``tidegate``: the same load through a ``tidegate up`` gateway whose scheduler holds the queue
  (interactive tenant tier interactive, batch tenant tier batch).

``--engine-cpus 0`` dedicates core 0 to vLLM's compute threads (VLLM_CPU_OMP_THREADS_BIND) and
keeps this process and everything it starts (vLLM's front end and scheduler, the gateway) on the
other cores, in every phase alike: the deployment practice of dedicated engine cores.
``--engine-priority`` starts the replica with ``--scheduling-policy priority`` (every phase) and
lets the gateway pass each request's class as its priority.

Interactive TTFT is measured for requests sent during the measured window (each may finish within
``--drain`` seconds after it while the batch load goes on); throughput counts the streamed tokens
that arrived during the window. It reports and never asserts: the check column compares with the
targets (through tidegate, interactive TTFT p95 <= 1.5x idle; batch throughput >= 90% of what the
batch tenant got straight from vLLM under the same load).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import secrets
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.engines import ready_engines
from benchmarks.targets import Launch, Processes, free_port
from tidegate.config import (
    Config,
    EngineProfile,
    EnginesConfig,
    SchedulingConfig,
    load_config,
)
from tidegate.engines.dtype import engine_dtype
from tidegate.engines.shared_home import with_shared_engine
from tidegate_bench.stats import percentile

TTFT_TARGET_RATIO = 1.5
BATCH_TARGET_SHARE = 0.90
# A chat turn with a system prompt (~750 prompt tokens): prefill is a real part of TTFT, as it is
# for chat users; an idle replica answers its first token in about 0.2 s on the 2-core machines,
# the reference figure of the issue. (TTFT ratios are harsher with tiny prompts: with ~250 tokens
# the idle p95 was 0.09 s here.)
INTERACTIVE_SYSTEM = (
    "You are a helpful assistant for a travel company. Answer briefly and precisely. "
    "Customers ask about bookings, destinations, luggage rules, visas, weather and local food. "
    "Never invent prices; when unsure, say so and suggest contacting the support desk. "
) * 12
INTERACTIVE_PROMPT = "I fly to Lisbon in March. What should I pack, and which dishes should I try?"
BATCH_PROMPT = "Write a long, detailed story about a lighthouse keeper and the sea."


@dataclass(frozen=True)
class Options:
    warmup_s: float = 10.0
    duration_s: float = 180.0
    drain_s: float = 30.0
    """How long interactive requests sent in the window may take to finish after it."""
    batch_streams: int = 48
    interactive_interval_s: float = 0.0
    """One interactive request every this many seconds. 0: calibrated on the replica so the
    interactive tenant takes ``interactive_share`` of its time (module docstring)."""
    interactive_share: float = 0.10
    """For the calibration: the share of the replica's time the interactive tenant takes."""
    interactive_max_tokens: int = 16
    batch_max_tokens: int = 128
    max_num_seqs: int = 16
    interactive_reserve: float = 0.125
    """The gateway's scheduling.interactive_reserve: 2 of the replica's 16 slots."""
    dtype: str = "auto"
    """The engine's --dtype. "auto" here: float32 where the CPU has no native bf16
    (avx512_bf16 / amx_bf16), where vLLM's default bf16 is emulated and prefill ~5x slower."""
    engine_cpus: str = ""
    """Dedicated engine cores, e.g. "0": vLLM's compute threads are bound to them
    (VLLM_CPU_OMP_THREADS_BIND) and this process (the load generator, the gateway and the vLLM
    front end it starts) is kept off them, in every phase alike. Empty: vLLM's own binding
    (auto) and no affinity for the rest."""
    engine_priority: bool = False
    """scheduling.engine_priority: the replica runs --scheduling-policy priority (every phase)
    and the gateway sends each request's class as its priority."""
    ready_timeout_s: float = 300.0
    out: Path = Path("bench-results/priority.json")


@dataclass
class PhaseResult:
    name: str
    target: str
    interactive_sent: int = 0
    interactive_ok: int = 0
    interactive_errors: dict[str, int] = field(default_factory=dict)
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    ttft_max_s: float | None = None
    ttfts_s: list[float] = field(default_factory=list)
    """Every measured interactive TTFT, in send order."""
    batch_stalls_s: list[float] = field(default_factory=list)
    """For each of those: the longest pause in the batch streams' tokens while it waited for its
    first token. A slow TTFT with a long stall is the engine's step; with none, the request was
    held up on its way in (gateway, vLLM's front end, the host's scheduler)."""
    batch_ok: int = 0
    batch_errors: dict[str, int] = field(default_factory=dict)
    batch_tokens_per_s: float = 0.0
    interactive_tokens_per_s: float = 0.0

    @property
    def total_tokens_per_s(self) -> float:
        return self.batch_tokens_per_s + self.interactive_tokens_per_s


@dataclass
class _Sink:
    token_times: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    ok: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    model: str
    interactive_headers: dict[str, str]
    batch_headers: dict[str, str]


async def _stream(
    session: aiohttp.ClientSession,
    endpoint: _Endpoint,
    headers: dict[str, str],
    body: bytes,
    sink: _Sink,
) -> float | None:
    """One streamed chat completion; returns its TTFT (None on failure)."""
    sent = time.perf_counter()
    ttft: float | None = None
    try:
        async with session.post(
            endpoint.base_url + "/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        ) as response:
            if response.status != 200:
                await response.read()
                sink.error(f"http_{response.status}")
                return None
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                event = orjson.loads(line[6:])
                choices = event.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    if ttft is None:
                        ttft = now - sent
                    sink.token_times.append(now)
    except (aiohttp.ClientError, TimeoutError) as error:
        sink.error(type(error).__name__)
        return None
    sink.ok += 1
    return ttft


def _body(model: str, prompt: str, max_tokens: int, system: str | None = None) -> bytes:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return orjson.dumps(
        {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
    )


async def _batch_loop(
    session: aiohttp.ClientSession, endpoint: _Endpoint, body: bytes, sink: _Sink
) -> None:
    while True:
        if await _stream(session, endpoint, endpoint.batch_headers, body, sink) is None:
            await asyncio.sleep(0.5)  # refused (429/503): back off a little, as a client would


async def run_phase(
    name: str, endpoint: _Endpoint, options: Options, *, batch: bool, console: Console
) -> PhaseResult:
    console.log(f"phase {name}: {endpoint.base_url} (batch streams: {batch})")
    interval_s = options.interactive_interval_s
    interactive_body = _body(
        endpoint.model, INTERACTIVE_PROMPT, options.interactive_max_tokens, INTERACTIVE_SYSTEM
    )
    batch_body = _body(endpoint.model, BATCH_PROMPT, options.batch_max_tokens)
    batch_sink, interactive_sink = _Sink(), _Sink()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        batch_tasks = [
            asyncio.create_task(_batch_loop(session, endpoint, batch_body, batch_sink))
            for _ in range(options.batch_streams if batch else 0)
        ]
        await asyncio.sleep(options.warmup_s if batch else 1.0)
        start = time.perf_counter()
        end = start + options.duration_s
        measured: list[asyncio.Task[float | None]] = []
        sent_at: list[float] = []
        next_at = start
        while next_at < end:
            sent_at.append(time.perf_counter())
            measured.append(
                asyncio.create_task(
                    _stream(
                        session,
                        endpoint,
                        endpoint.interactive_headers,
                        interactive_body,
                        interactive_sink,
                    )
                )
            )
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        _, pending = await asyncio.wait(measured, timeout=options.drain_s)
        for task in [*pending, *batch_tasks]:
            task.cancel()
        await asyncio.gather(*pending, *batch_tasks, return_exceptions=True)
    finished = [
        (sent, ttft)
        for sent, task in zip(sent_at, measured, strict=True)
        if task.done() and not task.cancelled() and (ttft := task.result())
    ]
    values = [ttft for _, ttft in finished]
    result = PhaseResult(name=name, target=endpoint.base_url)
    if batch:
        result.batch_stalls_s = [
            round(_longest_pause(batch_sink.token_times, sent, sent + ttft), 4)
            for sent, ttft in finished
        ]
    result.interactive_sent = len(measured)
    result.interactive_ok = len(values)
    result.interactive_errors = dict(interactive_sink.errors)
    if pending:
        result.interactive_errors["unfinished"] = len(pending)
    result.ttfts_s = [round(t, 4) for t in values]
    if values:
        result.ttft_p50_s = percentile(values, 50)
        result.ttft_p95_s = percentile(values, 95)
        result.ttft_max_s = max(values)
    window = options.duration_s
    result.batch_ok = batch_sink.ok
    result.batch_errors = dict(batch_sink.errors)
    result.batch_tokens_per_s = sum(start <= t < end for t in batch_sink.token_times) / window
    result.interactive_tokens_per_s = (
        sum(start <= t < end for t in interactive_sink.token_times) / window
    )
    return result


def _longest_pause(times: list[float], start: float, end: float) -> float:
    """The longest gap between consecutive ``times`` (sorted) inside [start, end], edges
    included."""
    inside = [start, *(t for t in times if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(inside))


async def calibrate_interval(endpoint: _Endpoint, options: Options, console: Console) -> float:
    """The interactive interval that makes the interactive tenant ``interactive_share`` of the
    replica's time: one request's engine time (its prefill, measured as its idle TTFT, plus its
    other tokens at the saturated replica's cost per token) / share."""
    interactive_body = _body(
        endpoint.model, INTERACTIVE_PROMPT, options.interactive_max_tokens, INTERACTIVE_SYSTEM
    )
    batch_body = _body(endpoint.model, BATCH_PROMPT, options.batch_max_tokens)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        ttfts: list[float] = []
        for _ in range(5):  # the first fills the prefix cache, as in every phase
            ttft = await _stream(session, endpoint, {}, interactive_body, _Sink())
            if ttft is not None:
                ttfts.append(ttft)
        ttft_idle = sorted(ttfts[1:] or ttfts)[len(ttfts[1:] or ttfts) // 2]
        sink = _Sink()
        tasks = [
            asyncio.create_task(_batch_loop(session, endpoint, batch_body, sink))
            for _ in range(options.max_num_seqs)
        ]
        await asyncio.sleep(5.0)
        start = time.perf_counter()
        await asyncio.sleep(10.0)
        end = time.perf_counter()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    saturated = sum(start <= t < end for t in sink.token_times) / (end - start)
    cost_s = ttft_idle + (options.interactive_max_tokens - 1) / saturated
    interval = cost_s / options.interactive_share
    console.log(
        f"calibration: idle TTFT {ttft_idle:.2f} s, saturated {saturated:.0f} tokens/s: "
        f"a request costs ~{cost_s:.2f} s of the replica, one every {interval:.2f} s"
    )
    return round(interval, 2)


async def wait_engine_idle(base_url: str, timeout_s: float = 60.0) -> None:
    """Until the replica runs and queues nothing (cancelled streams are aborted by vLLM)."""
    root = base_url.removesuffix("/v1")
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(root + "/metrics") as response:
                text = await response.text()
            busy = 0.0
            for line in text.splitlines():
                if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")):
                    busy += float(line.rsplit(" ", 1)[1])
            if busy == 0:
                return
            await asyncio.sleep(0.5)


def resolve_dtype(dtype: str) -> str:
    """The engine dtype for ``dtype`` on the CPU (see ``engines.dtype``)."""
    return engine_dtype(dtype, "cpu")


def _parse_cpus(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            first, last = part.split("-")
            cpus.update(range(int(first), int(last) + 1))
        elif part.strip():
            cpus.add(int(part))
    return cpus


def pin_off_engine_cpus(engine_cpus: str) -> set[int] | None:
    """Keep this process and what it starts from now on off the engine's cores; returns the
    cores left for them (None: no pinning asked or possible)."""
    if not engine_cpus or not hasattr(os, "sched_setaffinity"):
        return None
    others = os.sched_getaffinity(0) - _parse_cpus(engine_cpus)
    if not others:
        raise ValueError(f"--engine-cpus {engine_cpus} leaves no core for the rest")
    os.sched_setaffinity(0, others)
    return others


def _engine_config(home: Path, options: Options) -> Config:
    extra_env = {"VLLM_CPU_OMP_THREADS_BIND": options.engine_cpus} if options.engine_cpus else {}
    config = Config(
        scheduling=SchedulingConfig(engine_priority=options.engine_priority),
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
                dtype=resolve_dtype(options.dtype),
                extra_env=extra_env,
            ),
        ),
    )
    return with_shared_engine(config, home=home, shared=load_config())


def _admin_post(origin: str, admin_key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        origin + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def _tenant_key(origin: str, admin_key: str, name: str, tier: str) -> str:
    tenant = _admin_post(origin, admin_key, "/admin/tenants", {"name": name, "tier": tier})
    key = _admin_post(
        origin,
        admin_key,
        "/admin/keys",
        {"name": name, "role": "member", "tenant_id": tenant["id"]},
    )
    return str(key["key"])


def _gateway_launch(
    *, home: Path, port: int, upstream_base_url: str, model: str, options: Options
) -> tuple[Launch, str]:
    admin_key = "tg-bench-" + secrets.token_hex(16)
    config = {
        "server": {"access_log": False},
        "upstreams": [
            {
                "url": upstream_base_url,
                "model": model,
                "max_concurrency": options.max_num_seqs,
                "priority_scheduling": options.engine_priority,
            }
        ],
        "scheduling": {"enabled": True, "interactive_reserve": options.interactive_reserve},
    }
    path = home / "tidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    tidegate = Path(sys.executable).with_name("tidegate")
    launch = Launch(
        [str(tidegate), "up", "--config", str(path), "--port", str(port)],
        f"http://127.0.0.1:{port}/readyz",
        {
            "TIDEGATE_ADMIN_KEY": admin_key,
            "TIDEGATE_HOME": str(home / "gateway"),
            "TIDEGATE_ENGINES__REPLICAS": "0",
        },
    )
    return launch, admin_key


async def run_benchmark(options: Options, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-priority-") as work:
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
            direct = _Endpoint(replica.base_url, model, {}, {})
            if options.interactive_interval_s <= 0:
                interval = await calibrate_interval(direct, options, console)
                options = replace(options, interactive_interval_s=interval)
                await wait_engine_idle(replica.base_url)
            phases = [await run_phase("idle", direct, options, batch=False, console=console)]
            phases.append(await run_phase("vllm", direct, options, batch=True, console=console))
            await wait_engine_idle(replica.base_url)
            port = free_port()
            launch, admin_key = _gateway_launch(
                home=home,
                port=port,
                upstream_base_url=replica.base_url,
                model=model,
                options=options,
            )
            with Processes(home) as processes:
                processes.start("tidegate", launch, 60.0)
                origin = f"http://127.0.0.1:{port}"
                interactive_key = _tenant_key(origin, admin_key, "chat", "interactive")
                batch_key = _tenant_key(origin, admin_key, "offline", "batch")
                through = _Endpoint(
                    origin + "/v1",
                    model,
                    {"Authorization": f"Bearer {interactive_key}"},
                    {"Authorization": f"Bearer {batch_key}"},
                )
                phases.append(
                    await run_phase("tidegate", through, options, batch=True, console=console)
                )
    return _summary(phases, options)  # options: with the calibrated interval


def _summary(phases: list[PhaseResult], options: Options) -> dict[str, Any]:
    by_name = {p.name: p for p in phases}
    idle, vllm, tidegate = by_name["idle"], by_name["vllm"], by_name["tidegate"]
    checks: dict[str, Any] = {}
    if idle.ttft_p95_s and tidegate.ttft_p95_s:
        ratio = tidegate.ttft_p95_s / idle.ttft_p95_s
        checks["interactive_ttft_p95_vs_idle"] = {
            "ratio": ratio,
            "target": f"<= {TTFT_TARGET_RATIO}",
            "pass": ratio <= TTFT_TARGET_RATIO,
        }
    if vllm.batch_tokens_per_s:
        share = tidegate.batch_tokens_per_s / vllm.batch_tokens_per_s
        checks["batch_throughput_vs_vllm"] = {
            "share": share,
            "target": f">= {BATCH_TARGET_SHARE:.0%}",
            "pass": share >= BATCH_TARGET_SHARE,
        }
        checks["batch_throughput_vs_replica_capacity"] = {
            "share": tidegate.batch_tokens_per_s / vllm.total_tokens_per_s,
            "note": "replica capacity: every token/s it streamed in the vllm phase (saturated)",
        }
    return {
        "benchmark": "priority",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "engine_dtype": resolve_dtype(options.dtype),
        "phases": [{**asdict(p), "total_tokens_per_s": p.total_tokens_per_s} for p in phases],
        "checks": checks,
    }


def _fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f} {unit}".rstrip()


def render(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="Interactive TTFT under a batch flood (one vLLM CPU replica)")
    for column in ("phase", "interactive ok/sent", "TTFT p50", "TTFT p95", "TTFT max"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    for column in ("batch tok/s", "interactive tok/s", "batch done", "errors"):
        table.add_column(column, justify="right")
    labels = {
        "idle": "idle replica (interactive only, straight)",
        "vllm": "straight to vLLM (FIFO)",
        "tidegate": "through tidegate",
    }
    for phase in summary["phases"]:
        errors = {**phase["interactive_errors"], **phase["batch_errors"]}
        table.add_row(
            labels.get(phase["name"], phase["name"]),
            f"{phase['interactive_ok']}/{phase['interactive_sent']}",
            _fmt(phase["ttft_p50_s"]),
            _fmt(phase["ttft_p95_s"]),
            _fmt(phase["ttft_max_s"]),
            f"{phase['batch_tokens_per_s']:.1f}",
            f"{phase['interactive_tokens_per_s']:.1f}",
            str(phase["batch_ok"]),
            ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "0",
        )
    console.print(table)
    options = summary["options"]
    console.print(
        f"engine: dtype {summary.get('engine_dtype', options['dtype'])}, "
        f"cores {options['engine_cpus'] or 'vLLM auto binding, rest unpinned'}, "
        f"engine priority {'on' if options['engine_priority'] else 'off'}; "
        f"load: {options['batch_streams']} batch streams, one interactive request every "
        f"{options['interactive_interval_s']:.2f} s; interactive_reserve "
        f"{options['interactive_reserve']}"
    )
    phases = {p["name"]: p for p in summary["phases"]}
    idle_p95 = phases["idle"]["ttft_p95_s"]
    through = phases["tidegate"]
    if idle_p95:
        slow = [
            (ttft, stall)
            for ttft, stall in zip(through["ttfts_s"], through["batch_stalls_s"], strict=True)
            if ttft > TTFT_TARGET_RATIO * idle_p95
        ]
        console.print(
            f"through tidegate, {len(slow)} of {len(through['ttfts_s'])} interactive requests "
            f"took over {TTFT_TARGET_RATIO}x the idle p95; TTFT / longest pause of the batch "
            "streams meanwhile: " + (", ".join(f"{t:.2f} s / {p:.2f} s" for t, p in slow) or "-")
        )
    for name, check in summary["checks"].items():
        value = check.get("ratio", check.get("share"))
        verdict = "" if "pass" not in check else ("pass" if check["pass"] else "FAIL")
        target = check.get("target", check.get("note", ""))
        console.print(f"{name}: {value:.2f} ({target}) {verdict}")


def _parse_args(argv: list[str] | None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--warmup", type=float, default=defaults.warmup_s)
    parser.add_argument("--duration", type=float, default=defaults.duration_s)
    parser.add_argument("--drain", type=float, default=defaults.drain_s)
    parser.add_argument("--batch-streams", type=int, default=defaults.batch_streams)
    parser.add_argument(
        "--interactive-interval",
        type=float,
        default=defaults.interactive_interval_s,
        help="seconds between interactive requests; 0 (default): calibrated on the replica",
    )
    parser.add_argument("--interactive-share", type=float, default=defaults.interactive_share)
    parser.add_argument("--batch-max-tokens", type=int, default=defaults.batch_max_tokens)
    parser.add_argument("--max-num-seqs", type=int, default=defaults.max_num_seqs)
    parser.add_argument("--interactive-reserve", type=float, default=defaults.interactive_reserve)
    parser.add_argument("--dtype", default=defaults.dtype)
    parser.add_argument("--engine-cpus", default=defaults.engine_cpus)
    parser.add_argument(
        "--engine-priority", action=argparse.BooleanOptionalAction, default=defaults.engine_priority
    )
    parser.add_argument("--out", type=Path, default=defaults.out)
    args = parser.parse_args(argv)
    return Options(
        warmup_s=args.warmup,
        duration_s=args.duration,
        drain_s=args.drain,
        batch_streams=args.batch_streams,
        interactive_interval_s=args.interactive_interval,
        interactive_share=args.interactive_share,
        batch_max_tokens=args.batch_max_tokens,
        max_num_seqs=args.max_num_seqs,
        interactive_reserve=args.interactive_reserve,
        dtype=args.dtype,
        engine_cpus=args.engine_cpus,
        engine_priority=args.engine_priority,
        out=args.out,
    )


def main(argv: list[str] | None = None) -> None:
    options = _parse_args(argv)
    console = Console(width=140)
    summary = asyncio.run(run_benchmark(options, console))
    render(summary, console)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
