"""A lean HTTP/1.1 keep-alive client for OpenAI-compatible endpoints that times every SSE chunk.

Raw asyncio protocols and httptools' C parser, as in the overhead load generator: a general client
such as aiohttp spends most of a core per few thousand requests, and a load tester whose client is
the bottleneck measures itself. Each connection carries one request at a time; idle connections
are kept per origin and reused. Responses are never decompressed (no Accept-Encoding is sent).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

ErrorClass = str  # "", "http_429", "http_5xx", "timeout", "connect", "other"


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """One exchange; times are ``time.perf_counter()`` values."""

    status: int
    """HTTP status, 0 when none arrived."""
    error: ErrorClass
    detail: str
    sent: float
    end: float
    content_times: list[float]
    """When each chunk carrying generated text arrived (one entry for a non-streamed reply)."""
    text: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None


def classify(status: int) -> ErrorClass:
    if status == 200:
        return ""
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "other"


class _Exchange:
    __slots__ = (
        "done",
        "status",
        "body",
        "sse",
        "buf",
        "times",
        "parts",
        "collect",
        "usage",
        "error",
    )

    def __init__(self, done: asyncio.Future[None], collect: bool) -> None:
        self.done = done
        self.status = 0
        self.body = bytearray()
        self.sse = False
        self.buf = b""
        self.times: list[float] = []
        self.parts: list[str] = []
        self.collect = collect
        self.usage: dict[str, Any] | None = None
        self.error = ""

    def feed_sse(self, data: bytes) -> None:
        buf = self.buf + data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self.buf = events.pop()
        now = time.perf_counter()
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._event(line[5:].strip(), now)

    def _event(self, payload: bytes, now: float) -> None:
        if payload == b"[DONE]" or not payload:
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = "malformed SSE event"
            return
        if not isinstance(obj, dict):
            return
        if obj.get("error"):
            self.error = f"in-band error: {str(obj['error'])[:200]}"
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = obj.get("choices")
        if choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if content:
                self.times.append(now)
                if self.collect:
                    self.parts.append(content)

    def finish_json(self, now: float) -> None:
        try:
            obj = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            self.error = "response body is not JSON"
            return
        if not isinstance(obj, dict):
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = obj.get("choices")
        if choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            content = message.get("content") if isinstance(message, dict) else None
            content = content or choices[0].get("text")
            if content:
                self.times.append(now)
                if self.collect:
                    self.parts.append(content)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.current: _Exchange | None = None
        self.closed = False
        self.keep_alive = True
        self._sse = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.current
        if ex is not None and not ex.done.done():
            ex.done.set_exception(ConnectionResetError("connection closed mid-response"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            ex = self.current
            if ex is not None and not ex.done.done():
                ex.done.set_exception(exc)
            self.close()

    def on_headers_complete(self) -> None:
        ex = self.current
        if ex is not None:
            ex.status = self._parser.get_status_code()
            ex.sse = ex.status == 200 and self._sse

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self._sse = value.startswith(b"text/event-stream")

    def on_message_begin(self) -> None:
        self._sse = False

    def on_body(self, body: bytes) -> None:
        ex = self.current
        if ex is None:
            return
        if ex.sse:
            ex.feed_sse(body)
        else:
            ex.body += body

    def on_message_complete(self) -> None:
        ex = self.current
        self.keep_alive = self._parser.should_keep_alive()
        if ex is not None and not ex.done.done():
            ex.done.set_result(None)

    def send(self, data: bytes, exchange: _Exchange) -> None:
        assert self._transport is not None
        self.current = exchange
        self._transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class BenchClient:
    """Posts to one origin; ``timeout_s`` bounds each request from send to last byte."""

    def __init__(self, *, base_url: str, timeout_s: float, collect_text: bool = False) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.https = parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.collect_text = collect_text
        self._ssl = ssl.create_default_context() if self.https else None
        self._idle: list[_Connection] = []
        default = 443 if self.https else 80
        self._host_header = self.host if self.port == default else f"{self.host}:{self.port}"

    def head(self, method: str, path: str, headers: tuple[tuple[str, str], ...]) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n").encode()

    async def _connect(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Connection,
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self._ssl else None,
        )
        return conn

    async def request(self, head: bytes, body: bytes = b"") -> Outcome:
        """Send ``head`` (from :meth:`head`) with ``body``; never raises for network trouble."""
        loop = asyncio.get_running_loop()
        sent = time.perf_counter()
        ex = _Exchange(loop.create_future(), self.collect_text)
        deadline = sent + self.timeout_s
        conn: _Connection | None = None
        try:
            async with asyncio.timeout_at(loop.time() + self.timeout_s):
                try:
                    conn = await self._connect()
                except OSError as exc:
                    return self._failed(ex, sent, "connect", str(exc) or type(exc).__name__)
                data = head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                conn.send(data, ex)
                await ex.done
        except TimeoutError:
            if conn is not None:
                conn.close()
            end = max(time.perf_counter(), deadline)
            detail = f"no complete reply in {self.timeout_s}s"
            return self._outcome(ex, sent, end, "timeout", detail)
        except (ConnectionError, httptools.HttpParserError) as exc:
            if conn is not None:
                conn.close()
            kind = "connect" if ex.status == 0 else "other"
            return self._failed(ex, sent, kind, str(exc) or type(exc).__name__)
        end = time.perf_counter()
        assert conn is not None
        conn.current = None
        if conn.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
        if ex.status == 200 and not ex.sse:
            ex.finish_json(end)
        error = classify(ex.status)
        detail = ""
        if error:
            detail = f"HTTP {ex.status}: {bytes(ex.body[:200]).decode(errors='replace')}"
        elif ex.error:
            error, detail = "other", ex.error
        return self._outcome(ex, sent, end, error, detail)

    def _failed(self, ex: _Exchange, sent: float, error: str, detail: str) -> Outcome:
        return self._outcome(ex, sent, time.perf_counter(), error, detail)

    def _outcome(self, ex: _Exchange, sent: float, end: float, error: str, detail: str) -> Outcome:
        usage = ex.usage or {}
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return Outcome(
            status=ex.status,
            error=error,
            detail=detail,
            sent=sent,
            end=end,
            content_times=ex.times,
            text="".join(ex.parts) if self.collect_text else None,
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            cached_tokens=_int(cached),
        )

    async def get_json(
        self, path: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> tuple[int, Any]:
        """A small GET (health, model list): raises OSError or TimeoutError on failure."""
        status, body = await self.get(path, (("Accept", "application/json"), *headers))
        try:
            return status, orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return status, None

    async def get(self, path: str, headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, bytes]:
        """A GET of a whole body (a /metrics scrape): raises OSError or TimeoutError on failure."""
        head = self.head("GET", path, headers)
        loop = asyncio.get_running_loop()
        ex = _Exchange(loop.create_future(), False)
        async with asyncio.timeout(self.timeout_s):
            conn = await self._connect()
            try:
                conn.send(head + b"\r\n", ex)
                await ex.done
            except BaseException:
                conn.close()  # a half-read reply must not be reused
                raise
        conn.current = None
        if conn.keep_alive and not conn.closed:
            self._idle.append(conn)
        return ex.status, bytes(ex.body)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
