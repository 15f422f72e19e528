"""Fuzz the SSE parser (``protocol/sse``): the splitter the gateway relays upstream streams with.

Invariants, for any bytes cut into any reads:
- feeding never raises; every event ends with its first blank line;
- the events and what is pending are exactly the input, CRLF framing normalised to LF, and
  they are the same however the input was cut into reads;
- ``event_data`` never raises.
For a valid stream (data events, comments, ``[DONE]``; LF or CRLF framing; one or several data
lines), the payload of every event comes back exactly as it was sent.
"""

from __future__ import annotations

import atheris

from tidegate.protocol.sse import DONE_PAYLOAD, SSESplitter, event_data

MAX_CUTS = 8


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    if not data:
        return [data]
    edges = sorted({point % (len(data) + 1) for point in points} | {0, len(data)})
    return [data[start:end] for start, end in zip(edges, edges[1:], strict=False)]


def _split(reads: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = SSESplitter()
    events: list[bytes] = []
    for read in reads:
        events.extend(splitter.feed(read))
    return events, splitter.pending


def _arbitrary(fdp: atheris.FuzzedDataProvider) -> None:
    points = [fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, MAX_CUTS))]
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    events, pending = _split(_cut(raw, points))
    for event in events:
        assert event.endswith(b"\n\n") and b"\n\n" not in event[:-2], event
        event_data(event)
    assert b"".join(events) + pending == raw.replace(b"\r\n", b"\n")
    assert (events, pending) == _split([raw]), "the events depend on how the reads were cut"


def _line_safe(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"")


def _valid_stream(fdp: atheris.FuzzedDataProvider) -> None:
    newline = b"\r\n" if fdp.ConsumeBool() else b"\n"
    expected: list[bytes | None] = []
    stream = b""
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 0:  # a comment, such as a keep-alive
            stream += b":" + _line_safe(fdp.ConsumeBytes(16)) + newline + newline
            expected.append(None)
        elif kind == 1:
            stream += b"data: [DONE]" + newline + newline
            expected.append(DONE_PAYLOAD)
        else:
            lines = [_line_safe(fdp.ConsumeBytes(32)) for _ in range(kind - 1)]
            spaced = fdp.ConsumeBool()  # "data: x" and "data:x" are both valid
            prefix = b"data: " if spaced else b"data:"
            if not spaced:
                lines = [line.lstrip(b" ") for line in lines]
            stream += b"".join(prefix + line + newline for line in lines) + newline
            expected.append(b"\n".join(lines))
    points = [fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, MAX_CUTS))]
    events, pending = _split(_cut(stream, points))
    assert pending == b""
    got = [event_data(event) for event in events]
    assert got == expected, (events, expected)


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        _valid_stream(fdp)
    else:
        _arbitrary(fdp)
