"""Scrape the gateway's ``/metrics`` every ``interval_s`` during a burst run, and at each phase
boundary, so a phase's queue-wait observations are the difference of two scrapes.

It runs in the bench's own event loop: one small GET and one parse a second cost far less than
the load itself. A failed scrape is counted and skipped; the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from tidegate_bench.burst.gateway_metrics import GatewaySample, Snapshot, parse_sample
from tidegate_bench.client import BenchClient


def default_metrics_url(target_url: str) -> str:
    """The gateway's /metrics beside its /v1 API: http://h:p/v1 -> http://h:p/metrics."""
    parts = urlsplit(target_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}/metrics"


@dataclass(frozen=True)
class ScrapeLog:
    snapshots: tuple[Snapshot, ...]
    failures: int
    last_error: str


class GatewayScraper:
    def __init__(
        self,
        *,
        url: str,
        token: str | None,
        interval_s: float,
        pools: Collection[str] = (),
        timeout_s: float = 5.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"--scrape-interval must be > 0 seconds, got {interval_s}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--metrics-url must be an http(s) URL, got {url!r}")
        self.url = url
        self._client = BenchClient(base_url=f"{parts.scheme}://{parts.netloc}", timeout_s=timeout_s)
        self._path = parts.path or "/metrics"
        self._headers = (("Authorization", f"Bearer {token}"),) if token else ()
        self._interval = interval_s
        self._pools = tuple(pools)
        self._raw: list[tuple[float, float, GatewaySample]] = []
        self._t0: float | None = None
        self._extra: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.failures = 0
        self.last_error = ""

    async def scrape(self) -> GatewaySample:
        """One scrape; raises ValueError (with the reason) when it fails."""
        try:
            status, body = await self._client.get(self._path, self._headers)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            raise ValueError(f"{self.url}: {exc or type(exc).__name__}") from exc
        if status != 200:
            hint = ""
            if status in (401, 403):
                hint = (
                    " (it needs server.metrics_token or an operator's admin key: --metrics-key, "
                    "or point --metrics-url at the server.metrics_port listener)"
                )
            raise ValueError(f"{self.url} answered HTTP {status}{hint}")
        try:
            return parse_sample(body.decode("utf-8", errors="replace"), pools=self._pools)
        except (ValueError, KeyError, IndexError) as exc:
            raise ValueError(f"{self.url} is not a Prometheus text exposition: {exc}") from exc

    async def _record(self) -> None:
        # Stamped when asked: a boundary scrape then carries the boundary's own time.
        asked, asked_unix = time.perf_counter(), time.time()
        try:
            sample = await self.scrape()
        except ValueError as exc:
            self.failures += 1
            self.last_error = str(exc)
            return
        self._raw.append((asked, asked_unix, sample))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def align(self, t0: float, boundaries_s: Sequence[float]) -> None:
        """The run started at ``t0`` (perf_counter); also scrape at these offsets from it."""
        self._t0 = t0
        self._extra = sorted(t0 + b for b in boundaries_s)
        self._wake.set()

    async def _loop(self) -> None:
        next_tick = time.perf_counter()
        while True:
            now = time.perf_counter()
            due = next_tick
            if self._extra and self._extra[0] < due:
                due = self._extra[0]
            if due > now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due - now)
                continue  # woken by align(), or due now: re-evaluate
            if self._extra and self._extra[0] <= now:
                self._extra.pop(0)
            if next_tick <= now:
                next_tick = now + self._interval
            await self._record()

    def close(self) -> None:
        self._client.close()

    async def stop(self) -> ScrapeLog:
        """A last scrape (every request has ended by now), then the snapshots in run time."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._record()
        self.close()
        t0 = self._t0 if self._t0 is not None else (self._raw[0][0] if self._raw else 0.0)
        snaps = tuple(Snapshot(t - t0, unix, sample) for t, unix, sample in self._raw)
        return ScrapeLog(snaps, self.failures, self.last_error)
