"""Hold N streams open at once and say whether every one arrived whole and without a pause.

Run as its own process (like the load generator) so it never shares an event loop with what it
measures. It speaks HTTP/1.1 over raw asyncio protocols with httptools' parser: at hundreds of
streams of paced chunks a general client would spend the cores the servers need.

    python -m benchmarks.stream_client --url URL --body JSON --streams 64 [--header 'K: V']

Output (stdout, one JSON object): streams, completed (status 200 and the whole body), the fewest
and most SSE events any stream got, and the longest gap between two events of one stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson


@dataclass
class _Stream:
    done: asyncio.Future[int]
    events: int = 0
    last_event: float = 0.0
    max_gap_s: float = 0.0


@dataclass
class StreamsResult:
    streams: int
    completed: int = 0
    min_events: int = 0
    max_events: int = 0
    max_gap_ms: float = 0.0
    errors: list[str] = field(default_factory=list)


class _Connection(asyncio.Protocol):
    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self._parser = httptools.HttpResponseParser(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._stream.done.done():
            self._stream.done.set_exception(ConnectionError("connection closed mid-response"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self._stream.done.done():
                self._stream.done.set_exception(exc)

    def on_body(self, body: bytes) -> None:
        events = body.count(b"data: ")
        if not events:
            return
        stream = self._stream
        now = time.perf_counter()
        if stream.events:
            stream.max_gap_s = max(stream.max_gap_s, now - stream.last_event)
        stream.last_event = now
        stream.events += events

    def on_message_complete(self) -> None:
        if not self._stream.done.done():
            self._stream.done.set_result(self._parser.get_status_code())


def _request(url: str, body: bytes, headers: tuple[tuple[str, str], ...]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers),
    ]
    return host, port, ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _one(target: tuple[str, int, bytes], timeout_s: float) -> _Stream:
    loop = asyncio.get_running_loop()
    host, port, request = target
    stream = _Stream(loop.create_future())
    transport, _ = await loop.create_connection(lambda: _Connection(stream), host, port)
    try:
        transport.write(request)
        status = await asyncio.wait_for(stream.done, timeout_s)
        if status != 200:
            raise ConnectionError(f"status {status}")
        return stream
    finally:
        transport.close()


async def run_streams(
    url: str,
    body: bytes,
    streams: int,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    timeout_s: float = 30.0,
) -> StreamsResult:
    """Open ``streams`` streams at once and wait for all of them."""
    target = _request(url, body, headers)
    outcomes = await asyncio.gather(
        *(_one(target, timeout_s) for _ in range(streams)), return_exceptions=True
    )
    result = StreamsResult(streams=streams)
    finished = [o for o in outcomes if isinstance(o, _Stream)]
    result.completed = len(finished)
    result.errors = sorted(
        {f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)}
    )
    if finished:
        result.min_events = min(s.events for s in finished)
        result.max_events = max(s.events for s in finished)
        result.max_gap_ms = max(s.max_gap_s for s in finished) * 1000
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="N concurrent SSE streams; prints JSON.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per stream")
    args = parser.parse_args(argv)
    headers = tuple(
        (name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in args.header)
    )
    coro = run_streams(
        args.url, args.body.encode(), args.streams, headers=headers, timeout_s=args.timeout
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is for other checkouts
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    out: dict[str, Any] = {
        "streams": result.streams,
        "completed": result.completed,
        "min_events": result.min_events,
        "max_events": result.max_events,
        "max_gap_ms": result.max_gap_ms,
        "errors": result.errors[:5],
    }
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.buffer.write(orjson.dumps(out))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
