"""``make bench-scale-out``: 1, 2 and 3 gateways sharing PostgreSQL and Redis in front of one fake
pool with a fixed capacity and token rate.

    python -m benchmarks.scale_out [--capacity 24] [--seconds 8] [--out ...]

For each gateway count:

- **throughput**: closed-loop clients (``--workers``), spread round robin over the gateways,
  send short non-streamed requests for ``--seconds``: aggregate req/s, and the upstream's peak
  in-flight against the pool's capacity;
- **interactive under a batch flood**: batch clients stream through every gateway while an
  interactive probe a quarter second apart (round robin over the gateways) measures its TTFT;
  p95 against one gateway's;
- **admission overhead**: Redis commands per request (the run's own ``redis-server``, so the
  count is exact), of which cluster share syncs (one round trip per gateway per heartbeat).

The upstream is ``tidegate_testing.fake_server``: each request waits ``--hold-s`` before its
first token, then streams 8 tokens 10 ms apart.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from benchmarks.batch_procs import gateway_launch, tenant_key
from benchmarks.budget_race import fresh_database
from benchmarks.targets import Launch, Processes, free_port
from tidegate_bench.results import report_header, run_standalone
from tidegate_bench.stats import percentile

MODEL = "fake-model"
TTFT_RATIO_TARGET = 1.2
SCALING_TARGET = 1.8


@dataclass(frozen=True)
class Options:
    capacity: int = 24
    hold_s: float = 0.05
    seconds: float = 8.0
    workers: int = 96
    batch_workers: int = 72
    gateway_counts: tuple[int, ...] = (1, 2, 3)
    postgres_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ready_timeout_s: float = 90.0
    out: Path = Path("bench-results/scale-out.json")


@dataclass
class Gateway:
    origin: str
    admin_key: str


@asynccontextmanager
async def own_redis(workdir: Path) -> AsyncIterator[str]:
    """A ``redis-server`` of the run's own on a free port (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    log = (workdir / "redis.log").open("wb")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url)
    try:
        for attempt in range(100):
            try:
                await cast(Awaitable[bool], client.ping())
                break
            except (OSError, RedisError):
                if attempt == 99:
                    raise
                await asyncio.sleep(0.05)
        yield url
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


async def redis_commands(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("stats")
        return int(info["total_commands_processed"])
    finally:
        await client.aclose()


def _config(options: Options, store_url: str, redis_url: str, upstream: str) -> dict[str, Any]:
    return {
        "server": {"access_log": False, "log_level": "warning"},
        "store": {"url": store_url},
        "limits": {"backend": "redis", "redis_url": redis_url, "redis_timeout_s": 2.0},
        "metering": {"flush_interval_s": 0.2},
        "batch": {"enabled": False},
        "scheduling": {"batch": {"max_queue_depth": 4096}},
        "upstreams": [{"url": upstream, "model": MODEL, "max_concurrency": options.capacity}],
    }


async def _json(http: aiohttp.ClientSession, method: str, url: str) -> dict[str, Any]:
    async with http.request(method, url) as response:
        data: dict[str, Any] = await response.json()
        return data


async def _syncs(http: aiohttp.ClientSession, gateways: list[Gateway]) -> float:
    """Cluster share syncs so far, over all gateways."""
    total = 0.0
    for g in gateways:
        headers = {"Authorization": f"Bearer {g.admin_key}"}
        async with http.get(g.origin + "/metrics", headers=headers) as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "tidegate_cluster_syncs_total":
                    total += sample.value
    return total


async def _request(
    http: aiohttp.ClientSession, origin: str, key: str, *, stream: bool, batch: bool
) -> tuple[int, float]:
    """(status, seconds to the first streamed event or the whole response)."""
    headers = {"Authorization": f"Bearer {key}"}
    if batch:
        headers["x-tidegate-priority"] = "batch"
    body = {"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 8, "stream": stream}
    start = time.perf_counter()
    async with http.post(origin + "/v1/completions", json=body, headers=headers) as response:
        first = None
        if stream and response.status == 200:
            async for line in response.content:
                if first is None and line.startswith(b"data: "):
                    first = time.perf_counter() - start
        else:
            await response.read()
        return response.status, first if first is not None else time.perf_counter() - start


async def _closed_loop(
    until: float, send: Callable[[int], Awaitable[tuple[int, float]]], workers: int
) -> list[int]:
    statuses: list[int] = []

    async def worker(index: int) -> None:
        while time.monotonic() < until:
            try:
                status, _ = await send(index)
            except aiohttp.ClientError:
                status = -1
            statuses.append(status)

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return statuses


async def measure(
    options: Options,
    gateways: list[Gateway],
    keys: dict[str, str],
    upstream: str,
    redis_url: str,
) -> dict[str, Any]:
    origins = [g.origin for g in gateways]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # Throughput.
        await _json(http, "POST", upstream + "/fake/in-flight/reset")
        commands0, syncs0 = await redis_commands(redis_url), await _syncs(http, gateways)
        start = time.monotonic()

        def plain(i: int) -> Awaitable[tuple[int, float]]:
            origin = origins[i % len(origins)]
            return _request(http, origin, keys["interactive"], stream=False, batch=False)

        statuses = await _closed_loop(start + options.seconds, plain, options.workers)
        elapsed = time.monotonic() - start
        commands1, syncs1 = await redis_commands(redis_url), await _syncs(http, gateways)
        peak_throughput = (await _json(http, "GET", upstream + "/fake/in-flight"))["peak_in_flight"]
        ok = statuses.count(200)

        # Interactive TTFT under a batch flood through every gateway.
        await _json(http, "POST", upstream + "/fake/in-flight/reset")
        flood_until = time.monotonic() + options.seconds + 1.0

        def batch(i: int) -> Awaitable[tuple[int, float]]:
            origin = origins[i % len(origins)]
            return _request(http, origin, keys["batch"], stream=True, batch=True)

        flood = asyncio.create_task(_closed_loop(flood_until, batch, options.batch_workers))
        await asyncio.sleep(1.0)
        probes: list[float] = []
        probe_statuses: list[int] = []
        for origin in itertools.islice(itertools.cycle(origins), int(options.seconds * 4)):
            status, ttft = await _request(
                http, origin, keys["interactive"], stream=True, batch=False
            )
            probe_statuses.append(status)
            if status == 200:
                probes.append(ttft)
            await asyncio.sleep(0.25)
        flood_statuses = await flood
        peak_flood = (await _json(http, "GET", upstream + "/fake/in-flight"))["peak_in_flight"]
    return {
        "gateways": len(gateways),
        "requests": ok,
        "errors": len(statuses) - ok,
        "req_per_s": ok / elapsed,
        "peak_in_flight": max(peak_throughput, peak_flood),
        "peak_in_flight_throughput": peak_throughput,
        "peak_in_flight_flood": peak_flood,
        "capacity": options.capacity,
        "redis_commands_per_request": (commands1 - commands0) / max(ok, 1),
        "cluster_syncs_per_request": (syncs1 - syncs0) / max(ok, 1),
        "interactive_ttft_p50_ms": percentile(probes, 50) * 1000,
        "interactive_ttft_p95_ms": percentile(probes, 95) * 1000,
        "interactive_probes": len(probes),
        "interactive_errors": len(probe_statuses) - len(probes),
        "batch_served": flood_statuses.count(200),
        "batch_errors": len(flood_statuses) - flood_statuses.count(200),
    }


async def run_count(
    options: Options,
    count: int,
    *,
    workdir: Path,
    upstream: str,
    redis_url: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    async with fresh_database(options.postgres_url) as store_url:
        config = _config(options, store_url, redis_url, upstream + "/v1")
        with Processes(workdir) as procs:
            gateways, launches = [], []
            for index in range(count):
                home = workdir / f"n{count}-gw{index}"
                home.mkdir()
                port = free_port()
                launch, admin_key = gateway_launch(home=home, port=port, config=config)
                launches.append((f"n{count}-gateway-{index}", launch))
                gateways.append(Gateway(f"http://127.0.0.1:{port}", admin_key))
            log(f"{count} gateway(s): starting")
            await asyncio.gather(
                *(
                    asyncio.to_thread(procs.start, name, launch, options.ready_timeout_s)
                    for name, launch in launches
                )
            )
            first = gateways[0]
            keys = {
                tier: await asyncio.to_thread(
                    tenant_key, first.origin, first.admin_key, f"{tier}-{count}", tier
                )
                for tier in ("interactive", "batch")
            }
            await asyncio.sleep(1.0)  # every member's share settled
            log(f"{count} gateway(s): measuring")
            return await measure(options, gateways, keys, upstream, redis_url)


async def run_benchmark(options: Options, console: Console) -> dict[str, Any]:
    def log(message: str) -> None:
        console.log(message, markup=False)

    report: dict[str, Any] = {
        **report_header("scale-out", options),
        "targets": {"ttft_p95_ratio": TTFT_RATIO_TARGET, "req_per_s_ratio_1_to_3": SCALING_TARGET},
    }
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-scale-out-") as tmp:
        workdir = Path(tmp)
        async with own_redis(workdir) as redis_url:
            with Processes(workdir) as procs:
                port = free_port()
                command = [
                    sys.executable,
                    "-m",
                    "tidegate_testing.fake_server",
                    *("--port", str(port), "--model", MODEL, "--tokens", "8"),
                    *("--first-token-delay-s", str(options.hold_s), "--token-delay-s", "0.01"),
                ]
                procs.start("fake-upstream", Launch(command, f"http://127.0.0.1:{port}/health"), 30)
                upstream = f"http://127.0.0.1:{port}"
                report["runs"] = [
                    await run_count(
                        options, n, workdir=workdir, upstream=upstream, redis_url=redis_url, log=log
                    )
                    for n in options.gateway_counts
                ]
    runs = report["runs"]
    base = runs[0]
    for run in runs:
        run["req_per_s_vs_one"] = run["req_per_s"] / max(base["req_per_s"], 1e-9)
        run["ttft_p95_vs_one"] = run["interactive_ttft_p95_ms"] / max(
            base["interactive_ttft_p95_ms"], 1e-9
        )
    report["peak_within_capacity"] = all(r["peak_in_flight"] <= r["capacity"] for r in runs)
    return report


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"tidegate bench scale-out (capacity {report['options']['capacity']}, "
        f"{report['machine']['cpus']} CPUs)",
        header_style="bold",
    )
    for column in (
        "gateways",
        "req/s",
        "× one",
        "peak in-flight / capacity",
        "interactive TTFT p50 / p95 ms",
        "p95 × one",
        "Redis cmds / req",
        "share syncs / req",
        "errors",
    ):
        table.add_column(column, justify="right")
    for r in report["runs"]:
        table.add_row(
            str(r["gateways"]),
            f"{r['req_per_s']:.0f}",
            f"{r['req_per_s_vs_one']:.2f}",
            f"{r['peak_in_flight']} / {r['capacity']}",
            f"{r['interactive_ttft_p50_ms']:.0f} / {r['interactive_ttft_p95_ms']:.0f}",
            f"{r['ttft_p95_vs_one']:.2f}",
            f"{r['redis_commands_per_request']:.2f}",
            f"{r['cluster_syncs_per_request']:.4f}",
            str(r["errors"] + r["interactive_errors"] + r["batch_errors"]),
        )
    console.print(table)
    verdict = "yes" if report["peak_within_capacity"] else "NO"
    console.print(f"peak in-flight within capacity in every run: {verdict}")


def _parse_args(argv: list[str] | None) -> Options:
    d = Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--capacity", type=int, default=d.capacity)
    parser.add_argument("--hold-s", type=float, default=d.hold_s)
    parser.add_argument("--seconds", type=float, default=d.seconds)
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--batch-workers", type=int, default=d.batch_workers)
    parser.add_argument("--gateways", type=int, nargs="+", default=list(d.gateway_counts))
    parser.add_argument("--postgres-url", default=d.postgres_url)
    parser.add_argument("--out", type=Path, default=d.out)
    a = parser.parse_args(argv)
    return Options(
        capacity=a.capacity,
        hold_s=a.hold_s,
        seconds=a.seconds,
        workers=a.workers,
        batch_workers=a.batch_workers,
        gateway_counts=tuple(a.gateways),
        postgres_url=a.postgres_url,
        out=a.out,
    )


def main(argv: list[str] | None = None) -> None:
    run_standalone(_parse_args(argv), run_benchmark, render)


if __name__ == "__main__":
    main()
