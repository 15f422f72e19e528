"""Is the client the bottleneck? Schedule lag, event-loop lag and client CPU.

- Schedule lag: how late each open-loop request was actually sent after its scheduled time.
- Event-loop lag: how late a timer that should fire every ``interval_s`` actually fires; a busy
  loop delays every response callback by as much, which inflates the latencies it measures.
- CPU: the process's CPU time over the wall time (100 = one core saturated).

A run is client-bound when any p99 lag passes ``LAG_BOUND_MS`` or CPU passes ``CPU_BOUND_PERCENT``;
its latencies then describe the client as much as the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from tidegate.bench.stats import percentile

LAG_BOUND_MS = 10.0
CPU_BOUND_PERCENT = 90.0


@dataclass(frozen=True, kw_only=True)
class ClientHealth:
    schedule_lag_p99_ms: float
    loop_lag_p99_ms: float
    cpu_percent: float

    @property
    def client_bound(self) -> bool:
        return (
            self.schedule_lag_p99_ms > LAG_BOUND_MS
            or self.loop_lag_p99_ms > LAG_BOUND_MS
            or self.cpu_percent > CPU_BOUND_PERCENT
        )

    def as_json(self) -> dict[str, object]:
        return {
            "schedule_lag_p99_ms": self.schedule_lag_p99_ms,
            "loop_lag_p99_ms": self.loop_lag_p99_ms,
            "cpu_percent": self.cpu_percent,
            "client_bound": self.client_bound,
        }

    @staticmethod
    def worst(items: list[ClientHealth]) -> ClientHealth:
        return ClientHealth(
            schedule_lag_p99_ms=max((h.schedule_lag_p99_ms for h in items), default=0.0),
            loop_lag_p99_ms=max((h.loop_lag_p99_ms for h in items), default=0.0),
            cpu_percent=max((h.cpu_percent for h in items), default=0.0),
        )


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

    def health(self, schedule_lag_ms: list[float]) -> ClientHealth:
        return ClientHealth(
            schedule_lag_p99_ms=percentile(schedule_lag_ms, 99),
            loop_lag_p99_ms=percentile(self.loop_lag_ms, 99),
            cpu_percent=self._cpu_percent,
        )
