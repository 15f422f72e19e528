"""The gateway freezes its start-up heap, so full garbage collections (which hold the event
loop) skip it: without this, each one took 150 ms while a 50,000-line batch was validated."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import run_gateway
from tidegate.heap import freeze_startup_heap
from tidegate_testing.fake_server import FakeUpstream


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


async def test_a_started_gateway_has_frozen_its_heap(
    unfrozen: None, tmp_path: Path, fake: FakeUpstream
) -> None:
    assert gc.get_freeze_count() == 0
    async with run_gateway(tmp_path, upstreams=[fake]):
        frozen = gc.get_freeze_count()
    # Everything alive once started: modules, models, the app — far more than a few objects.
    assert frozen > 50_000


def test_freezing_leaves_nothing_for_a_full_collection_to_walk(unfrozen: None) -> None:
    held = [[index] for index in range(10_000)]  # long-lived, like start-up state
    assert freeze_startup_heap() >= len(held)
    walked = {id(o) for o in gc.get_objects(generation=2)}
    assert not any(id(item) in walked for item in held)
