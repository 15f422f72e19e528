"""Is the client the bottleneck? Schedule lag, event-loop lag and client CPU.

- Schedule lag: how late each open-loop request was actually sent after its scheduled time.
- Event-loop lag: how late a timer that should fire every ``interval_s`` actually fires; a busy
  loop delays every response callback by as much, which inflates the latencies it measures.
- CPU: the process's CPU time over the wall time (100 = one core saturated).

A run is client-bound only when the client itself limited it: its CPU is near a full core
(``CPU_BOUND_PERCENT``) and the p99 lag is large both in absolute terms (``LAG_BOUND_MS``) and next
to the latencies measured (``LAG_FRACTION`` of the median end-to-end latency). Lag with an idle
client means other processes on the host took the core: worth a note, not the label, since
adding client capacity would not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from tidegate_bench.stats import percentile

LAG_BOUND_MS = 10.0
LAG_FRACTION = 0.1
CPU_BOUND_PERCENT = 80.0
# The capacity probe measures the client alone on one core: any of these limits ends a step.
CAPACITY_CPU_PERCENT = 90.0

_ADVICE = (
    "lower --concurrency/--rate, or split the load over several `tidegate bench run` processes "
    "(or hosts) and compare; `tidegate bench client-capacity` shows what one client sustains"
)


@dataclass(frozen=True, kw_only=True)
class ClientHealth:
    schedule_lag_p99_ms: float
    loop_lag_p99_ms: float
    cpu_percent: float
    median_latency_ms: float | None = None
    """Median end-to-end latency of the measured requests; lag is judged against it."""

    @property
    def lag_ms(self) -> float:
        return max(self.schedule_lag_p99_ms, self.loop_lag_p99_ms)

    @property
    def lag_is_large(self) -> bool:
        bound = LAG_BOUND_MS
        if self.median_latency_ms is not None:
            bound = max(bound, LAG_FRACTION * self.median_latency_ms)
        return self.lag_ms > bound

    @property
    def client_bound(self) -> bool:
        return self.cpu_percent >= CPU_BOUND_PERCENT and self.lag_is_large

    @property
    def host_busy(self) -> bool:
        """Lag past ``LAG_BOUND_MS`` without a client-bound verdict: other work on this host."""
        return self.lag_ms > LAG_BOUND_MS and not self.client_bound

    @property
    def over_capacity(self) -> bool:
        """The capacity probe's stricter test: any lag or CPU limit passed."""
        return self.lag_ms > LAG_BOUND_MS or self.cpu_percent > CAPACITY_CPU_PERCENT

    @property
    def advice(self) -> str:
        if self.client_bound:
            return _ADVICE
        if self.host_busy:
            return (
                "other processes on this host delayed the client; latencies may include up to "
                f"{self.lag_ms:.0f} ms of that: rerun on a quieter host for exact figures"
            )
        return ""

    def as_json(self) -> dict[str, object]:
        return {
            "schedule_lag_p99_ms": self.schedule_lag_p99_ms,
            "loop_lag_p99_ms": self.loop_lag_p99_ms,
            "cpu_percent": self.cpu_percent,
            "median_latency_ms": self.median_latency_ms,
            "client_bound": self.client_bound,
            "advice": self.advice,
        }

    @staticmethod
    def worst(items: list[ClientHealth]) -> ClientHealth:
        """The load point that says most about the client: a client-bound one if any."""
        if not items:
            return ClientHealth(schedule_lag_p99_ms=0.0, loop_lag_p99_ms=0.0, cpu_percent=0.0)
        return max(items, key=lambda h: (h.client_bound, h.host_busy, h.lag_ms, h.cpu_percent))


class ClientMonitor:
    """Samples loop lag in a background task and CPU between ``start`` and ``stop``."""

    def __init__(self, *, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.loop_lag_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self._cpu_percent = 0.0

    def start(self) -> None:
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        wall = time.perf_counter() - self._wall0
        self._cpu_percent = 100.0 * (time.process_time() - self._cpu0) / wall if wall > 0 else 0.0
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        while True:
            due = time.perf_counter() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.loop_lag_ms.append(max(0.0, time.perf_counter() - due) * 1000.0)

    def health(
        self, schedule_lag_ms: list[float], latencies_ms: list[float] | None = None
    ) -> ClientHealth:
        return ClientHealth(
            schedule_lag_p99_ms=percentile(schedule_lag_ms, 99),
            loop_lag_p99_ms=percentile(self.loop_lag_ms, 99),
            cpu_percent=self._cpu_percent,
            median_latency_ms=percentile(latencies_ms, 50) if latencies_ms else None,
        )
