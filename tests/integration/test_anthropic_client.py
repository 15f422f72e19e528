"""The Anthropic provider (``AnthropicClient``) against the fake Anthropic API over real HTTP.

The fake rejects what the real API rejects, so every request that succeeds here was translated
into a valid Messages request; the client's output is checked as the OpenAI shapes the gateway
relays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tidegate.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from tidegate.protocol.requests import CompletionRequest
from tidegate.protocol.sse import DONE_PAYLOAD, SSESplitter, event_data
from tidegate.routing.replicas import Replica
from tidegate.upstream.anthropic import AnthropicClient
from tidegate.upstream.exchange import Provider, UpstreamResponse, UpstreamTimeouts
from tidegate_testing.fake_anthropic import FakeAnthropic, FakeAnthropicBehaviour, FakeToolUse

KEY = "sk-ant-test-0123456789abcdef"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic(model="claude-fake", api_key=KEY, behaviour=FakeAnthropicBehaviour())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[AnthropicClient]:
    async with aiohttp.ClientSession() as session:
        client = AnthropicClient(session=session, timeouts=UpstreamTimeouts(total_s=10, idle_s=5))
        provider: Provider = client  # mypy checks it is a Provider like UpstreamClient
        assert provider is client
        yield client


def replica(fake: FakeAnthropic, api_key: str | None = KEY) -> Replica:
    return Replica(
        id="claude-1",
        model="claude",
        base_url=fake.base_url,
        upstream_model=fake.model,
        api_key=api_key,
        provider="anthropic",
    )


def chat(**fields: Any) -> bytes:
    body = {
        "model": "claude-fake",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "say some tokens"},
        ],
        **fields,
    }
    return orjson.dumps(body)


async def post(
    client: AnthropicClient,
    target: Replica,
    path: str,
    body: bytes,
    *,
    request_id: str,
    extra_headers: dict[str, str] | None = None,
) -> UpstreamResponse[Replica]:
    """Open an exchange for a raw OpenAI body, sent as the model it names."""
    request = CompletionRequest(
        "chat" if path == "/chat/completions" else "completions", orjson.loads(body)
    )
    return await client.open(
        target, request, model=request.model, request_id=request_id, extra_headers=extra_headers
    )


async def complete(client: AnthropicClient, target: Replica, body: bytes) -> dict[str, Any]:
    response = await post(client, target, "/chat/completions", body, request_id="req-1")
    result: dict[str, Any] = orjson.loads((await response.read()).body)
    assert target.outstanding == 0  # read() ended the exchange, lease and all
    return result


async def stream(client: AnthropicClient, target: Replica, body: bytes) -> list[Any]:
    """The payloads of the OpenAI events, as the gateway's splitter cuts them."""
    response = await post(client, target, "/chat/completions", body, request_id="req-2")
    splitter = SSESplitter()
    payloads: list[Any] = []
    try:
        async for chunk in response.chunks():
            for event in splitter.feed(chunk):
                data = event_data(event)
                payloads.append("[DONE]" if data == DONE_PAYLOAD else orjson.loads(data or b""))
    finally:
        response.close()
    assert target.outstanding == 0
    assert splitter.pending == b""
    return payloads


async def test_non_streaming_reply_is_a_chat_completion(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    fake.behaviour.tokens = 3
    fake.behaviour.cache_read_tokens = 4
    target = replica(fake)
    response = await post(
        client,
        target,
        "/chat/completions",
        chat(max_tokens=100, temperature=0.2, user="u-1", seed=3),
        request_id="req-7",
        extra_headers={"traceparent": "00-abc-def-01", "x-api-key": "client-supplied"},
    )
    reply = orjson.loads((await response.read()).body)

    assert reply["id"].startswith("chatcmpl-msg_")
    assert reply["object"] == "chat.completion"
    assert reply["model"] == "claude-fake"
    assert reply["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "tok tok tok "},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert reply["usage"] == {
        "prompt_tokens": 6 + 4,  # "You are terse." + "say some tokens", plus the cached ones
        "completion_tokens": 3,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    assert fake.requests[-1] == {
        "model": "claude-fake",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "say some tokens"}],
        "temperature": 0.2,
        "metadata": {"user_id": "u-1"},
    }
    headers = fake.request_headers[-1]
    assert headers["x-api-key"] == KEY  # the configured key, never the client's
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["traceparent"] == "00-abc-def-01"
    assert headers["x-request-id"] == "req-7"
    assert "authorization" not in headers


async def test_max_tokens_defaults_and_caps_the_reply(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    reply = await complete(client, replica(fake), chat(max_completion_tokens=2))
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 2
    await complete(client, replica(fake), chat())
    assert fake.requests[-1]["max_tokens"] == 4096


async def test_stop_sequences_reach_anthropic_and_stop_reads_as_stop(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    fake.behaviour.stop_at_token = 1
    reply = await complete(client, replica(fake), chat(stop="END"))
    assert fake.requests[-1]["stop_sequences"] == ["END"]
    assert reply["choices"][0]["message"]["content"] == "tok "
    assert reply["choices"][0]["finish_reason"] == "stop"


async def test_stream_is_the_exact_openai_chunk_sequence(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    fake.behaviour.tokens = 3
    body = chat(stream=True, stream_options={"include_usage": True})
    payloads = await stream(client, replica(fake), body)

    assert fake.requests[-1]["stream"] is True
    assert "stream_options" not in fake.requests[-1]
    head = {k: payloads[0][k] for k in ("id", "object", "created", "model")}
    assert head["object"] == "chat.completion.chunk"
    assert head["model"] == "claude-fake"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    usage = {
        "prompt_tokens": 6,
        "completion_tokens": 3,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert payloads == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "tok "}),
        chunk({"content": "tok "}),
        chunk({"content": "tok "}),
        chunk({}, "stop"),
        {**head, "choices": [], "usage": usage},
        "[DONE]",
    ]


async def test_tool_calls_both_ways_and_the_tool_result_round_trip(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    fake.behaviour.tokens = 1
    fake.behaviour.tool_use = FakeToolUse("get_weather", {"city": "Oslo"}, id="toolu_77")
    target = replica(fake)
    tools = {"tools": [WEATHER_TOOL], "tool_choice": "required"}

    reply = await complete(client, target, chat(**tools))
    message = reply["choices"][0]["message"]
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [
        {
            "id": "toolu_77",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        }
    ]
    assert fake.requests[-1]["tool_choice"] == {"type": "any"}
    assert fake.requests[-1]["tools"][0]["name"] == "get_weather"

    payloads = await stream(client, target, chat(stream=True, **tools))
    deltas = [p["choices"][0]["delta"] for p in payloads[:-2]]
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_77",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Oslo"}'
    assert payloads[-3]["choices"][0]["finish_reason"] == "tool_calls"

    fake.behaviour.tool_use = None
    conversation = [
        {"role": "user", "content": "Weather in Oslo?"},
        message,
        {"role": "tool", "tool_call_id": "toolu_77", "content": "4C and snowing"},
    ]
    final = await complete(client, target, chat(messages=conversation, **tools))
    assert final["choices"][0]["finish_reason"] == "stop"  # the fake accepted the shape
    assert fake.requests[-1]["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_77", "content": "4C and snowing"}
        ],
    }


@pytest.mark.parametrize(
    ("fault", "status", "code", "words"),
    [
        ("invalid", 400, "upstream_rejected", "told to reject"),
        ("rate_limited", 502, None, "rate-limited"),
        ("overloaded", 502, None, "HTTP 529 overloaded_error"),
        ("server_error", 502, None, "HTTP 500 api_error"),
    ],
)
async def test_status_errors_map_like_the_openai_client(
    fake: FakeAnthropic,
    client: AnthropicClient,
    fault: Any,
    status: int,
    code: str | None,
    words: str,
) -> None:
    fake.behaviour.fault = fault
    with pytest.raises(UpstreamError) as caught:
        await post(client, replica(fake), "/chat/completions", chat(), request_id="r")
    error = caught.value
    assert (error.kind, error.status, error.code) == ("status", status, code)
    assert words in error.message


async def test_anthropic_rejecting_the_translation_keeps_its_message_as_a_400(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await post(
            client, replica(fake), "/chat/completions", chat(temperature=1.5), request_id="r"
        )
    assert (caught.value.status, caught.value.code) == (400, "upstream_rejected")
    assert "temperature" in caught.value.message


@pytest.mark.parametrize("api_key", ["sk-ant-wrong-key-0000", None])
async def test_a_refused_key_is_the_operators_problem_and_is_never_echoed(
    fake: FakeAnthropic, client: AnthropicClient, api_key: str | None
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await post(client, replica(fake, api_key), "/chat/completions", chat(), request_id="r")
    error = caught.value
    assert (error.kind, error.status) == ("status", 502)
    assert "operator must fix the api_key" in error.message
    assert "HTTP 401 authentication_error" in error.message
    if api_key is not None:
        assert api_key not in error.message
        assert fake.request_headers[-1]["x-api-key"] == api_key
    else:
        assert "x-api-key" not in fake.request_headers[-1]


async def test_an_unknown_model_is_a_502(fake: FakeAnthropic, client: AnthropicClient) -> None:
    with pytest.raises(UpstreamError) as caught:
        await post(client, replica(fake), "/chat/completions", chat(model="nope"), request_id="r")
    assert (caught.value.status, caught.value.kind) == (502, "status")
    assert "HTTP 404 not_found_error" in caught.value.message


async def test_requests_anthropic_cannot_serve_fail_before_any_io(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    with pytest.raises(InvalidRequestError, match="only answers chat completions"):
        await post(client, replica(fake), "/completions", b'{"prompt": "x"}', request_id="r")
    with pytest.raises(InvalidRequestError) as caught:
        await post(client, replica(fake), "/chat/completions", chat(n=2), request_id="r")
    assert caught.value.param == "n"
    assert fake.requests == []


async def test_error_event_mid_stream_becomes_an_in_band_error_and_the_stream_ends(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    fake.behaviour.fault = "error_mid_stream"
    fake.behaviour.fault_after_tokens = 2
    payloads = await stream(client, replica(fake), chat(stream=True))
    contents = [p["choices"][0]["delta"].get("content") for p in payloads[:-1]]
    assert contents == ["", "tok ", "tok "]
    assert payloads[-1] == {
        "error": {
            "message": "The Anthropic API failed mid-stream: Overloaded",
            "type": "upstream_error",
            "param": None,
            "code": "overloaded_error",
        }
    }


async def test_a_dropped_stream_is_a_disconnect(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    fake.behaviour.fault = "drop_mid_stream"
    with pytest.raises(UpstreamError) as caught:
        await stream(client, replica(fake), chat(stream=True))
    assert caught.value.kind == "disconnect"


async def test_silence_is_a_timeout(fake: FakeAnthropic) -> None:
    fake.behaviour.first_token_delay_s = 2.0
    async with aiohttp.ClientSession() as session:
        client = AnthropicClient(session=session, timeouts=UpstreamTimeouts(idle_s=0.2))
        with pytest.raises(UpstreamTimeoutError):
            await complete(client, replica(fake), chat())


async def test_an_unreachable_replica_is_a_connect_error(
    fake: FakeAnthropic, client: AnthropicClient
) -> None:
    target = replica(fake)
    await fake.stop()
    with pytest.raises(UpstreamError) as caught:
        await post(client, target, "/chat/completions", chat(), request_id="r")
    assert caught.value.kind == "connect"
