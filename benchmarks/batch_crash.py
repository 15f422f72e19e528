"""The fake-upstream half of ``make bench-batch``: batch throughput, then the same batch with the
gateway killed (``kill -9``) and restarted at random moments.

The fake upstream answers at once, so lines/s measures the batch machinery itself (claiming,
the gateway pipeline, committing results, assembling output files), not an engine. The crash run
checks the durability promise from the outside: every ``custom_id`` appears exactly once across
the output and error files, and the request counts add up.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from benchmarks.batch_procs import RestartableProcess, gateway_launch, tenant_key
from benchmarks.targets import Processes, fake_upstream_launch, free_port
from tidegate.commands.batch_client import Batch, BatchApiError, BatchClient

MODEL = "fake-model"
ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class CrashOptions:
    lines: int = 10_000
    crashes: int = 3
    seed: int | None = None
    """Seeds the crash moments; None: a fresh seed (printed, so a run can be repeated)."""
    lease_s: float = 5.0
    """The gateway's batch.lease_s: how soon a line claimed by a killed process is re-claimed."""
    concurrency: int = 64
    """batch.concurrency_per_batch (and per tenant): the fake upstream is instant, so more lines
    in flight only measure the gateway."""
    poll_s: float = 0.2
    timeout_s: float = 900.0


@dataclass
class Verification:
    """What the output and error files say about a finished batch."""

    expected: int
    output_lines: int
    error_lines: int
    missing: int
    duplicated: int
    unknown: int
    counts_add_up: bool
    request_counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.duplicated == 0
            and self.unknown == 0
            and (self.counts_add_up)
        )


@dataclass
class RunResult:
    name: str
    status: str
    lines: int
    seconds: float
    """From batch creation to a terminal status."""
    lines_per_s: float
    verification: Verification
    crashes: list[dict[str, Any]] = field(default_factory=list)


def input_file(lines: int) -> bytes:
    """``lines`` full batch lines with ids line-1 ... line-N."""
    rows = (
        {
            "custom_id": f"line-{n}",
            "method": "POST",
            "url": ENDPOINT,
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Summarise record number {n}."}],
                "max_tokens": 16,
            },
        }
        for n in range(1, lines + 1)
    )
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def verify(batch: Batch, output: bytes, errors: bytes, expected: int) -> Verification:
    """Count every custom_id across both files against the ids the input file had."""
    out_ids = [orjson.loads(line)["custom_id"] for line in output.splitlines() if line.strip()]
    err_ids = [orjson.loads(line)["custom_id"] for line in errors.splitlines() if line.strip()]
    seen = Counter(out_ids + err_ids)
    wanted = {f"line-{n}" for n in range(1, expected + 1)}
    counts = {"total": batch.total, "completed": batch.completed, "failed": batch.failed}
    return Verification(
        expected=expected,
        output_lines=len(out_ids),
        error_lines=len(err_ids),
        missing=len(wanted - seen.keys()),
        duplicated=sum(1 for n in seen.values() if n > 1),
        unknown=len(seen.keys() - wanted),
        counts_add_up=(
            batch.total == expected
            and batch.completed == len(out_ids)
            and batch.failed == len(err_ids)
            and batch.completed + batch.failed == batch.total
        ),
        request_counts=counts,
    )


async def _submit(client: BatchClient, content: bytes) -> Batch:
    file_id = await client.upload(filename="bench.jsonl", content=content)
    return await client.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")


async def _poll(client: BatchClient, batch_id: str) -> Batch | None:
    """The batch, or None while the gateway is down (being restarted)."""
    try:
        return await client.retrieve(batch_id)
    except BatchApiError as exc:
        if exc.status is not None and exc.status < 500:
            raise
        return None


async def run_batch(
    name: str,
    *,
    base_url: str,
    key: str,
    options: CrashOptions,
    on_progress: Callable[[Batch], list[dict[str, Any]] | None] | None = None,
) -> RunResult:
    """Submit a batch of ``options.lines`` lines, poll it to the end, download and verify.

    ``on_progress``: called with every poll; may kill and restart the gateway (it returns the
    crash log at the end, so the result carries it).
    """
    content = input_file(options.lines)
    crashes: list[dict[str, Any]] = []
    async with BatchClient(base_url=base_url, api_key=key, timeout_s=120) as client:
        batch = await _submit(client, content)
        created = time.perf_counter()
        while not batch.terminal:
            if time.perf_counter() - created > options.timeout_s:
                raise TimeoutError(f"{name}: batch {batch.id} still {batch.status}")
            await asyncio.sleep(options.poll_s)
            polled = await _poll(client, batch.id)
            if polled is None:
                continue
            batch = polled
            if on_progress is not None:
                crashes = on_progress(batch) or crashes
        seconds = time.perf_counter() - created
        output = await client.content(batch.output_file_id) if batch.output_file_id else b""
        errors = await client.content(batch.error_file_id) if batch.error_file_id else b""
    return RunResult(
        name=name,
        status=batch.status,
        lines=options.lines,
        seconds=seconds,
        lines_per_s=options.lines / seconds,
        verification=verify(batch, output, errors, options.lines),
        crashes=crashes,
    )


class _Crasher:
    """Kills the gateway once the batch passes each of ``crashes`` random progress points
    (lines done / total), and starts it again at once on the same port and store."""

    def __init__(self, gateway: RestartableProcess, options: CrashOptions, seed: int) -> None:
        rng = random.Random(seed)
        self._points = sorted(rng.uniform(0.05, 0.95) for _ in range(options.crashes))
        self._gateway = gateway
        self.log: list[dict[str, Any]] = []

    def __call__(self, batch: Batch) -> list[dict[str, Any]] | None:
        progress = batch.done / batch.total if batch.total else 0.0
        if not self._points or progress < self._points[0] or batch.status != "in_progress":
            return None
        point = self._points.pop(0)
        self._gateway.kill()
        restart_s = self._gateway.start()
        self.log.append(
            {
                "at_progress": round(progress, 4),
                "planned_at": round(point, 4),
                "lines_done": batch.done,
                "restart_s": round(restart_s, 2),
            }
        )
        return self.log


def _gateway_config(upstream_base_url: str, options: CrashOptions) -> dict[str, Any]:
    return {
        "server": {"access_log": False},
        "upstreams": [{"url": upstream_base_url, "model": MODEL}],
        "batch": {
            "lease_s": options.lease_s,
            "poll_interval_s": 0.2,
            "concurrency_per_batch": options.concurrency,
            "concurrency_per_tenant": options.concurrency,
            "claim_size": options.concurrency,
        },
    }


async def run_crash_benchmark(options: CrashOptions, console: Console) -> dict[str, Any]:
    seed = options.seed if options.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-batch-") as work:
        home = Path(work)
        upstream_port, port = free_port(), free_port()
        upstream = fake_upstream_launch(port=upstream_port, model=MODEL, tokens=16)
        with Processes(home) as procs:
            procs.start("fake-upstream", upstream, 30.0)
            config = _gateway_config(f"http://127.0.0.1:{upstream_port}/v1", options)
            launch, admin_key = gateway_launch(home=home, port=port, config=config)
            with RestartableProcess("tidegate", launch, home) as gateway:
                gateway.start()
                origin = f"http://127.0.0.1:{port}"
                key = tenant_key(origin, admin_key, "offline", "batch")
                base_url = origin + "/v1"
                console.log(f"clean run: {options.lines:,} lines against the fake upstream")
                clean = await run_batch("clean", base_url=base_url, key=key, options=options)
                console.log(f"crash run: {options.crashes} x kill -9 (seed {seed})")
                crasher = _Crasher(gateway, options, seed)
                crashed = await run_batch(
                    "crashes", base_url=base_url, key=key, options=options, on_progress=crasher
                )
    return {
        "seed": seed,
        "options": asdict(options),
        "runs": [_as_dict(clean), _as_dict(crashed)],
    }


def _as_dict(result: RunResult) -> dict[str, Any]:
    data = asdict(result)
    data["verification"]["ok"] = result.verification.ok
    return data
