"""tidegate in front of the real vLLM CPU engine serving the bundled model, driven by `openai`.

One gateway (with its supervised replica) serves every test in this module, in order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
import pytest_asyncio
from pydantic import SecretStr

from tests.support.gateway import ADMIN_KEY, RunningGateway, free_port, serve
from tidegate.config import Config
from tidegate.engines.engine_metrics import parse_engine_metrics
from tidegate.engines.state_file import STATE_FILE_NAME, ReplicaRecord, read_state

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


async def _wait_ready(gateway: RunningGateway, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{gateway.url}/readyz") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.5)
    raise AssertionError(f"the gateway was not ready within {timeout_s} s")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(engine_config: Config) -> AsyncIterator[RunningGateway]:
    config = engine_config.model_copy(
        update={
            "admin_key": SecretStr(ADMIN_KEY),
            "server": engine_config.server.model_copy(update={"port": free_port()}),
        }
    )
    async with serve(config) as running:
        await _wait_ready(running, timeout_s=240)
        yield running


def _client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)


def _replica(gateway: RunningGateway) -> ReplicaRecord:
    snapshot = read_state(gateway.config.state_dir / STATE_FILE_NAME)
    assert snapshot is not None, "the supervisor wrote no engines.json"
    return snapshot.replicas[0]


async def _requests_running(gateway: RunningGateway) -> float:
    """vllm:num_requests_running, read from the replica's own /metrics."""
    port = _replica(gateway).port
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            sample = parse_engine_metrics(await response.text())
    assert sample.requests_running is not None
    return sample.requests_running


async def test_non_streamed_chat_answers_paris(gateway: RunningGateway) -> None:
    response = await _client(gateway).chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=32,  # type: ignore[arg-type]
    )
    assert "Paris" in (response.choices[0].message.content or "")
    assert response.usage is not None and response.usage.completion_tokens > 0
    line = gateway.access_lines()[-1]
    assert line["outcome"] == "ok" and line["replica"] == "r0"
    assert line["completion_tokens"] == response.usage.completion_tokens


async def test_streamed_chat_answers_paris(gateway: RunningGateway) -> None:
    stream = await _client(gateway).chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=32,
        stream=True,  # type: ignore[arg-type]
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    line = gateway.access_lines()[-1]
    assert line["completion_tokens"] > 0 and line["ttft_ms"] is not None


async def test_client_disconnect_mid_stream_ends_the_request_in_vllm(
    gateway: RunningGateway,
) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = orjson.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": 1500,
            "temperature": 1.0,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        }
    )
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    for _ in range(5):  # a few tokens in: the engine is generating
        await reader.readuntil(b"\n\n")
    assert await _requests_running(gateway) >= 1
    writer.close()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        running = await _requests_running(gateway)
        if running == 0:
            break
        await asyncio.sleep(0.1)
    assert running == 0, "vLLM still runs the request 2 s after the client went away"


async def test_killed_replica_is_restarted_and_serves_again(gateway: RunningGateway) -> None:
    pid = _replica(gateway).pid
    assert pid is not None
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    async with aiohttp.ClientSession() as http:
        # While it reloads, requests get a clear 503 (or 502 if they race the crash).
        deadline = time.monotonic() + 10
        status = 200
        while time.monotonic() < deadline and status == 200:
            async with http.post(
                f"{gateway.base_url}/chat/completions",
                json={"model": MODEL, "messages": QUESTION, "max_tokens": 4},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            ) as response:
                status = response.status
                if status == 503:
                    assert response.headers["retry-after"]
            await asyncio.sleep(0.2)
        assert status in (502, 503)
    await _wait_ready(gateway, timeout_s=240)
    response = await _client(gateway).chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=32,  # type: ignore[arg-type]
    )
    assert "Paris" in (response.choices[0].message.content or "")
