"""The planner's KV cache against what the real vLLM CPU engine reports for the same profile.

Each case plans the bundled model on CPU, starts vLLM with the engine profile the planner wrote
(through the supervisor, as `tidegate up` does), reads vLLM's "KV cache size: N tokens" line
from the replica log, and stops it. The cases run one after another (~40 s each).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tidegate.config import BUNDLED_MODEL, Config, EngineProfile, EnginesConfig
from tidegate.engines.dtype import cpu_kv_element_bytes
from tidegate.engines.shared_home import with_shared_engine
from tidegate.engines.supervisor import EngineSupervisor
from tidegate.observability.metrics import GatewayMetrics
from tidegate.plan.model_source import load_model_spec
from tidegate.plan.profile_yaml import engines_section
from tidegate.plan.recommend import PlanRequest, recommend_cpu
from tidegate.routing.replicas import RoutingTable

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

KV_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")
READY_TIMEOUT_S = 180.0


def reported_kv_tokens(logs_dir: Path) -> int:
    for log in sorted(logs_dir.glob("*.log")):
        found = KV_LINE.search(log.read_text(errors="replace"))
        if found:
            return int(found.group(1).replace(",", ""))
    raise AssertionError(f"no 'KV cache size' line in the logs under {logs_dir}")


@pytest.mark.parametrize(
    ("kv_space_gib", "context", "block_size"),
    [(1, 2048, None), (2, 2048, None), (3, 2048, 32), (2, 1000, None)],
    ids=["1GiB", "2GiB", "3GiB-block32", "2GiB-ctx1000"],
)
async def test_planner_matches_vllm_kv_cache(
    shared_engine_config: Config,
    tmp_path: Path,
    kv_space_gib: int,
    context: int,
    block_size: int | None,
) -> None:
    spec = load_model_spec(str(shared_engine_config.models_dir / "smollm2-135m-instruct"))
    request = PlanRequest(context=context, concurrency=16, block_size=block_size)
    plan = recommend_cpu(
        spec, request, kv_space_gib=kv_space_gib, kv_element_bytes=cpu_kv_element_bytes()
    )
    option = plan.options[0]
    section = engines_section(plan, option, model=BUNDLED_MODEL)["engines"]

    config = Config(
        engines=EnginesConfig(
            model=section["model"],
            served_model_name=section["served_model_name"],
            replicas=1,
            ready_timeout_s=240,
            stop_timeout_s=15.0,
            drain_grace_s=1.0,
            profile=EngineProfile(**section["profile"]),
        ),
    )
    config = with_shared_engine(config, home=tmp_path, shared=shared_engine_config)
    supervisor = EngineSupervisor(config=config, routing=RoutingTable(), metrics=GatewayMetrics())
    await supervisor.start()
    try:
        assert await supervisor.wait_ready(READY_TIMEOUT_S), supervisor.replicas[0].state
        vllm_tokens = reported_kv_tokens(config.logs_dir)
    finally:
        await supervisor.stop()

    planned = option.capacity.tokens
    print(
        f"\nKV {kv_space_gib} GiB, context {context}, block {option.capacity.block_size}: "
        f"planner {planned:,} tokens, vLLM {vllm_tokens:,} tokens"
    )
    assert abs(planned - vllm_tokens) <= 0.02 * vllm_tokens
