"""Fuzz the multipart upload path of ``POST /v1/files`` (``api/files._read_upload``: Starlette's
parser over python-multipart, behind the gateway's size cap), fed the way an ASGI server
feeds it: the body cut into reads, and possibly the client leaving midway.

The first byte picks the mode: 0 arbitrary body with a well-formed content type, 1 arbitrary
body and content type, 2 a valid upload, 3 a valid upload past the size cap, 4 a valid upload
the client abandons.

Invariants:
- anything the client sends ends in the upload or a gateway error (a 4xx: InvalidRequestError,
  PayloadTooLargeError, ClientClosedError), never another exception;
- a valid upload comes back exactly: purpose, filename and every byte of the file;
- past the cap it is a PayloadTooLargeError; an abandoned one a ClientClosedError.
"""

from __future__ import annotations

import asyncio
import string
from typing import Any

import atheris
from starlette.requests import Request

from tidegate.api.files import MULTIPART_SLACK_BYTES, _read_upload
from tidegate.batch.files import FileLimits
from tidegate.errors import ClientClosedError, PayloadTooLargeError, TidegateError

LIMITS = FileLimits(max_bytes=1024, max_lines=100)
CAP = LIMITS.max_bytes + MULTIPART_SLACK_BYTES
LOOP = asyncio.new_event_loop()
_FILENAME_CHARS = string.ascii_letters + string.digits + " ._-()"


def _request(body: bytes, content_type: bytes, cuts: list[int], *, leave: bool) -> Request:
    edges = sorted({cut % (len(body) + 1) for cut in cuts} | {0, len(body)})
    reads = [body[start:end] for start, end in zip(edges, edges[1:], strict=False)] or [b""]
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/files",
        "query_string": b"",
        "headers": [(b"content-type", content_type)],
    }
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": read, "more_body": index < len(reads) - 1 or leave}
        for index, read in enumerate(reads)
    ]
    if leave:
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Request(scope, receive)


async def _upload(request: Request) -> tuple[str, str, bytes]:
    async with _read_upload(request, LIMITS) as (purpose, filename, content):
        return purpose, filename, content.read()


def _run(request: Request) -> tuple[str, str, bytes] | TidegateError:
    try:
        return LOOP.run_until_complete(_upload(request))
    except TidegateError as error:
        assert error.status in (400, 413, 499), error
        return error


def _valid(fdp: atheris.FuzzedDataProvider, size: int) -> tuple[bytes, bytes, str, bytes]:
    boundary = "b" + "".join(string.ascii_letters[fdp.ConsumeIntInRange(0, 51)] for _ in range(16))
    name_length = fdp.ConsumeIntInRange(1, 40)
    filename = "".join(
        _FILENAME_CHARS[fdp.ConsumeIntInRange(0, len(_FILENAME_CHARS) - 1)]
        for _ in range(name_length)
    )
    content = fdp.ConsumeBytes(size) if size <= 4096 else b"x" * size
    if boundary.encode() in content:
        content = content.replace(boundary.encode(), b"")
    delimiter = b"--" + boundary.encode()
    parts = [
        delimiter,
        b'Content-Disposition: form-data; name="purpose"',
        b"",
        b"batch",
        delimiter,
        f'Content-Disposition: form-data; name="file"; filename="{filename}"'.encode(),
        b"Content-Type: application/jsonl",
        b"",
        content,
        delimiter + b"--",
        b"",
    ]
    body = b"\r\n".join(parts)
    return body, f"multipart/form-data; boundary={boundary}".encode(), filename, content


def check(data: bytes) -> None:
    mode = (data[0] if data else 0) % 5
    fdp = atheris.FuzzedDataProvider(data[1:])
    cuts = [fdp.ConsumeIntInRange(0, 1 << 20) for _ in range(fdp.ConsumeIntInRange(0, 6))]
    if mode in (0, 1):
        if mode == 0:
            content_type = b"multipart/form-data; boundary=" + fdp.ConsumeBytes(20)
        else:
            content_type = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))
        body = fdp.ConsumeBytes(fdp.remaining_bytes())
        result = _run(_request(body, content_type, cuts, leave=False))
        if not isinstance(result, TidegateError):
            assert len(result[2]) <= CAP
        return
    size = CAP + 1 if mode == 3 else fdp.ConsumeIntInRange(0, LIMITS.max_bytes)
    body, content_type, filename, content = _valid(fdp, size)
    if mode == 4:
        body = body[: fdp.ConsumeIntInRange(0, len(body) - 1)]
    result = _run(_request(body, content_type, cuts, leave=mode == 4))
    if mode == 2:
        assert result == ("batch", filename, content), result
    elif mode == 3:
        assert isinstance(result, PayloadTooLargeError), result
    else:
        assert isinstance(result, ClientClosedError), result
