"""Translating an Anthropic Messages stream into OpenAI chat.completion.chunk events, with no I/O.

``ChunkTranslator`` rewrites the stream incrementally into chunk events, a usage chunk and
``[DONE]``: the shape ``gateway/relay.py`` expects from any backend.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tidegate.protocol.anthropic import (
    AnthropicProtocolError,
    finish_reason,
    head,
    openai_usage,
)
from tidegate.protocol.sse import DONE_EVENT, SSESplitter, error_event, event_data

_OPEN_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'


def _event_payload(event: bytes) -> bytes | None:
    """The data of an ``event: x`` / ``data: {...}`` pair, Anthropic's framing, found without
    splitting lines; anything else goes the general way."""
    at = event.find(b"\ndata: ")
    if at >= 0:
        payload = event[at + 7 : -2]
        if b"\n" not in payload:
            return payload
    return event_data(event)


class ChunkTranslator:
    """Feed Anthropic stream bytes; get OpenAI ``chat.completion.chunk`` SSE bytes back.

    Each content delta costs one small ``orjson.dumps``: the bytes around it (id, model, the
    choice's other fields) are serialised once, at ``message_start``. ``finished`` turns true
    after ``[DONE]`` or an in-band error event; the caller stops reading there.
    """

    __slots__ = ("_splitter", "_head", "_prefix", "_tools", "_usage", "_stop_reason", "finished")

    def __init__(self) -> None:
        self._splitter = SSESplitter()
        self._head: dict[str, Any] = {}
        self._prefix = b""
        self._tools: dict[int, int] = {}
        """Anthropic content-block index -> OpenAI tool_calls index."""
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._splitter.feed(data):
            payload = _event_payload(event)
            if payload is None:
                continue
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise AnthropicProtocolError("a malformed stream event") from None
            if not isinstance(parsed, dict):
                raise AnthropicProtocolError("a stream event that is not a JSON object")
            try:
                self._translate(parsed, out)
            except (AttributeError, KeyError, TypeError):  # a field of the wrong type
                raise AnthropicProtocolError(
                    f"a {parsed.get('type')!r} event of the wrong shape"
                ) from None
            if self.finished:
                break
        return b"".join(out)

    def _translate(self, event: dict[str, Any], out: list[bytes]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            self._block_delta(event, out)
        elif kind == "content_block_start":
            self._block_start(event, out)
        elif kind == "message_start":
            self._message_start(event, out)
        elif kind == "message_delta":
            self._stop_reason = (event.get("delta") or {}).get("stop_reason")
            self._add_usage(event.get("usage"))
        elif kind == "message_stop":
            self._message_stop(out)
        elif kind == "error":
            error = event.get("error") or {}
            message = f"The Anthropic API failed mid-stream: {error.get('message') or 'no detail'}"
            out.append(error_event(message, "upstream_error", error.get("type") or "api_error"))
            self.finished = True
        # ping, content_block_stop and event types added later carry nothing for the client

    def _message_start(self, event: dict[str, Any], out: list[bytes]) -> None:
        message = event.get("message")
        if not isinstance(message, dict):
            raise AnthropicProtocolError("a message_start event without its message")
        self._head = head(message, int(time.time()), "chat.completion.chunk")
        self._prefix = (
            b"data: " + orjson.dumps(self._head)[:-1] + b',"choices":[{"index":0,"delta":'
        )
        self._add_usage(message.get("usage"))
        self._chunk({"role": "assistant", "content": ""}, out)

    def _block_start(self, event: dict[str, Any], out: list[bytes]) -> None:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            index = len(self._tools)
            self._tools[event.get("index", -1)] = index
            function = {"name": block.get("name"), "arguments": ""}
            call = {"index": index, "id": block.get("id"), "type": "function", "function": function}
            self._chunk({"tool_calls": [call]}, out)
        elif kind == "text" and block.get("text"):
            self._chunk({"content": block["text"]}, out)

    def _block_delta(self, event: dict[str, Any], out: list[bytes]) -> None:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            self._chunk({"content": delta.get("text") or ""}, out)
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            if not fragment:
                return
            index = self._tools.get(event.get("index", -1))
            if index is None:
                raise AnthropicProtocolError("tool input for a block that is not a tool_use")
            call = {"index": index, "function": {"arguments": fragment}}
            self._chunk({"tool_calls": [call]}, out)
        elif kind == "thinking_delta":
            self._chunk({"reasoning_content": delta.get("thinking") or ""}, out)
        # signature_delta and citations_delta have no OpenAI counterpart

    def _message_stop(self, out: list[bytes]) -> None:
        if not self._prefix:
            raise AnthropicProtocolError("message_stop before message_start")
        reason = orjson.dumps(finish_reason(self._stop_reason) or "stop")
        out.append(self._prefix + b'{},"logprobs":null,"finish_reason":' + reason + b"}]}\n\n")
        usage = {**self._head, "choices": [], "usage": openai_usage(self._usage)}
        out.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        out.append(DONE_EVENT)
        self.finished = True

    def _chunk(self, delta: dict[str, Any], out: list[bytes]) -> None:
        if not self._prefix:
            raise AnthropicProtocolError("a content event before message_start")
        out.append(self._prefix + orjson.dumps(delta) + _OPEN_TAIL)

    def _add_usage(self, usage: Any) -> None:
        """message_delta's counts are cumulative, so later values replace earlier ones."""
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if isinstance(v, int))
