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
        pending = self._buffer
        if pending.endswith(b"\r") and data.startswith(b"\n"):
            pending = pending[:-1]  # a CRLF cut between two reads
        if b"\r\n" in data:  # normalise CRLF framing; rare, so the common path stays cheap
            # Only the new bytes: the pending ones are normalised already, and doing it twice
            # would turn "\r\r\n" into "\n" or "\r\n" depending on where the reads were cut.
            data = data.replace(b"\r\n", b"\n")
        buffer = pending + data if pending else data
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
    # One space after the colon is framing (as in the fast path above); any more are data.
    lines = [
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in event.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


def encode_event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str, error_type: str, code: str | None = None) -> bytes:
    """An in-band error, sent when a stream cannot go on after its first byte."""
    return encode_event(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    )
