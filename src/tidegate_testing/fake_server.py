"""A real OpenAI-compatible upstream on loopback, shaped like vLLM, with a controllable token
rate and injectable faults.

Tests use it in-process (``FakeUpstream``) and mutate ``behaviour`` between requests; the overhead
benchmark runs it as its own process (``python -m tidegate_testing.fake_server``), so the hot path
stays cheap: every chunk of a stream is serialised once per request, and the server runs on uvloop
when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

Fault = Literal["none", "status_500", "malformed_sse", "drop_mid_stream", "hang"]

_TOKEN = "tok "
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
_MALFORMED = b"data: {not json\n\n"


@dataclass
class FakeBehaviour:
    tokens: int = 16
    """Completion tokens per response; each streamed chunk carries one token ("tok ")."""
    first_token_delay_s: float = 0.0
    """Delay before the first content chunk (streaming) or before the whole response."""
    token_delay_s: float = 0.0
    """Delay between content chunks."""
    fault: Fault = "none"
    fault_after_tokens: int = 4
    """For malformed_sse and drop_mid_stream: how many good content chunks come first."""
    content: str | None = None
    """The answer's text instead of "tok " per token: one token per 4 characters (streamed one
    chunk each); ``tokens`` is then ignored, max_tokens still caps it."""
    ignore_max_tokens: bool = False
    """Generate ``tokens`` whatever max_tokens says, as a misbehaving upstream would."""
    guard_unsafe_words: tuple[str, ...] | None = None
    """Answer as a guard model (Llama Guard's format) instead: ``unsafe\nS1`` when the last
    message holds one of these words (any case), else ``safe``; POST /v1/moderations answers
    the same verdict in OpenAI's shape. None: an ordinary model. ``first_token_delay_s``
    makes the guard slow, ``fault: status_500`` makes it fail."""


def guard_verdict(text: str, words: tuple[str, ...]) -> bool:
    """Whether the fake guard calls ``text`` unsafe."""
    lowered = text.lower()
    return any(word.lower() in lowered for word in words)


def _last_text(messages: Any) -> str:
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        return content if isinstance(content, str) else ""
    return ""


def _pieces(b: FakeBehaviour) -> list[str] | None:
    """The configured content cut into tokens; None for the default "tok " answer."""
    if b.content is None:
        return None
    return [b.content[i : i + 4] for i in range(0, len(b.content), 4)]


def _error(status: int, message: str, type_: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _words(value: Any) -> int:
    """Whitespace words in a prompt or message content (strings, text parts, token-id lists)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("text") or value.get("content"))
    return 0


def _prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    return _words(body.get("messages") if chat else body.get("prompt"))


def _completion_tokens(body: dict[str, Any], configured: int) -> int:
    # Honour the client's cap as vLLM does; the fake otherwise always "runs out" of tokens.
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    return min(configured, cap) if isinstance(cap, int) and cap > 0 else configured


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class FakeUpstream:
    """An aiohttp server on ``host:port`` (0 picks a free port) serving one model."""

    def __init__(
        self,
        *,
        model: str = "fake-model",
        behaviour: FakeBehaviour | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record_requests: bool = True,
        max_model_len: int | None = 2048,
        adapters: dict[str, str] | None = None,
    ) -> None:
        """``max_model_len``: what GET /v1/models lists for the model, as vLLM does; None:
        no length, like an engine that does not say (SGLang, TGI). ``adapters``: LoRA name →
        path registered at start (vLLM's --lora-modules)."""
        self.model = model
        self.adapters: dict[str, str] = dict(adapters or {})
        """The LoRA adapters it serves, like vLLM with --enable-lora: each is a model name of
        its own, answering with ``[NAME] `` before the base model's text; loaded and unloaded
        through /v1/load_lora_adapter and /v1/unload_lora_adapter."""
        self.refuse_paths: set[str] = set()
        """Adapter paths whose load fails (400), like a directory vLLM cannot read."""
        self.runtime_lora = True
        """False: no /v1/load_lora_adapter (404), like vLLM started without LoRA support or
        VLLM_ALLOW_RUNTIME_LORA_UPDATING."""
        self.max_model_len = max_model_len
        self.behaviour = behaviour or FakeBehaviour()
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        """The headers of each recorded request (names lower-cased), in the order of
        ``requests``."""
        self.active = 0
        self.peak_active = 0
        """The most requests in flight at once since start (or the last reset): what a
        gateway cluster admitted in total, read over HTTP at ``GET /fake/in-flight``."""
        self.cancelled = 0
        self.completed = 0
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(8).hex()
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: web.AppRunner | None = None
        # A long benchmark run must not grow memory without bound, so it turns recording off.
        self._record = record_requests

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/fake/in-flight", self._in_flight)
        app.router.add_post("/fake/in-flight/reset", self._reset_in_flight)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._text)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_post("/v1/load_lora_adapter", self._load_lora)
        app.router.add_post("/v1/unload_lora_adapter", self._unload_lora)
        return app

    async def start(self) -> None:
        # handler_cancellation: a client that goes away cancels its handler, which is how
        # ``cancelled`` is counted and how "hang" requests end.
        self._runner = web.AppRunner(
            self._app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- small routes ---------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()

    def in_flight_stats(self) -> dict[str, int]:
        return {
            "in_flight": self.active,
            "peak_in_flight": self.peak_active,
            "completed": self.completed,
            "cancelled": self.cancelled,
        }

    async def _in_flight(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.in_flight_stats()), content_type=_JSON)

    async def _reset_in_flight(self, request: web.Request) -> web.Response:
        """The peak starts again from what is in flight now."""
        self.peak_active = self.active
        return await self._in_flight(request)

    async def _models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": self.model,
            "parent": None,
        }
        if self.max_model_len is not None:
            card["max_model_len"] = self.max_model_len
        cards = [card]
        for name, path in self.adapters.items():
            cards.append({**card, "id": name, "root": path, "parent": self.model})
        return web.Response(
            body=orjson.dumps({"object": "list", "data": cards}), content_type=_JSON
        )

    async def _lora_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "The request body is not valid JSON.", "BadRequestError")
        if not isinstance(body, dict) or not isinstance(body.get("lora_name"), str):
            return _error(400, "lora_name is required.", "BadRequestError")
        return body

    async def _load_lora(self, request: web.Request) -> web.Response:
        if not self.runtime_lora:
            return web.Response(status=404, text='{"detail":"Not Found"}', content_type=_JSON)
        body = await self._lora_body(request)
        if isinstance(body, web.Response):
            return body
        name, path = body["lora_name"], body.get("lora_path")
        if not isinstance(path, str) or not path:
            return _error(400, "lora_path is required.", "BadRequestError")
        if name in self.adapters:
            return _error(
                400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput"
            )
        if path in self.refuse_paths:
            return _error(
                400, f"Loading lora {name} failed: no adapter at {path}", "BadRequestError"
            )
        self.adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload_lora(self, request: web.Request) -> web.Response:
        body = await self._lora_body(request)
        if isinstance(body, web.Response):
            return body
        name = body["lora_name"]
        if self.adapters.pop(name, None) is None:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _metrics(self, request: web.Request) -> web.Response:
        label = f'{{model_name="{self.model}"}}'
        text = (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{label} {float(self.active)}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{label} 0.0\n"
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{label} 0.0\n"
        )
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    # -- completions ----------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._tracked(request, chat=True)

    async def _text(self, request: web.Request) -> web.StreamResponse:
        return await self._tracked(request, chat=False)

    async def _tracked(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self.active += 1
        if self.active > self.peak_active:
            self.peak_active = self.active
        self._idle.clear()
        try:
            response = await self._complete(request, chat)
        except (asyncio.CancelledError, ConnectionResetError):
            # Cancelled: the client went away while we waited; reset: while we wrote.
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
            if self.active == 0:
                self._idle.set()
        self.completed += 1
        return response

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "The request body is not valid JSON.", "BadRequestError")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.", "BadRequestError")
        if self._record:
            self.requests.append(body)
            self.request_headers.append({k.lower(): v for k, v in request.headers.items()})
        served = body.get("model")
        if served != self.model and served not in self.adapters:
            message = f"The model `{served}` does not exist."
            return _error(404, message, "NotFoundError", "model")
        # An adapter's answers are recognisably its own: "[NAME] " comes first.
        prefix = f"[{served}] " if served != self.model else ""

        b = self.behaviour
        if b.fault == "hang":
            await asyncio.Event().wait()  # until the client goes or the server stops
        if b.fault == "status_500":
            return _error(500, "The fake upstream was told to fail.", "InternalServerError")

        if b.guard_unsafe_words is not None and chat:
            if b.first_token_delay_s > 0:
                await asyncio.sleep(b.first_token_delay_s)
            unsafe = guard_verdict(_last_text(body.get("messages")), b.guard_unsafe_words)
            return self._guard_answer(body, unsafe)

        pieces = _pieces(b)
        configured = b.tokens if pieces is None else len(pieces)
        completion = configured if b.ignore_max_tokens else _completion_tokens(body, configured)
        usage = _usage(_prompt_tokens(body, chat), completion)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{self._id_prefix}{next(self._ids):08x}"
        stream = bool(body.get("stream"))
        if chat:
            obj = "chat.completion.chunk" if stream else "chat.completion"
        else:
            obj = "text_completion"
        # vLLM's key order, so byte-level comparisons in tests read naturally.
        head: dict[str, Any] = {
            "id": rid,
            "object": obj,
            "created": int(time.time()),
            "model": served,
        }
        if stream:
            return await self._stream(request, chat, head, body, completion, usage, prefix)

        if b.first_token_delay_s > 0:
            await asyncio.sleep(b.first_token_delay_s)
        text = _TOKEN * completion if pieces is None else "".join(pieces[:completion])
        text = prefix + text
        choice: dict[str, Any]
        if chat:
            reply = {"role": "assistant", "content": text, "tool_calls": []}
            choice = {"index": 0, "message": reply, "logprobs": None, "finish_reason": "length"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        choice["stop_reason"] = None
        payload = {**head, "choices": [choice], "usage": usage}
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    def _guard_answer(self, body: dict[str, Any], unsafe: bool) -> web.Response:
        reply = {"role": "assistant", "content": "unsafe\nS1" if unsafe else "safe"}
        choice = {"index": 0, "message": reply, "logprobs": None, "finish_reason": "stop"}
        payload = {
            "id": f"chatcmpl-{self._id_prefix}{next(self._ids):08x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "usage": _usage(_prompt_tokens(body, True), 3 if unsafe else 1),
        }
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _moderations(self, request: web.Request) -> web.Response:
        """OpenAI's /v1/moderations shape, for a guard (``guard_unsafe_words``)."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "The request body is not valid JSON.", "BadRequestError")
        if self._record:
            self.requests.append(body)
        b = self.behaviour
        if b.first_token_delay_s > 0:
            await asyncio.sleep(b.first_token_delay_s)
        if b.fault == "status_500":
            return _error(500, "The fake upstream was told to fail.", "InternalServerError")
        text = body.get("input") if isinstance(body, dict) else None
        flagged = isinstance(text, str) and guard_verdict(text, b.guard_unsafe_words or ())
        result = {"flagged": flagged, "categories": {"violence": flagged, "hate": False}}
        payload = {"id": "modr-fake", "model": self.model, "results": [result]}
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _stream(
        self,
        request: web.Request,
        chat: bool,
        head: dict[str, Any],
        body: dict[str, Any],
        completion: int,
        usage: dict[str, int],
        prefix: str = "",
    ) -> web.StreamResponse:
        b = self.behaviour
        pieces = _pieces(b)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True

        def chunk(content: str, finish: str | None, role: bool = False) -> bytes:
            choice: dict[str, Any]
            if chat:
                delta = {"role": "assistant", "content": content} if role else {"content": content}
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": finish}
                choice["stop_reason"] = None
            obj: dict[str, Any] = {**head, "choices": [choice]}
            if include_usage:
                obj["usage"] = None
            return _sse(obj)

        # Every chunk but the last is identical, so serialise each shape once.
        token_chunk = chunk(_TOKEN, None)
        last_chunk = chunk(_TOKEN, "length")

        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        if chat:
            await response.write(chunk("", None, role=True))
        if prefix:
            await response.write(chunk(prefix, None))
        if b.first_token_delay_s > 0:
            await asyncio.sleep(b.first_token_delay_s)
        for i in range(completion):
            if i and b.token_delay_s > 0:
                await asyncio.sleep(b.token_delay_s)
            if i == b.fault_after_tokens:
                if b.fault == "malformed_sse":
                    await response.write(_MALFORMED)
                elif b.fault == "drop_mid_stream":
                    _abort(request)
                    return response
            if pieces is not None:
                await response.write(chunk(pieces[i], "stop" if i == completion - 1 else None))
                continue
            await response.write(last_chunk if i == completion - 1 else token_chunk)
        if include_usage:
            await response.write(_sse({**head, "choices": [], "usage": usage}))
        await response.write(_DONE)
        await response.write_eof()
        return response


def _abort(request: web.Request) -> None:
    """Drop the connection without finishing the chunked body, as a crashed engine would."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A fake vLLM-shaped OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--first-token-delay-s", type=float, default=0.0)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    parser.add_argument(
        "--guard-unsafe-word",
        action="append",
        default=None,
        help="answer as a guard model: unsafe when the text holds this word (repeatable)",
    )
    parser.add_argument(
        "--max-model-len",
        type=int,
        default=2048,
        help="what GET /v1/models lists as the model's max_model_len; 0: none",
    )
    parser.add_argument(
        "--lora-modules",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="LoRA adapters served from the start, as vLLM's --lora-modules",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    words = args.guard_unsafe_word
    behaviour = FakeBehaviour(
        tokens=args.tokens,
        first_token_delay_s=args.first_token_delay_s,
        token_delay_s=args.token_delay_s,
        guard_unsafe_words=None if words is None else tuple(words),
    )
    server = FakeUpstream(
        model=args.model,
        behaviour=behaviour,
        host=args.host,
        port=args.port,
        record_requests=False,
        max_model_len=args.max_model_len or None,
        adapters=dict(module.split("=", 1) for module in args.lora_modules),
    )
    await server.start()
    print(f"listening on {server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
