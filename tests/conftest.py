from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.gateway import RunningGateway, run_gateway
from tidegate_testing.fake_server import FakeUpstream

pytest_plugins = ["tests.store_fixtures"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream(model="fake-model")
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture
async def gateway(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[RunningGateway]:
    async with run_gateway(tmp_path, upstreams=[fake], idle_timeout_s=2.0) as running:
        yield running
