"""The completion routes' schema check on the raw JSON: strict types (a string is never an
integer or a boolean), bounds that fit the engines' fields, and the count caps applied before
any per-item work."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tidegate.protocol.requests import (
    BodyCaps,
    RequestValidationFailure,
    check_body,
    check_counts_raw,
)

CAPS = BodyCaps(max_messages=8, max_prompts=4)
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TEXT: dict[str, Any] = {"model": "m", "prompt": "hi"}


def refused(route: Any, body: dict[str, Any]) -> RequestValidationFailure:
    with pytest.raises(RequestValidationFailure) as failure:
        check_body(route, body, CAPS)
    return failure.value


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": "4"}, "max_tokens"),
        ({"max_tokens": 4.0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 2**40}, "max_tokens"),
        ({"max_completion_tokens": "4"}, "max_completion_tokens"),
        ({"stream": "true"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"stream_options": []}, "stream_options"),
        ({"temperature": "0.5"}, "temperature"),
        ({"temperature": 7}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": "2"}, "n"),
        ({"n": False}, "n"),
        ({"seed": 2**64}, "seed"),
        ({"seed": "1"}, "seed"),
        ({"top_logprobs": "3"}, "top_logprobs"),
        ({"logprobs": "true"}, "logprobs"),
        ({"presence_penalty": [1]}, "presence_penalty"),
        ({"logit_bias": {"50256": "-100"}}, "logit_bias.50256"),
        ({"stop": ["a", 1]}, "stop"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": ["x"]}, "tools.0"),
        ({"user": 5}, "user"),
        ({"model": ""}, "model"),
        ({"model": ["m"]}, "model"),
        ({"messages": "hi"}, "messages"),
        ({"messages": ["hi"]}, "messages.0"),
        ({"messages": [{"content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0"),
        ({"messages": [{"role": "user", "content": "x", "name": 1}]}, "messages.0.name"),
    ],
)
def test_chat_fields_are_typed_strictly(change: dict[str, Any], param: str) -> None:
    failure = refused("chat", {**CHAT, **change})
    assert failure.param == param
    assert f"'{param}'" in failure.message


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": "4"}, "max_tokens"),
        ({"max_completion_tokens": "4"}, "max_completion_tokens"),
        ({"logprobs": True}, "logprobs"),
        ({"echo": "false"}, "echo"),
        ({"prompt": []}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": ["a", 5]}, "prompt.1"),
        ({"prompt": [1, -2]}, "prompt.1"),
        ({"prompt": [1, "2"]}, "prompt.1"),
        ({"prompt": [[1], []]}, "prompt.1"),
        ({"prompt": [[1], [2, 2**40]]}, "prompt.1.1"),
    ],
)
def test_completion_fields_are_typed_strictly(change: dict[str, Any], param: str) -> None:
    assert refused("completions", {**TEXT, **change}).param == param


def test_missing_fields_are_named() -> None:
    assert refused("chat", {"model": "m"}).message == "Missing required parameter: 'messages'."
    assert refused("completions", {"prompt": "x"}).param == "model"
    assert refused("completions", {"model": "m", "prompt": None}).param == "prompt"


def test_valid_bodies_and_extensions_pass() -> None:
    check_body(
        "chat",
        {
            **CHAT,
            "max_completion_tokens": 4,
            "temperature": 0,
            "top_p": 1,
            "seed": -(2**63),
            "logprobs": True,
            "top_logprobs": 2,
            "stream": False,
            "stop": "x",
            "guided_json": {"type": "object"},  # an engine extension passes untouched
            "messages": [
                {"role": "system", "content": None},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
        },
        CAPS,
    )
    for prompt in ("x", ["a", "b"], [1, 2], [[1], [2, 3]]):
        check_body("completions", {**TEXT, "prompt": prompt, "logprobs": 1, "echo": True}, CAPS)


def test_message_cap_comes_before_any_message_is_read() -> None:
    # Every message is malformed; the count is what the client hears about.
    failure = refused("chat", {**CHAT, "messages": [None] * 100_000})
    assert (failure.param, failure.code) == ("messages", "too_many_messages")
    assert "100,000 messages" in failure.message and "at most 8" in failure.message
    # ... and before the other fields, too.
    assert refused("chat", {"messages": [None] * 9}).code == "too_many_messages"


def test_prompt_cap_counts_batched_prompts_not_token_ids() -> None:
    failure = refused("completions", {**TEXT, "prompt": ["x"] * 100_000})
    assert (failure.param, failure.code) == ("prompt", "too_many_prompts")
    assert refused("completions", {**TEXT, "prompt": [[1]] * 5}).code == "too_many_prompts"
    check_body("completions", {**TEXT, "prompt": ["x"] * 4}, CAPS)
    check_body("completions", {**TEXT, "prompt": list(range(1000))}, CAPS)  # one prompt


def test_large_bodies_are_counted_before_they_are_parsed() -> None:
    chat = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "x"}] * 100_000})
    with pytest.raises(RequestValidationFailure) as messages:
        check_counts_raw("chat", chat, CAPS)
    assert (messages.value.param, messages.value.code) == ("messages", "too_many_messages")
    prompts = orjson.dumps({**TEXT, "prompt": ["x"] * 100_000})
    with pytest.raises(RequestValidationFailure) as many:
        check_counts_raw("completions", prompts, CAPS)
    assert many.value.code == "too_many_prompts"
    # One long token-id prompt, small bodies, invalid JSON and non-objects are left to the parse.
    check_counts_raw("completions", orjson.dumps({**TEXT, "prompt": list(range(50_000))}), CAPS)
    check_counts_raw("chat", orjson.dumps({**CHAT, "messages": [None] * 9}), CAPS)
    check_counts_raw("chat", b"{" + b" " * 100_000, CAPS)
    check_counts_raw("chat", orjson.dumps([CHAT] * 5_000), CAPS)


def test_content_parts_and_tools_are_capped_before_they_are_walked() -> None:
    caps = BodyCaps(max_messages=8, max_prompts=4, max_content_parts=10, max_tools=3)
    part = {"type": "text", "text": "x"}
    split = [{"role": "user", "content": [part] * 6}, {"role": "user", "content": [part] * 5}]
    for body in (
        {**CHAT, "messages": split},
        {**CHAT, "messages": [{"role": "user", "content": [None] * 100_000}]},
    ):
        with pytest.raises(RequestValidationFailure) as parts:
            check_body("chat", body, caps)
        assert (parts.value.param, parts.value.code) == ("messages", "too_many_content_parts")
        with pytest.raises(RequestValidationFailure) as raw:
            check_counts_raw("chat", orjson.dumps(body) + b" " * 70_000, caps)
        assert raw.value.code == "too_many_content_parts"
    tools = {**TEXT, "tools": [None] * 4}
    with pytest.raises(RequestValidationFailure) as many:
        check_body("completions", tools, caps)
    assert (many.value.param, many.value.code) == ("tools", "too_many_tools")
    with pytest.raises(RequestValidationFailure):
        check_counts_raw("completions", orjson.dumps(tools) + b" " * 70_000, caps)
    check_body("chat", {**CHAT, "messages": split[:1], "tools": [{"type": "function"}] * 3}, caps)
