"""Translating OpenAI chat completions to the Anthropic Messages API and back, with no I/O.

The gateway speaks OpenAI to clients and relays what a backend returns, so an Anthropic backend
needs the request rewritten on the way out and the reply rewritten on the way back; the
``AnthropicClient`` provider in ``tidegate.upstream`` does the HTTP and calls these functions.

Request (``messages_request``):

- ``system``/``developer`` messages, wherever they appear, become the top-level ``system``
  (Anthropic has no system role inside the conversation);
- ``tool`` messages become ``tool_result`` blocks of a user turn, assistant ``tool_calls`` become
  ``tool_use`` blocks, and consecutive turns of the same role are merged, because Anthropic wants
  user and assistant turns to alternate;
- ``max_completion_tokens``/``max_tokens`` become ``max_tokens``, which Anthropic requires, so it
  defaults to ``DEFAULT_MAX_TOKENS``; ``stop`` becomes ``stop_sequences``; ``user`` becomes
  ``metadata.user_id``; ``tool_choice`` ``required`` becomes ``any``; ``parallel_tool_calls:
  false`` becomes ``disable_parallel_tool_use``; ``temperature``, ``top_p``, ``top_k`` and
  ``stream`` pass through. Anthropic itself rejects a temperature above 1 and whitespace-only
  stop sequences; that 400 reaches the client with Anthropic's message.
- ``n`` > 1 and ``logprobs``/``top_logprobs`` are refused with a 400: a client relying on them
  would silently get something else. Every other OpenAI field is dropped, because Anthropic
  rejects unknown fields: ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``seed``,
  ``response_format``, ``stream_options`` (the usage chunk is always sent), ``service_tier``,
  ``reasoning_effort``, ``store``, ``metadata``, ``prediction``, ``modalities``, ``audio`` and
  vLLM extensions other than ``top_k``.

Response: ``chat_completion`` rewrites a whole message; ``anthropic_stream.ChunkTranslator``
rewrites a stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tidegate.errors import InvalidRequestError

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "AnthropicProtocolError",
    "chat_completion",
    "error_details",
    "finish_reason",
    "messages_request",
    "openai_usage",
]

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when the client gave no limit (Anthropic has no default)."""

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProtocolError(ValueError):
    """The backend sent something that is not the Anthropic API's shape (the caller names it)."""


# -- request ------------------------------------------------------------------------------------


def messages_request(
    chat: Mapping[str, Any], *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The Anthropic Messages request for an OpenAI chat completion request.

    Raises ``InvalidRequestError`` for what Anthropic cannot express (see the module docstring).
    """
    _refuse_unsupported(chat)
    system, messages = _conversation(chat.get("messages"))
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens") or default_max_tokens
    request: dict[str, Any] = {"model": chat.get("model"), "max_tokens": limit}
    if system:
        request["system"] = system
    request["messages"] = messages
    for name in ("temperature", "top_p", "top_k"):
        if chat.get(name) is not None:
            request[name] = chat[name]
    stop = chat.get("stop")
    if isinstance(stop, str):
        request["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        request["stop_sequences"] = stop
    if chat.get("stream"):
        request["stream"] = True
    user = chat.get("user")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    tools = chat.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise InvalidRequestError("`tools` must be a list.", param="tools")
        request["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
        choice = _tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    return request


def _refuse_unsupported(chat: Mapping[str, Any]) -> None:
    n = chat.get("n")
    if isinstance(n, int) and n > 1:
        raise InvalidRequestError(
            "This model's Anthropic backend returns one choice per request; send n=1 (or omit "
            "n) and make several requests instead.",
            param="n",
        )
    if chat.get("logprobs") or chat.get("top_logprobs"):
        raise InvalidRequestError(
            "This model's Anthropic backend does not return log probabilities; remove "
            "`logprobs` and `top_logprobs`.",
            param="logprobs",
        )


def _conversation(messages: Any) -> tuple[str | None, list[dict[str, Any]]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("`messages` must be a non-empty list.", param="messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError(f"messages[{i}] must be an object.", param="messages")
        role = message.get("role")
        content: str | list[dict[str, Any]]
        if role in ("system", "developer"):
            text = _text(message.get("content"), i)
            if text:
                system.append(text)
            continue
        if role == "user":
            content = _user_content(message.get("content"), i)
        elif role == "assistant":
            content = _assistant_content(message, i)
        elif role == "tool":
            role, content = "user", [_tool_result(message, i)]
        else:
            raise InvalidRequestError(
                f"messages[{i}]: role '{role}' is not supported by this model's Anthropic "
                "backend; send tool results as 'tool' messages.",
                param="messages",
            )
        if not content:
            continue  # Anthropic rejects empty turns; an empty one says nothing anyway
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _blocks(turns[-1]["content"]) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    return ("\n\n".join(system) or None), turns


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _text(content: Any, i: int) -> str:
    """Content that may only be text: a string or a list of text parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise InvalidRequestError(
                    f"messages[{i}].content may only hold text parts.", param="messages"
                )
            texts.append(str(part.get("text") or part.get("refusal") or ""))
        return "".join(texts)
    raise InvalidRequestError(f"messages[{i}].content must be a string or a list.")


def _user_content(content: Any, i: int) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequestError(f"messages[{i}].content must be a string or a list.")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), i))
        else:
            raise InvalidRequestError(
                f"messages[{i}].content: part type '{kind}' is not supported by this model's "
                "Anthropic backend (text and image_url are).",
                param="messages",
            )
    return blocks


def _image(image_url: Any, i: int) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise InvalidRequestError(f"messages[{i}]: an image_url part has no url.")
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, _, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64" or not data:
        raise InvalidRequestError(
            f"messages[{i}]: an image data URL must be base64 (data:image/png;base64,...).",
            param="messages",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _assistant_content(message: dict[str, Any], i: int) -> list[dict[str, Any]] | str:
    text = _text(message.get("content"), i)
    calls = message.get("tool_calls")
    if not calls:
        return text
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise InvalidRequestError(f"messages[{i}].tool_calls: each needs a function.")
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequestError(
                f"messages[{i}].tool_calls: function arguments must be a JSON object string.",
                param="messages",
            )
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments,
            }
        )
    return blocks


def _tool_result(message: dict[str, Any], i: int) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError(f"messages[{i}]: a tool message needs its tool_call_id.")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    text = _text(message.get("content"), i)
    if text:
        block["content"] = text
    return block


def _tool(tool: Any, i: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise InvalidRequestError(
            f"tools[{i}]: only function tools are supported by this model's Anthropic backend.",
            param="tools",
        )
    out: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] = {"type": "auto"}
    elif choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequestError(
            "`tool_choice` must be 'auto', 'none', 'required' or a function.", param="tool_choice"
        )
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default is auto already
    return out


# -- response -----------------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> str | None:
    """OpenAI's finish_reason for Anthropic's stop_reason (unknown future ones read as stop)."""
    if stop_reason is None:
        return None
    return _FINISH_REASONS.get(stop_reason, "stop")


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage: cached and cache-written input tokens are prompt tokens too."""
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cached
    prompt += usage.get("cache_creation_input_tokens") or 0
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def chat_completion(message: Any, *, created: int) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` for a whole Anthropic message."""
    if not isinstance(message, dict) or message.get("type") != "message":
        raise AnthropicProtocolError("a response that is not an Anthropic message")
    try:
        return _chat_completion(message, created)
    except (AttributeError, KeyError, TypeError):  # a field of the wrong type
        raise AnthropicProtocolError("a message of the wrong shape") from None


def _chat_completion(message: dict[str, Any], created: int) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block["name"], "arguments": arguments}
            calls.append({"id": block["id"], "type": "function", "function": function})
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if calls:
        reply["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": reply,
        "logprobs": None,
        "finish_reason": finish_reason(message.get("stop_reason")),
    }
    return {
        **head(message, created, "chat.completion"),
        "choices": [choice],
        "usage": openai_usage(message.get("usage") or {}),
    }


def head(message: dict[str, Any], created: int, obj: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{message.get('id')}",
        "object": obj,
        "created": created,
        "model": message.get("model"),
    }


def error_details(raw: bytes) -> tuple[str, str]:
    """(type, message) of an Anthropic error body, ``{"type": "error", "error": {...}}``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "api_error", raw[:200].decode("utf-8", "replace").strip()
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("type") or "api_error"), str(error.get("message") or "")
    return "api_error", raw[:200].decode("utf-8", "replace").strip()
