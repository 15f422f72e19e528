"""The gateway freezes its start-up heap, so full garbage collections (which hold the event
loop) skip it: without this, each one took 150 ms while a 50,000-line batch was validated. It
also raises the young threshold so request state in flight is not promoted by every young
collection; and it reports its worst event-loop stall and full-collection pause on /metrics."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import ADMIN_KEY, auth, run_gateway
from tidegate.heap import YOUNG_THRESHOLD, freeze_startup_heap
from tidegate_testing.fake_server import FakeUpstream


@pytest.fixture
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual
    gc.set_threshold(*thresholds)


async def test_a_started_gateway_has_frozen_its_heap(
    unfrozen: None, tmp_path: Path, fake: FakeUpstream
) -> None:
    assert gc.get_freeze_count() == 0
    gc.set_threshold(700, 10, 10)
    async with run_gateway(tmp_path, upstreams=[fake]) as gateway:
        frozen = gc.get_freeze_count()
        thresholds = gc.get_threshold()
        gc.collect()  # one full collection, timed by the gateway's probe
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.get("/metrics", headers=auth(ADMIN_KEY))
    # Everything alive once started: modules, models, the app — far more than a few objects.
    assert frozen > 50_000
    assert thresholds == (YOUNG_THRESHOLD, 10, 10)
    assert response.status_code == 200
    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in response.text.splitlines()
        if line.startswith("tidegate_gc_full_pause") or line.startswith("tidegate_event_loop")
    }
    assert metrics["tidegate_gc_full_pause_seconds_count"] >= 1
    assert 0 < metrics["tidegate_gc_full_pause_worst_seconds"] < 5
    assert "tidegate_event_loop_stall_worst_seconds" in metrics


def test_freezing_leaves_nothing_for_a_full_collection_to_walk(unfrozen: None) -> None:
    held = [[index] for index in range(10_000)]  # long-lived, like start-up state
    assert freeze_startup_heap() >= len(held)
    walked = {id(o) for o in gc.get_objects(generation=2)}
    assert not any(id(item) in walked for item in held)
