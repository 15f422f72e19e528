"""A closed-loop HTTP load generator, run as its own process so it never shares an event loop
with what it measures.

It speaks HTTP/1.1 keep-alive over raw asyncio protocols with httptools' C parser (uvicorn's),
sending one pre-serialised request per connection at a time. A general client such as aiohttp
spends most of a core per few thousand requests, which on a two-core machine would make the load
generator, not the proxy, the thing being measured.

Output (stdout, one JSON object): request count, errors, measured seconds, per-request latency in
ms, and for streams the time to the first SSE event and the mean gap between events per request.
Only requests that start after the warmup and finish before the end count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson


@dataclass(frozen=True)
class LoadSpec:
    url: str
    """The full endpoint URL, e.g. http://127.0.0.1:8000/v1/chat/completions."""
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    concurrency: int = 1
    warmup_s: float = 2.0
    duration_s: float = 8.0
    max_requests: int = 0
    """Stop once this many requests are measured (0: run the whole duration)."""


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    chunk_gap_ms: list[float] = field(default_factory=list)
    stopped_at: float = 0.0
    """When ``max_requests`` was reached (perf_counter), 0 if it was not."""


class _Exchange:
    """Timing of one request/response on a connection."""

    __slots__ = ("start", "first_event", "last_event", "events", "done")

    def __init__(self, start: float, done: asyncio.Future[int]) -> None:
        self.start = start
        self.first_event = 0.0
        self.last_event = 0.0
        self.events = 0
        self.done = done


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._current: _Exchange | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._current is not None and not self._current.done.done():
            self._current.done.set_exception(ConnectionError("connection closed mid-response"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._current is not None and not self._current.done.done():
                self._current.done.set_exception(exc)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        exchange = self._current
        if exchange is None:
            return
        events = body.count(b"data: ")
        if events:
            now = time.perf_counter()
            if not exchange.events:
                exchange.first_event = now
            exchange.last_event = now
            exchange.events += events

    def on_message_complete(self) -> None:
        exchange = self._current
        if exchange is not None and not exchange.done.done():
            exchange.done.set_result(self._parser.get_status_code())

    def send(self, request: bytes, exchange: _Exchange) -> None:
        assert self._transport is not None
        self._current = exchange
        self._transport.write(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _request_bytes(spec: LoadSpec) -> tuple[str, int, bytes]:
    parts = urlsplit(spec.url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    head = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(spec.body)}",
        *(f"{k}: {v}" for k, v in spec.headers),
    ]
    return host, port, ("\r\n".join(head) + "\r\n\r\n").encode() + spec.body


async def _worker(spec: LoadSpec, result: LoadResult, window: tuple[float, float]) -> None:
    loop = asyncio.get_running_loop()
    host, port, request = _request_bytes(spec)
    measure_from, end = window
    conn: _Connection | None = None
    while time.perf_counter() < end and not result.stopped_at:
        if conn is None or conn.closed:
            try:
                _, conn = await loop.create_connection(_Connection, host, port)
            except OSError:
                result.errors += 1
                await asyncio.sleep(0.01)
                continue
        start = time.perf_counter()
        exchange = _Exchange(start, loop.create_future())
        conn.send(request, exchange)
        try:
            status = await exchange.done
        except (ConnectionError, httptools.HttpParserError):
            status = 0
            conn.close()
            conn = None
        finished = time.perf_counter()
        if start < measure_from or finished > end:
            continue
        if status != 200:
            result.errors += 1
            continue
        result.requests += 1
        result.latencies_ms.append((finished - start) * 1000)
        if result.requests == spec.max_requests:
            result.stopped_at = finished
        if exchange.events:
            result.ttft_ms.append((exchange.first_event - start) * 1000)
        if exchange.events > 1:
            span = exchange.last_event - exchange.first_event
            result.chunk_gap_ms.append(span * 1000 / (exchange.events - 1))
    if conn is not None:
        conn.close()


async def run_load(spec: LoadSpec) -> LoadResult:
    """Drive ``spec.concurrency`` connections in a closed loop for warmup + duration."""
    result = LoadResult()
    now = time.perf_counter()
    window = (now + spec.warmup_s, now + spec.warmup_s + spec.duration_s)
    workers = asyncio.gather(*(_worker(spec, result, window) for _ in range(spec.concurrency)))
    # A server that stops answering must not hang the benchmark: what was measured still counts.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(workers, spec.warmup_s + spec.duration_s + 10)
    result.elapsed_s = result.stopped_at - window[0] if result.stopped_at else spec.duration_s
    return result


def _parse_args(argv: list[str] | None) -> LoadSpec:
    parser = argparse.ArgumentParser(description="Closed-loop HTTP load; prints JSON.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--requests", type=int, default=0, help="stop after this many measured")
    args = parser.parse_args(argv)
    headers = tuple(
        (name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in args.header)
    )
    return LoadSpec(
        url=args.url,
        body=args.body.encode(),
        headers=headers,
        concurrency=args.concurrency,
        warmup_s=args.warmup,
        duration_s=args.duration,
        max_requests=args.requests,
    )


def main(argv: list[str] | None = None) -> None:
    spec = _parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run_load(spec))
    else:
        result = uvloop.run(run_load(spec))
    out: dict[str, Any] = {
        "requests": result.requests,
        "errors": result.errors,
        "elapsed_s": result.elapsed_s,
        "latencies_ms": result.latencies_ms,
        "ttft_ms": result.ttft_ms,
        "chunk_gap_ms": result.chunk_gap_ms,
    }
    sys.stdout.buffer.write(orjson.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
