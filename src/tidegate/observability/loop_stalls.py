"""How long the event loop was held: timer lateness and full garbage collections, as metrics.

Everything the gateway does runs on one event loop, so anything that holds it (a long callback,
a full GC walking a large heap) delays every request and stream at once. Two probes report it:

- a timer that asks to run every ``interval_s``; how late it runs is how long the loop was held
  by something else (``tidegate_event_loop_stall_seconds``, worst in ``..._worst_seconds``);
- a ``gc.callbacks`` hook timing each generation-2 collection, which holds the loop (and the
  GIL) while it walks every tracked object (``tidegate_gc_full_pause_seconds``).

Both cost next to nothing: one timer callback per interval and one clock read per collection.
The series have no labels, so they are safe to expose on any port.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

__all__ = ["LoopStallProbe", "watch_loop_stalls"]

_STALL_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_GC_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_FULL = 2


class LoopStallProbe:
    """Registers the series on ``registry``; ``start``/``stop`` run the probes on this loop."""

    def __init__(self, registry: CollectorRegistry, *, interval_s: float = 0.02) -> None:
        self._interval_s = interval_s
        self.stalls = Histogram(
            "tidegate_event_loop_stall_seconds",
            "How late the loop ran a timer set every 20 ms: time it was held by other work.",
            buckets=_STALL_BUCKETS,
            registry=registry,
        )
        self.worst_stall = Gauge(
            "tidegate_event_loop_stall_worst_seconds",
            "The longest event-loop stall since the gateway started serving.",
            registry=registry,
        )
        self.gc_pauses = Histogram(
            "tidegate_gc_full_pause_seconds",
            "Duration of each full (generation-2) garbage collection; it holds the event loop.",
            buckets=_GC_BUCKETS,
            registry=registry,
        )
        self.worst_gc_pause = Gauge(
            "tidegate_gc_full_pause_worst_seconds",
            "The longest full garbage collection since the gateway started serving.",
            registry=registry,
        )
        self._worst_stall_s = 0.0
        self._worst_gc_s = 0.0
        self._gc_started = 0.0
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        gc.callbacks.append(self._on_gc)
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self._interval_s
        self._timer = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        # uvloop's timers have millisecond resolution: up to ~1 ms late is the clock, not a stall.
        late = max(0.0, self._loop.time() - self._due)
        self.stalls.observe(late)
        if late > self._worst_stall_s:
            self._worst_stall_s = late
            self.worst_stall.set(late)
        self._schedule()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != _FULL:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_started
        self.gc_pauses.observe(pause)
        if pause > self._worst_gc_s:
            self._worst_gc_s = pause
            self.worst_gc_pause.set(pause)


@asynccontextmanager
async def watch_loop_stalls(registry: CollectorRegistry) -> AsyncIterator[LoopStallProbe]:
    """Run the probes for the body's duration (the gateway's serving life)."""
    probe = LoopStallProbe(registry)
    probe.start()
    try:
        yield probe
    finally:
        probe.stop()
