"""OpenAI <-> Anthropic Messages translation, both ways, with no I/O.

Translated requests are also checked against the fake Anthropic server's validator, which
rejects what the real API rejects, so a shape mistake fails here first.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tidegate.errors import InvalidRequestError
from tidegate.protocol.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProtocolError,
    chat_completion,
    error_details,
    finish_reason,
    messages_request,
)
from tidegate.protocol.anthropic_stream import ChunkTranslator
from tidegate.protocol.sse import DONE_PAYLOAD, SSESplitter, event_data
from tidegate_testing.fake_anthropic import request_problem

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def weather_call(call_id: str, arguments: str) -> dict[str, Any]:
    function = {"name": "get_weather", "arguments": arguments}
    return {"id": call_id, "type": "function", "function": function}


def translate(**fields: Any) -> dict[str, Any]:
    chat = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], **fields}
    request = messages_request(chat)
    assert request_problem(request) is None, request
    return request


def test_plain_request_hoists_system_defaults_max_tokens_and_drops_openai_only_fields() -> None:
    request = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "hi"},
        ],
        temperature=0.5,
        top_p=0.9,
        stop="END",
        user="alice",
        stream=True,
        stream_options={"include_usage": True},
        presence_penalty=0.5,
        frequency_penalty=0.1,
        seed=7,
        logit_bias={"1": 2},
        response_format={"type": "json_object"},
    )
    assert request == {
        "model": "claude-x",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "Be brief.\n\nUse metric units.",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "alice"},
    }


def test_max_completion_tokens_wins_and_stop_lists_pass_through() -> None:
    request = translate(max_tokens=50, max_completion_tokens=20, stop=["a", "b"])
    assert (request["max_tokens"], request["stop_sequences"]) == (20, ["a", "b"])
    assert translate(max_tokens=50)["max_tokens"] == 50


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "logprobs")],
)
def test_what_anthropic_cannot_do_is_a_clear_400(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        translate(**fields)
    assert caught.value.param == param
    assert "Anthropic" in caught.value.message
    assert translate(n=1, logprobs=False)["messages"]  # the harmless values pass


def test_images_become_base64_or_url_blocks() -> None:
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    request = translate(messages=[{"role": "user", "content": parts}])
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    with pytest.raises(InvalidRequestError, match="base64"):
        translate(
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "data:,x"}]}]
        )


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tools_and_tool_choice(tool_choice: Any, parallel: Any, expected: Any) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        fields["tool_choice"] = tool_choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    request = translate(**fields)
    assert request["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert request.get("tool_choice") == expected


def test_tool_conversation_becomes_alternating_tool_use_and_tool_result_turns() -> None:
    request = translate(
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    weather_call("toolu_1", '{"city": "Paris"}'),
                    weather_call("toolu_2", '{"city": "Oslo"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "toolu_2",
                "content": [{"type": "text", "text": "4C"}],
            },
            {"role": "user", "content": "Thanks, and tomorrow?"},
        ],
    )
    assert request["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "4C"},
                {"type": "text", "text": "Thanks, and tomorrow?"},
            ],
        },
    ]


def test_bad_tool_call_arguments_and_unknown_roles_are_400s() -> None:
    bad_call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
    with pytest.raises(InvalidRequestError, match="JSON object"):
        translate(messages=[{"role": "assistant", "content": None, "tool_calls": [bad_call]}])
    with pytest.raises(InvalidRequestError, match="role 'function'"):
        translate(messages=[{"role": "function", "name": "f", "content": "x"}])
    with pytest.raises(InvalidRequestError, match="function tools"):
        translate(tools=[{"type": "code_interpreter"}])


# -- responses ----------------------------------------------------------------------------------

MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 5,
        "output_tokens": 12,
    },
}


def test_message_becomes_a_chat_completion_with_tool_calls_and_cache_aware_usage() -> None:
    assert chat_completion(MESSAGE, created=1700000000) == {
        "id": "chatcmpl-msg_01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "toolu_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 45,
            "completion_tokens": 12,
            "total_tokens": 57,
            "prompt_tokens_details": {"cached_tokens": 30},
        },
    }


def test_tool_only_reply_has_null_content_and_malformed_replies_are_protocol_errors() -> None:
    tool_only = {**MESSAGE, "content": MESSAGE["content"][1:]}
    assert chat_completion(tool_only, created=0)["choices"][0]["message"]["content"] is None
    with pytest.raises(AnthropicProtocolError):
        chat_completion({"type": "error"}, created=0)
    with pytest.raises(AnthropicProtocolError):
        chat_completion({**MESSAGE, "content": [{"type": "text"}]}, created=0)


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_finish_reasons(stop_reason: str | None, expected: str | None) -> None:
    assert finish_reason(stop_reason) == expected


def test_error_details_reads_anthropic_error_bodies() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert error_details(body) == ("overloaded_error", "Overloaded")
    assert error_details(b"<html>bad gateway</html>") == ("api_error", "<html>bad gateway</html>")


# -- streaming ----------------------------------------------------------------------------------


def anthropic_event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: ".encode() + orjson.dumps(payload) + b"\n\n"


START: dict[str, Any] = {
    "type": "message_start",
    "message": {
        "id": "msg_02",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1},
    },
}
TEXT_AND_TOOL_EVENTS: list[dict[str, Any]] = [
    START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_3", "name": "f", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": "1}"},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use"},
        "usage": {"output_tokens": 9},
    },
    {"type": "message_stop"},
]
TEXT_AND_TOOL_STREAM = b"".join(anthropic_event(e) for e in TEXT_AND_TOOL_EVENTS)


def translated(stream: bytes, size: int) -> tuple[list[Any], ChunkTranslator]:
    """The payloads the gateway's own splitter finds in the translated stream."""
    translator = ChunkTranslator()
    gateway = SSESplitter()
    payloads: list[Any] = []
    for start in range(0, len(stream), size):
        for event in gateway.feed(translator.feed(stream[start : start + size])):
            data = event_data(event)
            payloads.append("[DONE]" if data == DONE_PAYLOAD else orjson.loads(data or b""))
    assert gateway.pending == b""
    return payloads, translator


@pytest.mark.parametrize("size", [1, 7, 100, 100_000])
def test_stream_becomes_openai_chunks_usage_and_done(size: int) -> None:
    payloads, translator = translated(TEXT_AND_TOOL_STREAM, size)
    assert translator.finished
    head = payloads[0]
    assert head["id"] == "chatcmpl-msg_02"
    assert head["object"] == "chat.completion.chunk"
    assert head["model"] == "claude-x"
    assert isinstance(head["created"], int)
    assert all(p == "[DONE]" or p["id"] == head["id"] for p in payloads)
    choices = [p["choices"] for p in payloads[:-2]]
    assert all(len(c) == 1 and c[0]["index"] == 0 and c[0]["logprobs"] is None for c in choices)
    assert [(c[0]["delta"], c[0]["finish_reason"]) for c in choices] == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hi"}, None),
        ({"content": "!"}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_3",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, None),
        ({}, "tool_calls"),
    ]
    assert payloads[-2]["choices"] == []
    assert payloads[-2]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 9,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    assert payloads[-1] == "[DONE]"


def test_error_event_mid_stream_becomes_an_in_band_openai_error_and_ends() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    stream = anthropic_event(START) + anthropic_event(error) + anthropic_event({"type": "ping"})
    payloads, translator = translated(stream, 5)
    assert translator.finished
    assert payloads[-1] == {
        "error": {
            "message": "The Anthropic API failed mid-stream: Overloaded",
            "type": "upstream_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert len(payloads) == 2  # the role chunk, then the error; nothing after it


@pytest.mark.parametrize(
    "stream",
    [
        b"event: message_start\ndata: {not json\n\n",
        anthropic_event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "x"},
            }
        ),
        anthropic_event(START) + anthropic_event({"type": "content_block_delta", "delta": "x"}),
        anthropic_event(START)
        + anthropic_event(
            {
                "type": "content_block_delta",
                "index": 4,
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            }
        ),
    ],
)
def test_broken_streams_are_protocol_errors(stream: bytes) -> None:
    with pytest.raises(AnthropicProtocolError):
        ChunkTranslator().feed(stream)
