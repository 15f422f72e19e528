"""Small raw-ASGI helpers for the hot routes (fewer allocations than Request/Response)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tidegate.errors import AuthenticationError, PayloadTooLargeError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CONTENT_TYPE = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
GATEWAY_REQUEST_ID_HEADER = b"x-tidegate-request-id"
_CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


class RequestIds:
    """The gateway's own request ids: a random per-process prefix and a counter. Unique across
    processes and restarts, without a system call per request. Every request gets one; it keys
    the usage record, the prompt log and the upstream call, whatever the client sends."""

    def __init__(self) -> None:
        self._prefix = "req_" + os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"


def client_request_id(scope: Scope) -> str | None:
    """The client's x-request-id when it is sane, else None. Only a correlation id: echoed
    and logged, never an identity (a client may send the same one on every request, or
    another tenant's)."""
    given = header(scope, b"x-request-id")
    if given is not None and _CLIENT_REQUEST_ID.match(given):
        return given.decode()
    return None


def request_id_headers(request_id: str, client_id: str | None) -> Headers:
    """``x-request-id`` echoes the client's id when it sent one (else the gateway's);
    ``x-tidegate-request-id`` is always the gateway's: the usage record's id."""
    own = request_id.encode()
    echoed = own if client_id is None else client_id.encode()
    return [(b"x-request-id", echoed), (GATEWAY_REQUEST_ID_HEADER, own)]


def bearer_token(scope: Scope) -> str:
    """The key from ``Authorization: Bearer <key>``; "" when no header was sent.

    A header without the ``Bearer`` scheme (a bare key, ``Basic ...``) is refused with its own
    message: "you didn't provide a key" would send the caller looking in the wrong place.
    """
    value = header(scope, b"authorization")
    if value is None or not value.strip():
        return ""
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    raise AuthenticationError(
        "The Authorization header must read `Bearer <key>`: this one has no `Bearer ` prefix "
        "(send `Authorization: Bearer tg-...`).",
        code="invalid_authorization_header",
    )


MAX_CONTROL_BODY_BYTES = 1024 * 1024
"""The largest JSON body of an admin or batch route (tenant settings, traffic policies, a batch
to create): far above any real one, far below a prompt-sized ``server.max_body_bytes``."""


async def read_body(
    scope: Scope, receive: Receive, limit: int, *, fix: str = "raise server.max_body_bytes"
) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes: a declared
    Content-Length is checked before reading, a chunked body while it arrives, so no more than
    ``limit`` bytes are ever held. ``fix``: how the operator could allow more."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, fix)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, fix)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_control_body(scope: Scope, receive: Receive, max_body_bytes: int) -> bytes:
    """The JSON body of an admin or batch route, capped at MAX_CONTROL_BODY_BYTES."""
    limit = min(max_body_bytes, MAX_CONTROL_BODY_BYTES)
    return await read_body(scope, receive, limit, fix="send a smaller JSON document")


def _too_large(limit: int, fix: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body is larger than this route accepts ({limit:,} bytes). Shorten it, "
        f"or {fix}.",
        code="request_too_large",
    )


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
