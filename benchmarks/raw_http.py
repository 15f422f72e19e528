"""A minimal HTTP/1.1 client for abusive requests: one connection per request, the body streamed
from an iterable of chunks (with a Content-Length or chunked), and the answer read while the body
is still being written.

Some clients write the whole body before they read, so a server that refuses early looks slow,
and asyncio's transports drop unread data when a write fails, so a refusal followed by a reset
looks like no answer. Here the body is written and the answer read from one socket by two tasks;
the response is parsed as bytes arrive, the clock stops when it is complete, and whatever of the
body was not yet sent is dropped: the time measured is the server's time to refuse, and a 300 MB
body is never held in memory.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Reply:
    status: int
    """0: no answer (the connection failed or was closed before a full response)."""
    body: bytes
    elapsed_ms: float
    """From the first byte written to the last byte of the answer read."""
    sent_bytes: int
    """Body bytes handed to the socket before the answer was complete."""
    error: str = ""


def _parse(data: bytes, *, eof: bool) -> tuple[int, bytes] | None:
    """(status, body) once ``data`` holds a whole response; None while it does not."""
    end = data.find(_HEAD_END)
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    rest = data[end + len(_HEAD_END) :]
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        return (status, rest[:length]) if len(rest) >= length else None
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = _dechunk(rest)
        return (status, body) if body is not None else None
    return (status, rest) if eof else None


def _dechunk(data: bytes) -> bytes | None:
    out = bytearray()
    at = 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(data[at:line_end].split(b";")[0], 16)
        start = line_end + 2
        if size == 0:
            return bytes(out)
        if len(data) < start + size + 2:
            return None
        out += data[start : start + size]
        at = start + size + 2


async def send(
    port: int,
    method: str,
    path: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    chunks: Iterable[bytes] = (),
    length: int | None = 0,
    timeout_s: float = 60.0,
) -> Reply:
    """One request to 127.0.0.1:``port``. ``length`` None: the body goes chunked."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        return Reply(0, b"", 0.0, 0, f"connect: {exc}")
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers]
    head.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    sent = [0]
    started = time.perf_counter()
    head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    writer = asyncio.create_task(
        _write(sock, head_bytes, chunks, chunked=length is None, sent=sent)
    )
    try:
        status, body, error = await asyncio.wait_for(_read(sock), timeout_s)
    except TimeoutError:
        return Reply(0, b"", timeout_s * 1000, sent[0], f"no answer in {timeout_s:.0f} s")
    finally:
        elapsed_ms = (time.perf_counter() - started) * 1000
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        sock.close()
    return Reply(status, body, elapsed_ms, sent[0], error)


async def _read(sock: socket.socket) -> tuple[int, bytes, str]:
    """Read until a whole response is in; a reset or early close ends it with what came."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    while True:
        try:
            data = await loop.sock_recv(sock, 1 << 16)
        except OSError as exc:
            parsed = _parse(bytes(buffer), eof=True)
            return (*parsed, "") if parsed else (0, bytes(buffer[:300]), repr(exc))
        buffer += data
        parsed = _parse(bytes(buffer), eof=not data)
        if parsed is not None:
            return (*parsed, "")
        if not data:
            return 0, bytes(buffer[:300]), "closed before a full response"


async def _write(
    sock: socket.socket, head: bytes, chunks: Iterable[bytes], *, chunked: bool, sent: list[int]
) -> None:
    """Write the request; stops quietly when the server stops reading (it may have answered,
    and the answer is still readable after a write fails)."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, head)
        for chunk in chunks:
            if chunked:
                await loop.sock_sendall(sock, b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            else:
                await loop.sock_sendall(sock, chunk)
            sent[0] += len(chunk)
        if chunked:
            await loop.sock_sendall(sock, b"0\r\n\r\n")
    except OSError:
        return
