"""Drive one load point against every target and record each request.

Open loop: one dispatcher walks the arrival schedule and, at each arrival, sends the same prompt
to every target (in a seeded random order, so no target is always written to first). Closed
loop: each target gets ``concurrency`` workers that send the prompt sequence in order, each
worker sending its next request when its previous one ends. Either way request ``i`` carries
prompt ``i`` on every target, which is what pairs records up for comparisons.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import orjson

from tidegate_bench.client import BenchClient, Outcome
from tidegate_bench.phases import Phase, phased_arrivals, worker_windows
from tidegate_bench.records import RequestRecord
from tidegate_bench.schedule import ArrivalProcess, arrival_times
from tidegate_bench.selfcheck import ClientHealth, ClientMonitor
from tidegate_bench.spec import Target, Tenant
from tidegate_bench.tokenizer import TokenCounter
from tidegate_bench.workloads import Prompt

Api = Literal["chat", "completions"]


@dataclass(frozen=True, kw_only=True)
class LoadPoint:
    label: str
    concurrency: int | None = None
    """Closed loop with this many requests in flight per target."""
    process: ArrivalProcess | None = None
    """Open loop on this arrival process."""
    phases: tuple[Phase, ...] = ()
    """A burst scenario: the load (rate or concurrency) times each phase's factor, phase by
    phase; the run lasts until the last phase ends."""

    @property
    def shape(self) -> str:
        return self.process.shape if self.process is not None else "closed"


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    count: int | None = None
    duration_s: float | None = None
    warmup_s: float = 0.0
    cooldown_s: float = 0.0
    seed: int = 0
    timeout_s: float = 300.0
    api: Api = "chat"
    stream: bool = True
    ignore_eos: bool = False
    priority_header: str = "x-tidegate-priority"


@dataclass(frozen=True, kw_only=True)
class PointResult:
    point: LoadPoint
    records: dict[str, list[RequestRecord]]
    health: ClientHealth
    window_start_s: float


@dataclass(frozen=True, kw_only=True)
class _Bound:
    """A target with its resolved model, client and per-tenant request heads."""

    target: Target
    model: str
    client: BenchClient
    heads: tuple[bytes, ...]


class LoadRunner:
    def __init__(
        self,
        *,
        targets: Sequence[tuple[Target, str]],
        prompts: Sequence[Prompt],
        tenants: Sequence[Tenant],
        settings: RunSettings,
        counter: TokenCounter,
        on_record: Callable[[RequestRecord], None] | None = None,
        on_start: Callable[[float], None] | None = None,
    ) -> None:
        if not prompts:
            raise ValueError("a run needs at least one prompt")
        if settings.count is None and settings.duration_s is None:
            raise ValueError("bound the run by a request count, a duration or both")
        self.settings = settings
        self.prompts = prompts
        self.tenants = tuple(tenants) or (Tenant(name="default"),)
        self.counter = counter
        self.on_record = on_record
        self.on_start = on_start
        """Called with the run's start (``time.perf_counter()``) once its clock starts."""
        path = "/chat/completions" if settings.api == "chat" else "/completions"
        self._bound = [self._bind(t, model, path) for t, model in targets]

    def _bind(self, target: Target, model: str, path: str) -> _Bound:
        client = BenchClient(
            base_url=target.url, timeout_s=self.settings.timeout_s, collect_text=self.counter.exact
        )
        heads = []
        for tenant in self.tenants:
            headers = [("Content-Type", "application/json")]
            key = tenant.key or target.key
            if key:
                headers.append(("Authorization", f"Bearer {key}"))
            if tenant.priority is not None:
                headers.append((self.settings.priority_header, tenant.priority))
            heads.append(client.head("POST", path, tuple(headers)))
        return _Bound(target=target, model=model, client=client, heads=tuple(heads))

    def close(self) -> None:
        for bound in self._bound:
            bound.client.close()

    def _tenant_indices(self, n: int) -> list[int]:
        weights = np.asarray([t.weight for t in self.tenants], dtype=float)
        rng = np.random.default_rng(self.settings.seed + 1)
        return [int(i) for i in rng.choice(len(weights), size=n, p=weights / weights.sum())]

    def _body(self, prompt: Prompt, model: str) -> bytes:
        s = self.settings
        body: dict[str, Any] = {"model": model}
        if s.api == "chat":
            body["messages"] = list(prompt.messages)
        else:
            body["prompt"] = prompt.text()
        if prompt.max_tokens is not None:
            body["max_tokens"] = prompt.max_tokens
        if s.ignore_eos:
            body["ignore_eos"] = True
        if s.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    async def run(self, point: LoadPoint) -> PointResult:
        s = self.settings
        records: dict[str, list[RequestRecord]] = {b.target.name: [] for b in self._bound}
        # The schedule is computed before the clock starts: drawing it must not make sends late.
        times: list[float] = []
        if point.process is not None and point.phases:
            times = phased_arrivals(point.process, point.phases, seed=s.seed)
        elif point.process is not None:
            times = arrival_times(
                point.process, count=s.count, duration_s=s.duration_s, seed=s.seed
            )
        tenants = self._tenant_indices(len(times) if times else s.count or 1_000_000)
        monitor = ClientMonitor()
        monitor.start()
        t0 = time.perf_counter()
        if self.on_start is not None:
            self.on_start(t0)
        if point.process is not None:
            lags = await self._open_loop(times, tenants, t0, records)
        else:
            assert point.concurrency is not None
            lags = []
            windows = worker_windows(point.phases, point.concurrency) if point.phases else None
            await self._closed_loop(point.concurrency, tenants, t0, records, windows)
        await monitor.stop()
        all_records = [r for rs in records.values() for r in rs]
        stop_s = max((r.scheduled_s for r in all_records), default=0.0)
        lo, hi = s.warmup_s, stop_s - s.cooldown_s
        marked = {
            name: sorted(
                (_with_measured(r, lo <= r.scheduled_s <= hi) for r in rs), key=lambda r: r.index
            )
            for name, rs in records.items()
        }
        latencies = [
            (r.end_s - r.sent_s) * 1000.0
            for rs in marked.values()
            for r in rs
            if r.measured and r.ok
        ]
        return PointResult(
            point=point,
            records=marked,
            health=monitor.health(lags, latencies),
            window_start_s=lo,
        )

    async def _open_loop(
        self,
        times: list[float],
        tenants: list[int],
        t0: float,
        records: dict[str, list[RequestRecord]],
    ) -> list[float]:
        s = self.settings
        order = random.Random(s.seed + 2)
        bound = list(self._bound)
        lags: list[float] = []
        tasks: set[asyncio.Task[None]] = set()
        for index, due in enumerate(times):
            delay = t0 + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(max(0.0, time.perf_counter() - t0 - due) * 1000.0)
            order.shuffle(bound)
            for b in bound:
                job = self._one(b, index, tenants[index], t0 + due, t0, records)
                task = asyncio.create_task(job)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        return lags

    async def _closed_loop(
        self,
        concurrency: int,
        tenants: list[int],
        t0: float,
        records: dict[str, list[RequestRecord]],
        windows: list[tuple[float, float]] | None = None,
    ) -> None:
        """``windows``: one (start, end) in seconds from ``t0`` per worker (a burst's phases);
        None: ``concurrency`` workers for the whole run."""
        s = self.settings
        limit = s.count
        end = s.duration_s if s.duration_s is not None else float("inf")
        spans = windows if windows is not None else [(0.0, end)] * concurrency

        async def worker(
            b: _Bound, indices: itertools.count[int], start: float, stop: float
        ) -> None:
            deadline = t0 + min(stop, end)
            delay = t0 + start - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            while time.perf_counter() < deadline:
                index = next(indices)
                if limit is not None and index >= limit:
                    return
                tenant = tenants[index % len(tenants)]
                await self._one(b, index, tenant, None, t0, records)

        workers = []
        for b in self._bound:
            indices = itertools.count()
            workers += [worker(b, indices, start, stop) for start, stop in spans]
        await asyncio.gather(*workers)

    async def _one(
        self,
        b: _Bound,
        index: int,
        tenant: int,
        scheduled: float | None,
        t0: float,
        records: dict[str, list[RequestRecord]],
    ) -> None:
        prompt = self.prompts[index % len(self.prompts)]
        outcome = await b.client.request(b.heads[tenant], self._body(prompt, b.model))
        record = self._record(b, index, tenant, prompt, outcome, scheduled or outcome.sent, t0)
        records[b.target.name].append(record)
        if self.on_record is not None:
            self.on_record(record)

    def _record(
        self,
        b: _Bound,
        index: int,
        tenant: int,
        prompt: Prompt,
        out: Outcome,
        scheduled: float,
        t0: float,
    ) -> RequestRecord:
        # The client's own count: the tokenizer's when there is one, else one token per chunk.
        own: int | None = None
        if out.text is not None:
            own = self.counter.count(out.text)
        elif self.settings.stream and not out.error:
            own = len(out.content_times)
        output = out.completion_tokens if out.completion_tokens is not None else own
        mismatch = out.completion_tokens is not None and own is not None
        mismatch = mismatch and own != out.completion_tokens
        return RequestRecord(
            index=index,
            target=b.target.name,
            tenant=self.tenants[tenant].name,
            scheduled_s=scheduled - t0,
            sent_s=out.sent - t0,
            end_s=out.end - t0,
            content_s=tuple(t - t0 for t in out.content_times),
            prompt_tokens=prompt.input_tokens if out.prompt_tokens is None else out.prompt_tokens,
            output_tokens=output if not out.error else None,
            cached_tokens=out.cached_tokens,
            token_mismatch=bool(mismatch) and not out.error,
            status=out.status,
            error=out.error,
            detail=out.detail,
        )


def _with_measured(record: RequestRecord, measured: bool) -> RequestRecord:
    return record if record.measured == measured else replace(record, measured=measured)


async def resolve_model(target: Target, *, timeout_s: float) -> str:
    """The target's model, or the first one its /v1/models lists."""
    if target.model:
        return target.model
    client = BenchClient(base_url=target.url, timeout_s=min(timeout_s, 30.0))
    # Gateways (tidegate itself) answer /models only with a key: send the one the requests use.
    auth = (("Authorization", f"Bearer {target.key}"),) if target.key else ()
    try:
        status, body = await client.get_json("/models", auth)
    finally:
        client.close()
    data = body.get("data") if isinstance(body, dict) else None
    if status == 200 and isinstance(data, list) and data and "id" in data[0]:
        return str(data[0]["id"])
    hint = "pass --model NAME (or model=NAME in the --target spec)"
    if status == 401 and not target.key:
        hint = "it needs a key: pass --api-key KEY or set OPENAI_API_KEY, or " + hint
    elif status == 401:
        hint = "the key was refused: check --api-key / OPENAI_API_KEY, or " + hint
    raise ValueError(f"{target.url}/models did not list a model (HTTP {status}); {hint}")
