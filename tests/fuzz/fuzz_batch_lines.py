"""Fuzz the JSONL batch reader (``batch/validate.LineChecker``), which parses and checks every
line of an uploaded batch input file before any line runs.

The first byte picks the mode (bit 0: a generated valid file, else the rest of the input is
the file as is) and the endpoint (bit 1: /v1/completions, else chat).

Invariants, for any file:
- ``check`` never raises: every problem is a reported error with a line number in the file;
- at most ``MAX_REPORTED_ERRORS`` are listed, and the count covers them all;
- accepted lines are in file order, with distinct custom_ids, each the one on its line, and a
  body that is the line's JSON object.
For a valid file (any custom_ids, texts and blank lines, LF or CRLF), every line is accepted as
sent.
"""

from __future__ import annotations

import asyncio
import tempfile

import atheris
import orjson

from tidegate.batch.validate import MAX_REPORTED_ERRORS, LineChecker, line_body
from tidegate.config import Config
from tidegate.pipeline.validation import ModelLimits, RequestValidator
from tidegate.routing.build import build_routing
from tidegate.tenancy.keys import Principal
from tidegate.tenancy.policy import KeySettings, TenantSettings

MODEL = "fake-model"
MAX_LINE_BYTES = 2048
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")

_CONFIG = Config(
    home=tempfile.mkdtemp(prefix="fuzz-batch-"),
    engines={"replicas": 0},
    upstreams=[{"url": "http://127.0.0.1:9/v1", "model": MODEL}],
)
CHECKER = LineChecker(
    routing=build_routing(_CONFIG),
    validator=RequestValidator(
        config=_CONFIG.validation,
        models={MODEL: ModelLimits(context_length=None, counter=None)},
    ),
    max_line_bytes=MAX_LINE_BYTES,
)
PRINCIPAL = Principal(
    key_id="key_fuzz",
    role="member",
    name="fuzz",
    tenant_id="ten_fuzz",
    tenant_name="fuzz",
    tier="batch",
    tenant=TenantSettings(),
    key=KeySettings(),
)
LOOP = asyncio.new_event_loop()


def _body(endpoint: str, text: str) -> dict[str, object]:
    if endpoint == ENDPOINTS[0]:
        return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    return {"model": MODEL, "prompt": text, "max_tokens": 4}


Expected = list[tuple[int, str, dict[str, object]]]


def _valid_file(fdp: atheris.FuzzedDataProvider, endpoint: str) -> tuple[bytes, Expected]:
    newline = b"\r\n" if fdp.ConsumeBool() else b"\n"
    lines: list[bytes] = []
    expected: Expected = []
    for index in range(fdp.ConsumeIntInRange(1, 24)):
        if fdp.ConsumeIntInRange(0, 5) == 0:
            lines.append(b"   " if fdp.ConsumeBool() else b"")
        custom_id = fdp.ConsumeUnicodeNoSurrogates(24).replace("\x00", "") or "id"
        custom_id = f"{index}-{custom_id}"  # distinct
        body = _body(endpoint, fdp.ConsumeUnicodeNoSurrogates(64))
        item = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
        lines.append(orjson.dumps(item))
        expected.append((len(lines), custom_id, body))
    return newline.join(lines) + (newline if fdp.ConsumeBool() else b""), expected


def check(data: bytes) -> None:
    mode = data[0] if data else 0
    endpoint = ENDPOINTS[(mode >> 1) & 1]
    expected = None
    if mode & 1:
        content, expected = _valid_file(atheris.FuzzedDataProvider(data[1:]), endpoint)
    else:
        content = data[1:]
    checked = LOOP.run_until_complete(CHECKER.check(content, endpoint, PRINCIPAL))
    file_lines = content.split(b"\n")
    assert len(checked.errors) == min(checked.error_count, MAX_REPORTED_ERRORS)
    for error in checked.errors:
        assert error["line"] is None or 1 <= error["line"] <= len(file_lines), error
        assert isinstance(error["code"], str) and isinstance(error["message"], str), error
    seen: set[str] = set()
    previous = 0
    for line in checked.lines:
        line_no, custom_id, raw = line
        assert previous < line_no <= len(file_lines), line
        previous = line_no
        assert custom_id not in seen, line
        seen.add(custom_id)
        item = orjson.loads(file_lines[line_no - 1])
        assert item["custom_id"] == custom_id
        assert line_body(raw) == item["body"]
    if expected is not None:
        assert checked.error_count == 0, checked.errors
        got = [(no, custom_id, line_body(raw)) for no, custom_id, raw in checked.lines]
        assert got == expected
