"""A real Anthropic Messages API on loopback, strict about request shape, with injectable faults.

Tests run it in-process (``FakeAnthropic``) to check ``AnthropicClient`` over real HTTP: it
checks the ``x-api-key`` and ``anthropic-version`` headers and validates a request the way the
real API does (required ``max_tokens``, alternating turns starting with a user turn, no system
role in ``messages``, no unknown fields, tool results answering the previous turn's tool calls),
so a translation mistake fails here rather than in production. It records each request and
answers with the real API's message and stream event shapes, including usage.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

Fault = Literal[
    "none",
    "overloaded",
    "invalid",
    "rate_limited",
    "server_error",
    "error_mid_stream",
    "drop_mid_stream",
]
"""``overloaded`` (529), ``invalid`` (400), ``rate_limited`` (429) and ``server_error`` (500)
answer with that status; ``error_mid_stream`` sends an ``error`` event after
``fault_after_tokens`` text deltas; ``drop_mid_stream`` drops the connection there."""

_TOKEN = "tok "
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_STATUS_FAULTS: dict[str, tuple[int, str, str]] = {
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "invalid": (400, "invalid_request_error", "The fake was told to reject this request."),
    "rate_limited": (429, "rate_limit_error", "Number of request tokens has exceeded your limit."),
    "server_error": (500, "api_error", "Internal server error"),
}
_TOP_LEVEL = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    }
)
_BLOCKS = {
    "user": frozenset({"text", "image", "tool_result", "document"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking"}),
}


@dataclass
class FakeToolUse:
    """A tool call the fake makes after its text."""

    name: str
    input: dict[str, Any] = field(default_factory=dict)
    id: str = "toolu_01fake"


@dataclass
class FakeAnthropicBehaviour:
    tokens: int = 8
    """Output text tokens; each streamed text delta carries one ("tok ")."""
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    tool_use: FakeToolUse | None = None
    """When set, the reply ends with this tool call and stop_reason ``tool_use``."""
    stop_at_token: int | None = None
    """When the request has stop_sequences: the reply "meets" the first one after this many
    tokens and stops with stop_reason ``stop_sequence``."""
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    fault: Fault = "none"
    fault_after_tokens: int = 2


def _error(status: int, type_: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": type_, "message": message}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _event(payload: dict[str, Any]) -> bytes:
    return (
        b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
    )


class FakeAnthropic:
    """An aiohttp server on ``host:port`` (0 picks a free port) serving one model."""

    def __init__(
        self,
        *,
        model: str = "claude-fake",
        api_key: str = "sk-ant-fake-key",
        behaviour: FakeAnthropicBehaviour | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.model = model
        self.api_key = api_key
        self.behaviour = behaviour or FakeAnthropicBehaviour()
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        """Every well-formed JSON body received, valid or not, in order."""
        self.request_headers: list[dict[str, str]] = []
        """The headers of each request in ``requests`` (names lower-cased)."""
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(6).hex()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """The API root, including /v1, as a replica's ``url``."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "invalid_request_error", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "The request body must be an object.")
        self.requests.append(body)
        self.request_headers.append({k.lower(): v for k, v in request.headers.items()})
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        problem = request_problem(body)
        if problem is not None:
            return _error(400, "invalid_request_error", problem)
        if body["model"] != self.model:
            return _error(404, "not_found_error", f"model: {body['model']}")
        fault = _STATUS_FAULTS.get(self.behaviour.fault)
        if fault is not None:
            return _error(*fault)
        reply = self._reply(body)
        if body.get("stream"):
            return await self._stream(request, reply)
        if self.behaviour.first_token_delay_s > 0:
            await asyncio.sleep(self.behaviour.first_token_delay_s)
        return web.Response(body=orjson.dumps(reply), content_type=_JSON)

    def _reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole message; streaming sends the same one as events."""
        b = self.behaviour
        tokens = min(b.tokens, body["max_tokens"])
        stop_reason, stop_sequence = "end_turn", None
        if b.stop_at_token is not None and body.get("stop_sequences"):
            tokens = min(tokens, b.stop_at_token)
            stop_reason, stop_sequence = "stop_sequence", body["stop_sequences"][0]
        elif tokens < b.tokens:
            stop_reason = "max_tokens"
        content: list[dict[str, Any]] = (
            [{"type": "text", "text": _TOKEN * tokens}] if tokens else []
        )
        if b.tool_use is not None and stop_reason == "end_turn":
            tool = b.tool_use
            content.append(
                {"type": "tool_use", "id": tool.id, "name": tool.name, "input": tool.input}
            )
            stop_reason = "tool_use"
        usage = {
            "input_tokens": _words(body.get("system")) + _words(body["messages"]),
            "cache_creation_input_tokens": b.cache_creation_tokens,
            "cache_read_input_tokens": b.cache_read_tokens,
            "output_tokens": tokens + (5 if stop_reason == "tool_use" else 0),
        }
        return {
            "id": f"msg_{self._id_prefix}{next(self._ids):06x}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }

    async def _stream(self, request: web.Request, reply: dict[str, Any]) -> web.StreamResponse:
        b = self.behaviour
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        usage = reply["usage"]
        start = {**reply, "content": [], "stop_reason": None, "stop_sequence": None}
        start["usage"] = {**usage, "output_tokens": 1}
        await response.write(_event({"type": "message_start", "message": start}))
        if b.first_token_delay_s > 0:
            await asyncio.sleep(b.first_token_delay_s)
        for index, block in enumerate(reply["content"]):
            if block["type"] == "text":
                opened: dict[str, Any] = {"type": "text", "text": ""}
                await response.write(_start_block(index, opened))
                await response.write(_event({"type": "ping"}))
                tokens = len(block["text"]) // len(_TOKEN)
                delta = _delta(index, {"type": "text_delta", "text": _TOKEN})
                for i in range(tokens):
                    if i and b.token_delay_s > 0:
                        await asyncio.sleep(b.token_delay_s)
                    if i == b.fault_after_tokens and await _fault(request, response, b.fault):
                        return response
                    await response.write(delta)
            else:
                opened = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                await response.write(_start_block(index, opened))
                arguments = orjson.dumps(block["input"]).decode()
                for fragment in ("", arguments[:5], arguments[5:]):
                    partial = {"type": "input_json_delta", "partial_json": fragment}
                    await response.write(_delta(index, partial))
            await response.write(_event({"type": "content_block_stop", "index": index}))
        ending = {"stop_reason": reply["stop_reason"], "stop_sequence": reply["stop_sequence"]}
        final_usage = {"output_tokens": usage["output_tokens"]}
        await response.write(
            _event({"type": "message_delta", "delta": ending, "usage": final_usage})
        )
        await response.write(_event({"type": "message_stop"}))
        await response.write_eof()
        return response


def _start_block(index: int, block: dict[str, Any]) -> bytes:
    return _event({"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event({"type": "content_block_delta", "index": index, "delta": delta})


async def _fault(request: web.Request, response: web.StreamResponse, fault: Fault) -> bool:
    """Inject a mid-stream fault; True when the stream must end here."""
    if fault == "error_mid_stream":
        error = {"type": "overloaded_error", "message": "Overloaded"}
        await response.write(_event({"type": "error", "error": error}))
        await response.write_eof()
        return True
    if fault == "drop_mid_stream":
        if request.transport is not None:
            request.transport.abort()
        return True
    return False


def _words(value: Any) -> int:
    """Whitespace words in system text and message content: the fake's input token count."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("text") or value.get("content"))
    return 0


# -- request validation, with the real API's messages -------------------------------------------


def request_problem(body: dict[str, Any]) -> str | None:
    """Why the Messages API would reject ``body`` with a 400, or None."""
    for name in body:
        if name not in _TOP_LEVEL:
            return f"{name}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Field required"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or any(_text_problem(b) for b in system):
            return "system: Input should be a valid string or a list of text blocks"
    problem = _options_problem(body)
    if problem is not None:
        return problem
    return _messages_problem(body.get("messages"))


def _options_problem(body: dict[str, Any]) -> str | None:
    temperature = body.get("temperature")
    if temperature is not None and not (
        isinstance(temperature, int | float) and 0 <= temperature <= 1
    ):
        return "temperature: Input should be less than or equal to 1"
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) and s.strip() for s in stops)
    ):
        return "stop_sequences: each stop sequence must contain non-whitespace"
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        return "metadata: only user_id is permitted"
    tools = body.get("tools")
    names = set()
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            return f"tools.{i}.name: Field required"
        if set(tool) - {"name", "description", "input_schema", "cache_control"}:
            return f"tools.{i}: Extra inputs are not permitted"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.input_schema.type: Input should be 'object'"
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in (
            "auto",
            "any",
            "tool",
            "none",
        ):
            return "tool_choice: Input tag does not match any of 'auto', 'any', 'tool', 'none'"
        if choice["type"] == "tool" and choice.get("name") not in names:
            return f"tool_choice.name: tool '{choice.get('name')}' is not in tools"
    return None


def _messages_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    pending_tool_uses: set[str] = set()
    previous_role = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _BLOCKS:
            return (
                f'messages.{i}.role: Unexpected role "{role}". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.'
                if role == "system"
                else f"messages.{i}.role: Input should be 'user' or 'assistant'"
            )
        if i == 0 and role != "user":
            return 'messages: first message must use the "user" role'
        if role == previous_role:
            return (
                'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row'
            )
        previous_role = role
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{i}.content: must be a non-empty string or list of blocks"
        answered: set[str] = set()
        for j, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            where = f"messages.{i}.content.{j}"
            if kind not in _BLOCKS[role]:
                return f"{where}.type: '{kind}' is not allowed in a {role} message"
            if kind == "tool_result":
                if any(b.get("type") != "tool_result" for b in blocks[:j]):
                    return f"{where}: tool_result blocks must come first in the user message"
                answered.add(block.get("tool_use_id"))
            problem = _block_problem(block)
            if problem is not None:
                return f"{where}: {problem}"
        if role == "user":
            if answered - pending_tool_uses:
                return f"messages.{i}: unexpected tool_use_id found in tool_result blocks"
            if pending_tool_uses - answered:
                return (
                    f"messages.{i}: tool_use ids were found without tool_result blocks "
                    f"immediately after: {', '.join(sorted(pending_tool_uses - answered))}"
                )
            pending_tool_uses = set()
        else:
            pending_tool_uses = {b["id"] for b in blocks if b["type"] == "tool_use"}
    return None


def _block_problem(block: dict[str, Any]) -> str | None:
    kind = block["type"]
    if kind == "text":
        return _text_problem(block)
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict):
            return "image.source: Field required"
        if source.get("type") == "base64":
            if source.get("media_type") not in (
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
            ):
                return "image.source.media_type: unsupported image type"
            return None if source.get("data") else "image.source.data: Field required"
        if source.get("type") == "url":
            return None if source.get("url") else "image.source.url: Field required"
        return "image.source.type: Input should be 'base64' or 'url'"
    if kind == "tool_use":
        if not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
            return "tool_use: id and name are required"
        return None if isinstance(block.get("input"), dict) else "tool_use.input: must be an object"
    if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
        return "tool_result.tool_use_id: Field required"
    return None


def _text_problem(block: Any) -> str | None:
    if not isinstance(block, dict) or block.get("type") != "text":
        return "Input should be a text block"
    if not isinstance(block.get("text"), str) or not block["text"]:
        return "text content blocks must be non-empty"
    return None
