"""The event-loop probes: a callback that holds the loop shows as a stall, a full collection as
a GC pause, and stopping the probe unhooks it from the collector."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import CollectorRegistry

from tidegate.observability.loop_stalls import watch_loop_stalls


def _value(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_a_blocking_callback_is_reported_as_the_worst_stall() -> None:
    registry = CollectorRegistry()
    async with watch_loop_stalls(registry):
        await asyncio.sleep(0.05)
        time.sleep(0.12)  # holds the loop, as a slow synchronous step would
        await asyncio.sleep(0.05)
    worst = _value(registry, "tidegate_event_loop_stall_worst_seconds")
    assert 0.08 <= worst < 1.0
    assert _value(registry, "tidegate_event_loop_stall_seconds_count") >= 3


async def test_full_collections_are_timed_and_the_hook_is_removed_on_stop() -> None:
    registry = CollectorRegistry()
    async with watch_loop_stalls(registry) as probe:
        hook_count = len(gc.callbacks)
        gc.collect(1)  # a young collection is not counted
        gc.collect()
        gc.collect()
    assert _value(registry, "tidegate_gc_full_pause_seconds_count") == 2
    assert _value(registry, "tidegate_gc_full_pause_worst_seconds") > 0
    assert len(gc.callbacks) == hook_count - 1
    assert probe._on_gc not in gc.callbacks
