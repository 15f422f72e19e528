"""Cold start: how long a fresh server takes to answer, and how slow its first request is.

The server is either a fresh local engine replica started by tidegate's engine supervisor (in a
temporary home, so it never touches a running ``tidegate up``'s state) or any command the user
gives. Time to ready counts from the spawn to the first 200 from ``/health``; then one request
is sent and timed (its TTFT is the cold one), then ``warm`` more, one after another, whose median
TTFT is the warm figure.
"""

from __future__ import annotations

import asyncio
import shlex
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from tidegate.config import Config
from tidegate_bench.client import BenchClient, Outcome

_POLL_S = 0.05


@dataclass(frozen=True, kw_only=True)
class ColdStart:
    ready_s: float
    """Spawn to the first 200 from /health."""
    first_ttft_ms: float | None
    first_e2el_ms: float
    first_error: str
    warm_ttft_ms: float | None
    """Median TTFT of the warm requests."""
    warm_e2el_ms: float | None
    ttft_ratio: float | None
    """first_ttft_ms / warm_ttft_ms."""
    time_to_first_token_s: float | None
    """Spawn to the first token of the first request: what a user waiting on a scale-up sees."""

    def as_json(self) -> dict[str, object]:
        return {"tidegate_bench_cold_start": 1, **asdict(self)}


async def wait_healthy(base_url: str, *, timeout_s: float) -> None:
    root = base_url.rstrip("/").removesuffix("/v1")
    client = BenchClient(base_url=root, timeout_s=2.0)
    deadline = time.perf_counter() + timeout_s
    try:
        while True:
            try:
                status, _ = await client.get_json("/health")
                if status == 200:
                    return
            except (OSError, TimeoutError):
                client.close()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{root}/health did not answer 200 within {timeout_s}s")
            await asyncio.sleep(_POLL_S)
    finally:
        client.close()


async def _chat(client: BenchClient, head: bytes, model: str, max_tokens: int) -> Outcome:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return await client.request(head, orjson.dumps(body))


def _ttft(out: Outcome) -> float | None:
    if out.error or not out.content_times:
        return None
    return (out.content_times[0] - out.sent) * 1000.0


async def measure(
    *,
    spawned_at: float,
    base_url: str,
    model: str,
    key: str | None,
    warm: int,
    max_tokens: int,
    ready_timeout_s: float,
    request_timeout_s: float,
) -> ColdStart:
    await wait_healthy(base_url, timeout_s=ready_timeout_s)
    ready = time.perf_counter()
    client = BenchClient(base_url=base_url, timeout_s=request_timeout_s)
    headers = [("Content-Type", "application/json")]
    if key:
        headers.append(("Authorization", f"Bearer {key}"))
    head = client.head("POST", "/chat/completions", tuple(headers))
    try:
        first = await _chat(client, head, model, max_tokens)
        warm_out = [await _chat(client, head, model, max_tokens) for _ in range(warm)]
    finally:
        client.close()
    warm_ttfts = [v for o in warm_out if (v := _ttft(o)) is not None]
    warm_e2es = [(o.end - o.sent) * 1000.0 for o in warm_out if not o.error]
    first_ttft = _ttft(first)
    warm_ttft = statistics.median(warm_ttfts) if warm_ttfts else None
    return ColdStart(
        ready_s=ready - spawned_at,
        first_ttft_ms=first_ttft,
        first_e2el_ms=(first.end - first.sent) * 1000.0,
        first_error=first.detail or first.error,
        warm_ttft_ms=warm_ttft,
        warm_e2el_ms=statistics.median(warm_e2es) if warm_e2es else None,
        ttft_ratio=first_ttft / warm_ttft if first_ttft is not None and warm_ttft else None,
        time_to_first_token_s=first.content_times[0] - spawned_at if first_ttft else None,
    )


@asynccontextmanager
async def user_command(command: str, *, log_path: Path) -> AsyncIterator[float]:
    """Run ``command`` in its own process group; yields the spawn time, kills the group after."""
    from tidegate.engines.process import EngineProcess

    spawned = time.perf_counter()
    process = await EngineProcess.spawn(argv=shlex.split(command), env={}, log_path=log_path)
    try:
        yield spawned
    finally:
        await process.stop(timeout_s=10.0)


@asynccontextmanager
async def engine_replica(config: Config) -> AsyncIterator[tuple[float, str, str]]:
    """A fresh replica through the engine supervisor, in a temporary tidegate home that links
    to the configured models; yields (spawn time, base URL, served model name)."""
    from tidegate.engines.shared_home import with_shared_engine
    from tidegate.engines.supervisor import EngineSupervisor
    from tidegate.observability.metrics import GatewayMetrics
    from tidegate.routing.replicas import RoutingTable

    with tempfile.TemporaryDirectory(prefix="tidegate-coldstart-") as tmp:
        one_replica = config.engines.model_copy(update={"replicas": 1, "pools": []})
        fresh = with_shared_engine(
            config.model_copy(update={"engines": one_replica}), home=Path(tmp)
        )
        supervisor = EngineSupervisor(
            config=fresh, routing=RoutingTable(), metrics=GatewayMetrics()
        )
        spawned = time.perf_counter()
        await supervisor.start()
        try:
            replica = supervisor.replicas[0]
            yield spawned, replica.base_url, replica.upstream_model
        finally:
            await supervisor.stop()
