"""Prefix affinity across two real vLLM replicas supervised by one gateway, driven by `openai`.

The tests run in order against one gateway: conversations stick to a replica, different ones
spread, and when one replica's vLLM is killed the other serves its conversations.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from pydantic import SecretStr

from tests.support.gateway import ADMIN_KEY, RunningGateway, free_port, serve
from tidegate.config import Config, PoolConfig, RoutingConfig
from tidegate.engines.state_file import STATE_FILE_NAME, ReplicaRecord, read_state

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MODEL = "smollm2-135m-instruct"


def _records(gateway: RunningGateway) -> list[ReplicaRecord]:
    snapshot = read_state(gateway.config.state_dir / STATE_FILE_NAME)
    return [] if snapshot is None else list(snapshot.replicas)


async def _wait_all_ready(gateway: RunningGateway, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = _records(gateway)
        if len(records) == 2 and all(r.state == "ready" for r in records):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"both replicas were not ready within {timeout_s} s")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(engine_config: Config) -> AsyncIterator[RunningGateway]:
    config = engine_config.model_copy(
        update={
            "admin_key": SecretStr(ADMIN_KEY),
            "server": engine_config.server.model_copy(update={"port": free_port()}),
            "engines": engine_config.engines.model_copy(update={"replicas": 2}),
            "routing": RoutingConfig(pools=[PoolConfig(name=MODEL, balancer="prefix_affinity")]),
        }
    )
    async with serve(config) as running:
        await _wait_all_ready(running, timeout_s=300)
        yield running


def _opening(topic: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": f"You are a concise assistant who knows {topic} well."},
        {"role": "user", "content": f"Tell me one fact about {topic}."},
    ]


async def _turn(gateway: RunningGateway, messages: list[dict[str, Any]]) -> tuple[str, str]:
    """One chat turn; returns (the x-tidegate-backend header, the answer)."""
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )
    answer = raw.parse().choices[0].message.content or ""
    return raw.headers.get("x-tidegate-backend", ""), answer


async def _conversation(gateway: RunningGateway, topic: str, turns: int) -> list[str]:
    messages = _opening(topic)
    backends = []
    for turn in range(turns):
        backend, answer = await _turn(gateway, messages)
        backends.append(backend)
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"And another one, number {turn + 2}?"},
        ]
    return backends


async def test_every_turn_of_a_conversation_lands_on_one_replica(gateway: RunningGateway) -> None:
    backends = await _conversation(gateway, "lighthouses", turns=4)
    assert backends[0].startswith(f"{MODEL}/r"), backends
    assert len(set(backends)) == 1, backends


async def test_different_conversations_spread_over_both_replicas(gateway: RunningGateway) -> None:
    topics = ("rivers", "volcanoes", "owls", "bridges", "glaciers", "comets", "violins", "tea")
    openings = await asyncio.gather(*(_turn(gateway, _opening(t)) for t in topics))
    assert {backend for backend, _ in openings} == {f"{MODEL}/r0", f"{MODEL}/r1"}


async def test_a_killed_replica_s_conversations_move_to_the_other(
    gateway: RunningGateway,
) -> None:
    messages = _opening("lighthouses")
    home, _ = await _turn(gateway, messages)
    victim = next(r for r in _records(gateway) if home.endswith("/" + r.id))
    assert victim.pid is not None
    os.killpg(os.getpgid(victim.pid), signal.SIGKILL)
    killed_at = time.monotonic()
    # Within a few seconds the gateway has noticed (supervisor health check, or a refused
    # connection retried before the first byte) and the survivor serves the conversation.
    served: tuple[str, str] | None = None
    while time.monotonic() - killed_at < 5.0:
        try:
            served = await _turn(gateway, messages)
            break
        except openai.APIStatusError:
            await asyncio.sleep(0.2)
    assert served is not None, "no request succeeded within 5 s of the kill"
    assert served[0] != home
    for _ in range(3):
        backend, _ = await _turn(gateway, messages)
        assert backend == served[0]
