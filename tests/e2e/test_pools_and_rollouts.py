"""Two local pools of real vLLM replicas in one gateway, under different engine profiles.

The main pool (served_model_name) and a candidate pool with its own profile (fewer sequences,
float32 weights) both start, both serve the one public model name, and the model's route
reaches the candidate only after the main pool. Then the candidate goes through what an
operator does with it: shadow traffic with comparisons, a staged rollout to 100%, a rollback.
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
from tidegate.config import Config, EnginePoolConfig, EngineProfile, RolloutConfig
from tidegate.engines.dtype import engine_dtype
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
            "rollouts": RolloutConfig(
                sync_interval_s=0.5, controller_interval_s=0.5, stats_flush_interval_s=0.5
            ),
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
    main_dtype = engine_dtype("auto", "cpu")  # float32: auto on a CPU
    assert "--max-num-seqs 16 " in main_log and f"--dtype {main_dtype} " in main_log
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
        http.get(
            gateway.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as response,
    ):
        text = await response.text()
    capacity = {
        sample.labels["model"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "tidegate_pool_capacity"
        for sample in family.samples
    }
    assert capacity[MODEL] == 16 and capacity[CANDIDATE] == 8


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _chat(gateway: RunningGateway, session: str) -> str:
    """One chat turn in a sticky session; returns the pool that served it."""
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        temperature=0,
        extra_headers={"x-tidegate-session-id": session},
    )
    assert raw.parse().choices[0].message.content
    return raw.headers.get("x-tidegate-backend", "").split("/")[0]


async def test_shadow_traffic_to_the_candidate_is_compared(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession(gateway.url, headers=_admin()) as http:
        body = {"weights": {MODEL: 1}, "shadow": {"pool": CANDIDATE, "sample": 1.0}}
        async with http.put(f"/admin/models/{MODEL}/traffic", json=body) as response:
            assert response.status == 200, await response.text()
        for index in range(4):
            assert await _chat(gateway, f"shadow-{index}") == MODEL  # the primary is unchanged
        deadline = time.monotonic() + 60
        while True:
            async with http.get(f"/admin/models/{MODEL}/shadow") as response:
                summary = await response.json()
            pairs = summary["data"]
            if pairs and pairs[0]["count"] >= 4:
                break
            assert time.monotonic() < deadline, summary
            await asyncio.sleep(1)
        assert pairs[0]["shadow_pool"] == CANDIDATE
        body = {"shadow": None}
        async with http.put(f"/admin/models/{MODEL}/traffic", json=body) as response:
            assert response.status == 200, await response.text()


async def test_a_staged_rollout_promotes_the_candidate(
    gateway: RunningGateway,
) -> None:
    async with aiohttp.ClientSession(gateway.url, headers=_admin()) as http:
        body = {
            "model": MODEL,
            "candidate_pool": CANDIDATE,
            "steps": [50, 100],
            "hold_s": 3,
            # Two engines on two shared cores: latency is judged loosely, errors strictly.
            "gates": {"min_samples": 6, "ttft_p95_ratio": 5.0, "itl_p95_ratio": 5.0},
        }
        async with http.post("/admin/rollouts", json=body) as response:
            assert response.status == 201, await response.text()
            rollout_id = (await response.json())["id"]
        served: dict[str, set[str]] = {}
        deadline = time.monotonic() + 240
        state = "running"
        turn = 0
        while state == "running":
            assert time.monotonic() < deadline, f"rollout {rollout_id} still running"
            pools = await asyncio.gather(*(_chat(gateway, f"s{(turn + i) % 12}") for i in range(4)))
            for offset, pool in enumerate(pools):
                served.setdefault(f"s{(turn + offset) % 12}", set()).add(pool)
            turn += 4
            async with http.get(f"/admin/rollouts/{rollout_id}") as response:
                state = (await response.json())["state"]
        assert state == "promoted"
        assert {pool for pools in served.values() for pool in pools} == {MODEL, CANDIDATE}
        assert await _chat(gateway, "after-promotion") == CANDIDATE
        async with http.get(f"/admin/rollouts/{rollout_id}/report?format=md") as response:
            report = await response.text()
        assert "promoted" in report and CANDIDATE in report

        # Going back to the earlier version is one call too.
        body = {"weights": {MODEL: 1}, "stable_pool": MODEL}
        async with http.put(f"/admin/models/{MODEL}/traffic", json=body) as response:
            assert response.status == 200, await response.text()
        assert await _chat(gateway, "after-going-back") == MODEL
