"""Server-sent events as the OpenAI streaming routes frame them.

``SSESplitter`` cuts an upstream byte stream into whole events without copying more than it
must, so the gateway can relay each event's original bytes and look inside only where needed.
"""

from __future__ import annotations

from typing import Any

import orjson

DONE_EVENT = b"data: [DONE]\n\n"
DONE_PAYLOAD = b"[DONE]"


class SSESplitter:
    """Feed raw bytes; get back complete events (each ending in a blank line)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if b"\r\n" in buffer:  # normalise CRLF framing; rare, so the common path stays cheap
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            events.append(buffer[start : end + 2])
            start = end + 2
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes received after the last complete event."""
        return self._buffer


def event_data(event: bytes) -> bytes | None:
    """The payload of an event's ``data:`` line(s); None for comments and other fields."""
    if event.startswith(b"data: "):
        body = event[6:].rstrip(b"\n")
        if b"\n" not in body:
            return body
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def encode_event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str, error_type: str, code: str | None = None) -> bytes:
    """An in-band error, sent when a stream cannot go on after its first byte."""
    return encode_event(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    )
