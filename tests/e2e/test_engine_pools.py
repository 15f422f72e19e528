"""Two local pools of real vLLM replicas in one gateway, under different engine profiles.

The main pool (served_model_name) and a candidate pool with its own profile (fewer sequences,
float32 weights) both start, both serve the one public model name, and the model's route
reaches the candidate only after the main pool. Rollout tests build on this gateway shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.support.gateway import ADMIN_KEY, RunningGateway, free_port, serve
from tidegate.config import Config, EnginePoolConfig, EngineProfile
from tidegate.engines.state_file import STATE_FILE_NAME, ReplicaRecord, read_state

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MODEL = "smollm2-135m-instruct"
CANDIDATE = "smollm2-candidate"


def _records(gateway: RunningGateway) -> dict[str, ReplicaRecord]:
    snapshot = read_state(gateway.config.state_dir / STATE_FILE_NAME)
    return {} if snapshot is None else {r.id: r for r in snapshot.replicas}


async def _wait_all_ready(gateway: RunningGateway, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = _records(gateway)
        if len(records) == 2 and all(r.state == "ready" for r in records.values()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"both pools' replicas were not ready within {timeout_s} s: {records}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(engine_config: Config) -> AsyncIterator[RunningGateway]:
    main = engine_config.engines.profile
    assert (main.dtype, main.max_num_seqs) == ("auto", 16)  # the candidate must differ
    candidate = EnginePoolConfig(
        name=CANDIDATE, profile=EngineProfile(max_num_seqs=8, dtype="float32")
    )
    config = engine_config.model_copy(
        update={
            "admin_key": SecretStr(ADMIN_KEY),
            "server": engine_config.server.model_copy(update={"port": free_port()}),
            "engines": engine_config.engines.model_copy(update={"pools": [candidate]}),
        }
    )
    async with serve(config) as running:
        await _wait_all_ready(running, timeout_s=280)  # pytest-timeout: 300 s
        yield running


async def test_both_pools_run_their_own_profile(gateway: RunningGateway) -> None:
    records = _records(gateway)
    assert {(r.id, r.pool, r.model) for r in records.values()} == {
        ("r0", MODEL, MODEL),
        (f"{CANDIDATE}-r0", CANDIDATE, MODEL),
    }
    # Each log starts with the command line the supervisor ran.
    main_log = Path(records["r0"].log).read_text()
    candidate_log = Path(records[f"{CANDIDATE}-r0"].log).read_text()
    assert "--max-num-seqs 16 " in main_log and "--dtype auto " in main_log
    assert "--max-num-seqs 8 " in candidate_log and "--dtype float32 " in candidate_log


async def test_requests_go_to_the_main_pool(gateway: RunningGateway) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=8,
            temperature=0,
        )
        assert raw.headers.get("x-tidegate-backend") == f"{MODEL}/r0"
        assert raw.parse().choices[0].message.content


async def test_the_candidate_serves_the_same_public_name(gateway: RunningGateway) -> None:
    # No request selects a pool yet (splits and rollouts will): ask its engine directly.
    port = _records(gateway)[f"{CANDIDATE}-r0"].port
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-")
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content


async def test_each_pool_s_capacity_follows_its_profile(gateway: RunningGateway) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.url + "/metrics") as response,
    ):
        text = await response.text()
    capacity = {
        sample.labels["model"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "tidegate_pool_capacity"
        for sample in family.samples
    }
    assert capacity[MODEL] == 16 and capacity[CANDIDATE] == 8
