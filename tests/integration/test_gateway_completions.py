"""The completion routes through a real gateway and a real fake upstream, over loopback HTTP."""

from __future__ import annotations

import aiohttp
import openai
import orjson
import pytest

from tests.support.gateway import ADMIN_KEY, RunningGateway
from tidegate_testing.fake_server import FakeUpstream

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello there"}]}


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)


async def test_chat_completion_with_openai_client(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 5
    response = await client(gateway).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "say five words"}]
    )
    assert response.choices[0].message.content
    assert response.usage is not None and response.usage.completion_tokens == 5
    assert fake.requests[-1]["messages"][0]["content"] == "say five words"
    [line] = [entry for entry in gateway.access_lines() if entry["route"] == "chat"]
    assert line["outcome"] == "ok" and line["status"] == 200
    assert line["completion_tokens"] == 5 and line["prompt_tokens"] > 0
    assert line["replica"] == "u0" and line["model"] == "fake-model"
    assert line["key_id"].startswith("key_")


async def test_streamed_chat_relays_every_chunk_and_hides_usage_unless_asked(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 8
    stream = await client(gateway).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.count("tok") == 8
    assert all(c.choices for c in chunks), "the usage-only chunk must be dropped"
    assert chunks[-1].choices[0].finish_reason == "length"
    # The gateway asked for usage on the client's behalf, so it can meter the stream.
    assert fake.requests[-1]["stream_options"] == {"include_usage": True}
    line = gateway.access_lines()[-1]
    assert line["completion_tokens"] == 8 and line["stream"] is True
    assert line["ttft_ms"] is not None and line["ttft_ms"] <= line["duration_ms"]


async def test_streamed_chat_keeps_usage_chunk_when_client_asks(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 3
    stream = await client(gateway).chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_text_completion_streamed_and_not(
    gateway: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 4
    api = client(gateway)
    plain = await api.completions.create(model="fake-model", prompt="once upon")
    assert plain.choices[0].text.count("tok") == 4
    streamed = await api.completions.create(model="fake-model", prompt="once upon", stream=True)
    text = "".join([c.choices[0].text async for c in streamed if c.choices])
    assert text.count("tok") == 4


async def test_models_lists_configured_models(gateway: RunningGateway) -> None:
    models = await client(gateway).models.list()
    assert [m.id for m in models.data] == ["fake-model"]


async def test_every_response_carries_a_request_id(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
            assert r.headers["x-request-id"].startswith("req_")
        async with http.get(f"{gateway.url}/healthz") as r:
            assert r.headers["x-request-id"]
        headers = {**AUTH, "x-request-id": "client-id-42"}
        async with http.post(
            f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers
        ) as r:
            assert r.headers["x-request-id"] == "client-id-42"
        async with http.get(f"{gateway.url}/nowhere") as r:
            assert r.status == 404 and r.headers["x-request-id"]
            assert "Unknown path" in (await r.json())["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_receives_the_public_fields_unchanged(
    gateway: RunningGateway, fake: FakeUpstream, stream: bool
) -> None:
    body = {**CHAT, "temperature": 0.2, "top_k": 5, "stream": stream, "seed": 7}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway.base_url}/chat/completions", json=body, headers=AUTH) as r:
            assert r.status == 200
            await r.read()
    sent = fake.requests[-1]
    assert sent["top_k"] == 5 and sent["temperature"] == 0.2 and sent["seed"] == 7


async def test_metrics_count_requests_with_fixed_labels(gateway: RunningGateway) -> None:
    api = client(gateway)
    await api.chat.completions.create(model="fake-model", messages=CHAT["messages"])  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        await api.chat.completions.create(model="no-such-model", messages=CHAT["messages"])  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as r:
            text = await r.text()
    assert 'tidegate_requests_total{model="fake-model",outcome="ok",route="chat"} 1.0' in text
    # A client-chosen model name never becomes a label value.
    assert "no-such-model" not in text
    assert 'tidegate_requests_total{model="unknown",outcome="validation",route="chat"} 1.0' in text
    assert "tidegate_completion_tokens_total" in text


async def test_health_and_readiness(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.url}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{gateway.url}/readyz") as r:
            assert r.status == 200
            assert orjson.loads(await r.read())["models"] == {"fake-model": True}
