"""The fake upstream over real HTTP on loopback: vLLM's response shapes, timing and every fault."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "three word prompt"}]}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream(model="m", behaviour=FakeBehaviour(tokens=6))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def oai(upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key="x", max_retries=0) as c:
        yield c


async def sse_events(response: aiohttp.ClientResponse) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order, read line by line."""
    events = []
    async for line in response.content:
        if line.startswith(b"data: "):
            events.append(line[len(b"data: ") :].rstrip(b"\n"))
    return events


async def test_models_health_and_metrics(
    oai: openai.AsyncOpenAI, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    models = await oai.models.list()
    assert [m.id for m in models.data] == ["m"]

    root = upstream.base_url.removesuffix("/v1")
    async with http.get(f"{root}/health") as r:
        assert r.status == 200
    async with http.get(f"{root}/metrics") as r:
        text = await r.text()
    assert 'vllm:num_requests_running{model_name="m"} 0.0' in text
    assert 'vllm:num_requests_waiting{model_name="m"} 0.0' in text
    assert 'vllm:kv_cache_usage_perc{model_name="m"} 0.0' in text


async def test_chat_completion_is_shaped_like_vllm(
    oai: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    reply = await oai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "three word prompt"}]
    )
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == "m"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "tok " * 6
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 6)
    assert reply.usage.total_tokens == 9
    assert upstream.requests[-1]["messages"][0]["content"] == "three word prompt"
    assert (upstream.completed, upstream.active, upstream.cancelled) == (1, 0, 0)


async def test_text_completion_honours_max_tokens(
    oai: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    reply = await oai.completions.create(model="m", prompt="a b", max_tokens=2)
    assert reply.id.startswith("cmpl-")
    assert reply.object == "text_completion"
    assert reply.choices[0].text == "tok tok "
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 2)


async def test_chat_stream_with_usage(oai: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    stream = await oai.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hello there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = chunks[1:-1]
    assert [c.choices[0].delta.content for c in content] == ["tok "] * 6
    assert [c.choices[0].finish_reason for c in content] == [None] * 5 + ["length"]
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 6)


async def test_text_stream_without_usage_ends_with_done(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    body = {"model": "m", "prompt": "x", "stream": True}
    async with http.post(f"{upstream.base_url}/completions", json=body) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = await sse_events(r)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["text"] for c in chunks] == ["tok "] * 6
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)


async def test_unknown_model_is_an_openai_404(
    oai: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await oai.chat.completions.create(
            model="other", messages=[{"role": "user", "content": "hi"}]
        )
    assert "other" in info.value.message


async def test_status_500_fault(
    oai: openai.AsyncOpenAI, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.behaviour.fault = "status_500"
    async with http.post(f"{upstream.base_url}/chat/completions", json=CHAT) as r:
        assert r.status == 500
        error = (await r.json())["error"]
    assert error["code"] == 500 and error["message"]
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )


async def test_malformed_sse_fault(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    upstream.behaviour.fault = "malformed_sse"
    upstream.behaviour.fault_after_tokens = 2
    async with http.post(
        f"{upstream.base_url}/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        events = await sse_events(r)
    # role chunk, two good tokens, the broken event, then the rest of the stream
    assert events[3] == b"{not json"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(events[3])
    good = [orjson.loads(e) for e in events[:3] + events[4:-1]]
    assert len(good) == 7
    assert events[-1] == b"[DONE]"


async def test_drop_mid_stream_fault(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    upstream.behaviour.fault = "drop_mid_stream"
    upstream.behaviour.fault_after_tokens = 3
    received: list[Any] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            f"{upstream.base_url}/chat/completions", json={**CHAT, "stream": True}
        ) as r:
            async for line in r.content:
                if line.startswith(b"data: "):
                    received.append(orjson.loads(line[6:]))
    assert len(received) == 4  # role chunk + three tokens, and no [DONE]
    assert await upstream.wait_idle(1.0)


async def test_hang_fault_counts_the_client_going_away(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.behaviour.fault = "hang"
    timeout = aiohttp.ClientTimeout(total=0.2)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(f"{upstream.base_url}/chat/completions", json=CHAT, timeout=timeout):
            pass
    assert await upstream.wait_idle(2.0)
    assert (upstream.cancelled, upstream.completed) == (1, 0)


async def test_client_disconnect_mid_stream_is_counted(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.behaviour.token_delay_s = 0.05
    root = upstream.base_url.removesuffix("/v1")
    async with http.post(
        f"{upstream.base_url}/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        await r.content.readline()
        assert upstream.active == 1
        async with http.get(f"{root}/metrics") as m:
            assert 'vllm:num_requests_running{model_name="m"} 1.0' in await m.text()
        r.close()
    assert await upstream.wait_idle(2.0)
    assert (upstream.cancelled, upstream.completed, upstream.active) == (1, 0, 0)


async def test_token_timing(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    upstream.behaviour = FakeBehaviour(tokens=4, first_token_delay_s=0.15, token_delay_s=0.05)
    arrivals: list[float] = []
    start = time.perf_counter()
    async with http.post(
        f"{upstream.base_url}/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        async for line in r.content:
            if line.startswith(b"data: {") and b'"content":"tok "' in line:
                arrivals.append(time.perf_counter() - start)
    assert len(arrivals) == 4
    assert arrivals[0] >= 0.14
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert all(g >= 0.04 for g in gaps)

    start = time.perf_counter()
    async with http.post(f"{upstream.base_url}/chat/completions", json=CHAT) as r:
        await r.read()
    assert time.perf_counter() - start >= 0.14


async def test_invalid_json_is_a_400(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{upstream.base_url}/chat/completions", data=b"{nope") as r:
        assert r.status == 400
        assert "error" in await r.json()


async def test_it_reports_the_most_requests_it_had_in_flight(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.behaviour.first_token_delay_s = 0.2
    root = upstream.base_url.removesuffix("/v1")
    body = {"model": "m", "prompt": "a b", "max_tokens": 2}

    async def post() -> int:
        async with http.post(f"{upstream.base_url}/completions", json=body) as r:
            return r.status

    assert await asyncio.gather(*(post() for _ in range(5))) == [200] * 5
    async with http.get(f"{root}/fake/in-flight") as r:
        stats = await r.json()
    assert stats == {"in_flight": 0, "peak_in_flight": 5, "completed": 5, "cancelled": 0}
    async with http.post(f"{root}/fake/in-flight/reset") as r:
        assert (await r.json())["peak_in_flight"] == 0
