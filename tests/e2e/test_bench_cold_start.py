"""`tidegate bench cold-start` against a fresh real vLLM replica started by the engine manager."""

from __future__ import annotations

import pytest

from tidegate.config import Config
from tidegate_bench import coldstart

pytestmark = [pytest.mark.e2e]


async def test_cold_start_of_a_real_engine_replica(engine_config: Config) -> None:
    async with coldstart.engine_replica(engine_config) as (spawned, base_url, model):
        result = await coldstart.measure(
            spawned_at=spawned,
            base_url=base_url,
            model=model,
            key=None,
            warm=3,
            max_tokens=8,
            ready_timeout_s=240,
            request_timeout_s=120,
        )
    assert result.first_error == ""
    assert 1.0 < result.ready_s < 240  # loading a model takes seconds, not milliseconds
    assert result.first_ttft_ms is not None and result.warm_ttft_ms is not None
    assert result.time_to_first_token_s is not None
    assert result.time_to_first_token_s >= result.ready_s
    assert result.ttft_ratio is not None and result.ttft_ratio > 0
    print(result.as_json())
