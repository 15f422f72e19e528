"""The abusive inputs of ``make bench-abuse``: each a request a tenant could send to stall or
exhaust a gateway, built once and replayed.

Large bodies are described as a prefix, one chunk repeated and a suffix, so a 300 MB upload is
streamed from one 1 MiB buffer and never built in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson

MIB = 1024 * 1024
BOUNDARY = "tidegate-abuse-boundary"
_JSON = "application/json"


@dataclass(frozen=True)
class Body:
    prefix: bytes = b""
    chunk: bytes = b""
    repeats: int = 0
    suffix: bytes = b""

    @property
    def length(self) -> int:
        return len(self.prefix) + len(self.chunk) * self.repeats + len(self.suffix)

    def chunks(self) -> Iterator[bytes]:
        if self.prefix:
            yield self.prefix
        for _ in range(self.repeats):
            yield self.chunk
        if self.suffix:
            yield self.suffix


@dataclass(frozen=True)
class Case:
    """One abusive request."""

    name: str
    description: str
    method: str
    path: str
    content_type: str
    body: Body
    chunked: bool = False
    """Send without Content-Length (Transfer-Encoding: chunked)."""
    large: bool = False
    """Megabytes per request: sent fewer times (``Options.large_count``)."""
    batch_file: bool = False
    """A batch input file: when its upload is accepted, a batch from it shows where the bad
    line is refused instead."""
    note: str = ""
    """Why a figure is what it is, printed under the table."""


def _json(data: object) -> Body:
    return Body(prefix=orjson.dumps(data))


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def chat_line(index: int, model: str) -> bytes:
    """One ordinary batch input line."""
    body = {"model": model, "messages": [_user("Say hello.")], "max_tokens": 4}
    line = {"custom_id": f"line-{index}", "method": "POST", "url": "/v1/chat/completions"}
    return orjson.dumps({**line, "body": body}) + b"\n"


def multipart(content: Body, *, filename: str = "input.jsonl") -> Body:
    """A /v1/files upload (purpose=batch) whose file part is ``content``."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return Body(
        prefix=head + content.prefix,
        chunk=content.chunk,
        repeats=content.repeats,
        suffix=content.suffix + tail,
    )


MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def batch_file(lines: int, model: str) -> bytes:
    return b"".join(chat_line(i, model) for i in range(lines))


def oversized_line_file(max_body_bytes: int, model: str) -> bytes:
    """Two ordinary lines around one whose body is larger than ``server.max_body_bytes``."""
    big = {"model": model, "messages": [_user("x" * (max_body_bytes + 1024))], "max_tokens": 4}
    line = {"custom_id": "too-big", "method": "POST", "url": "/v1/chat/completions", "body": big}
    return chat_line(0, model) + orjson.dumps(line) + b"\n" + chat_line(1, model)


def bad_max_tokens_file(model: str) -> bytes:
    """An ordinary line, then one whose max_tokens is a string."""
    body = {"model": model, "messages": [_user("hi")], "max_tokens": "4"}
    line = {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": body}
    return chat_line(0, model) + orjson.dumps(line) + b"\n"


def request_cases(
    *, model: str, max_body_bytes: int, messages: int, prompts: int, upload_mb: int
) -> list[Case]:
    """Every abusive input that is one request (the batch runs are ``abuse_batches``)."""
    over = (max_body_bytes + MIB) // MIB  # whole MiB chunks past the limit
    filler = Body(
        prefix=b'{"model": "' + model.encode() + b'", "pad": "',
        chunk=b"x" * MIB,
        repeats=over,
        suffix=b'"}',
    )
    upload_chunk = chat_line(0, model) * (MIB // len(chat_line(0, model)))
    upload = multipart(Body(chunk=upload_chunk, repeats=upload_mb * MIB // len(upload_chunk)))
    huge_json = Body(
        prefix=b'{"input_file_id": "',
        chunk=b"f" * MIB,
        repeats=upload_mb,
        suffix=b'", "endpoint": "/v1/chat/completions", "completion_window": "24h"}',
    )
    chat = "/v1/chat/completions"
    return [
        Case(
            "chat-100k-messages",
            f"chat, {messages:,} messages",
            "POST",
            chat,
            _JSON,
            _json({"model": model, "messages": [_user("hello")] * messages, "max_tokens": 4}),
        ),
        Case(
            "chat-over-max-body",
            "chat body > max_body_bytes, Content-Length",
            "POST",
            chat,
            _JSON,
            filler,
        ),
        Case(
            "chat-over-max-body-chunked",
            "chat body > max_body_bytes, chunked",
            "POST",
            chat,
            _JSON,
            filler,
            chunked=True,
        ),
        Case(
            "completions-100k-prompts",
            f"/v1/completions, {prompts:,} prompts",
            "POST",
            "/v1/completions",
            _JSON,
            _json({"model": model, "prompt": ["hi"] * prompts, "max_tokens": 4}),
        ),
        Case(
            "max-tokens-string",
            'chat, "max_tokens": "4"',
            "POST",
            chat,
            _JSON,
            _json({"model": model, "messages": [_user("hi")], "max_tokens": "4"}),
        ),
        Case(
            "completions-max-tokens-string",
            '/v1/completions, "max_completion_tokens": "4"',
            "POST",
            "/v1/completions",
            _JSON,
            _json({"model": model, "prompt": "hi", "max_completion_tokens": "4"}),
        ),
        Case(
            "files-malformed-multipart",
            "/v1/files, malformed multipart",
            "POST",
            "/v1/files",
            MULTIPART_TYPE,
            Body(prefix=b"this is not a multipart body\r\n--" + BOUNDARY.encode() + b"--\r\n"),
        ),
        Case(
            "files-upload-300mb",
            f"/v1/files, {upload_mb} MB, Content-Length",
            "POST",
            "/v1/files",
            MULTIPART_TYPE,
            upload,
            large=True,
        ),
        Case(
            "files-upload-300mb-chunked",
            f"/v1/files, {upload_mb} MB, chunked",
            "POST",
            "/v1/files",
            MULTIPART_TYPE,
            upload,
            chunked=True,
            large=True,
            note="without a Content-Length the upload can only be refused once "
            "batch.max_file_bytes (200 MiB by default) has arrived",
        ),
        Case(
            "batches-300mb",
            f"POST /v1/batches, {upload_mb} MB, Content-Length",
            "POST",
            "/v1/batches",
            _JSON,
            huge_json,
            large=True,
        ),
        Case(
            "batches-300mb-chunked",
            f"POST /v1/batches, {upload_mb} MB, chunked",
            "POST",
            "/v1/batches",
            _JSON,
            huge_json,
            chunked=True,
            large=True,
        ),
        Case(
            "files-line-over-max-body",
            "/v1/files, a line > max_body_bytes",
            "POST",
            "/v1/files",
            MULTIPART_TYPE,
            multipart(Body(prefix=oversized_line_file(max_body_bytes, model))),
            large=True,
            batch_file=True,
        ),
        Case(
            "files-line-max-tokens-string",
            '/v1/files, a line with "max_tokens": "4"',
            "POST",
            "/v1/files",
            MULTIPART_TYPE,
            multipart(Body(prefix=bad_max_tokens_file(model))),
            batch_file=True,
        ),
    ]
