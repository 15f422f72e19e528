"""Validation of a batch's input file, before any line runs.

Every line is checked the way the live request path checks a request (the same schema, model
routing, model access, sampling caps and prompt length — ``RequestValidator.check``), so a batch
either fails up front with every problem and its line number, or all its lines are requests the
gateway would accept. Limits and budgets are not checked here: they apply when a line runs.

A line may be no larger than a request body (``server.max_body_bytes``). A 50,000-line file
is a lot of work in one go, so the check hands the event loop back every few milliseconds:
live requests (and ``/healthz``) are never held up behind a batch being validated.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tidegate.errors import TidegateError
from tidegate.pipeline.validation import RequestValidator
from tidegate.protocol.batches import line_error
from tidegate.protocol.endpoints import ENDPOINT_OF_PATH, Endpoint
from tidegate.protocol.requests import CompletionRequest, RequestValidationFailure, check_body
from tidegate.routing.replicas import RoutingTable
from tidegate.tenancy.keys import Principal

MAX_REPORTED_ERRORS = 100
"""A file with thousands of bad lines reports the first ones; that is enough to fix it."""
_SLICE_S = 0.005
"""Longest stretch of checking between two turns of the event loop."""


InputLine = tuple[int, str, bytes]
"""A checked line: its 1-based number (counting every line of the file, blank ones included),
its custom_id, and the file's line as sent, exactly sized. A plain tuple of ints, str and bytes
is untracked by the garbage collector, so 50,000 checked lines add nothing to a full collection
(as dataclass instances they added 10-60 ms to each; parsed bodies were millions of objects,
and ``orjson.dumps`` output keeps a 4 KiB buffer each: 195 MiB for 50,000 lines)."""


def line_body(raw: bytes) -> dict[str, Any]:
    """The request body of a checked line, parsed afresh: the caller owns it."""
    body: dict[str, Any] = orjson.loads(raw)["body"]
    return body


@dataclass(slots=True)
class Checked:
    lines: list[InputLine] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0

    def fail(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(line_error(line, code, message, param))


class LineChecker:
    def __init__(
        self, *, routing: RoutingTable, validator: RequestValidator, max_line_bytes: int
    ) -> None:
        """``max_line_bytes``: the largest line, the gateway's largest request body."""
        self._routing = routing
        self._validator = validator
        self._max_line_bytes = max_line_bytes

    async def check(self, data: bytes, endpoint: str, principal: Principal) -> Checked:
        """Parse and check every line of the input file ``data``."""
        route = ENDPOINT_OF_PATH[endpoint]
        checked = Checked()
        seen: set[str] = set()
        turn = time.perf_counter()
        for line_no, raw in enumerate(io.BytesIO(data), start=1):
            if time.perf_counter() - turn > _SLICE_S:
                await asyncio.sleep(0)
                turn = time.perf_counter()
            if not raw.strip():
                continue  # a trailing newline, or blank lines between requests
            if len(raw.rstrip(b"\r\n")) > self._max_line_bytes:
                checked.fail(
                    line_no,
                    "line_too_large",
                    f"The line is {len(raw):,} bytes; a request may be at most "
                    f"{self._max_line_bytes:,} bytes (server.max_body_bytes). Shorten it.",
                )
                continue
            parsed = self._parse(raw, line_no, endpoint, checked)
            if parsed is None:
                continue
            custom_id, body = parsed
            if custom_id in seen:
                checked.fail(
                    line_no,
                    "duplicate_custom_id",
                    f"The custom_id '{custom_id[:80]}' appears more than once; every "
                    "line needs its own.",
                    "custom_id",
                )
                continue
            seen.add(custom_id)
            if await self._check_body(line_no, raw, body, route, principal, checked):
                checked.lines.append((line_no, custom_id, raw))
        if not checked.lines and not checked.error_count:
            checked.fail(None, "empty_file", "The input file has no requests.")
        return checked

    def _parse(
        self, raw: bytes, line_no: int, endpoint: str, checked: Checked
    ) -> tuple[str, dict[str, Any]] | None:
        """The line's (custom_id, body), or None when it failed."""
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            checked.fail(line_no, "invalid_json_line", "The line is not valid JSON.")
            return None
        if not isinstance(item, dict):
            checked.fail(line_no, "invalid_request", "Each line must be a JSON object.")
            return None
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
            checked.fail(
                line_no,
                "missing_required_parameter",
                "custom_id must be a string of 1 to 512 characters.",
                "custom_id",
            )
            return None
        if "\x00" in custom_id:
            checked.fail(
                line_no,
                "invalid_request",
                "custom_id must not contain a NUL character.",
                "custom_id",
            )
            return None
        if item.get("method") != "POST":
            checked.fail(line_no, "invalid_method", "method must be 'POST'.", "method")
            return None
        if item.get("url") != endpoint:
            checked.fail(
                line_no,
                "invalid_url",
                f"url must be the batch's endpoint, '{endpoint}'.",
                "url",
            )
            return None
        body = item.get("body")
        if not isinstance(body, dict):
            checked.fail(line_no, "invalid_request", "body must be a JSON object.", "body")
            return None
        return custom_id, body

    async def _check_body(
        self,
        line_no: int,
        raw: bytes,
        body: dict[str, Any],
        route: Endpoint,
        principal: Principal,
        checked: Checked,
    ) -> bool:
        """Whether the body passes every check (a failure is recorded)."""
        try:
            check_body(route, body, self._validator.body_caps)
        except RequestValidationFailure as failure:
            checked.fail(line_no, failure.code or "invalid_request", failure.message, failure.param)
            return False
        if body.get("stream"):
            checked.fail(line_no, "invalid_request", "Batch requests cannot stream.", "body.stream")
            return False
        try:
            model = self._routing.route(body["model"]).model
            # check() normalises the request it gets; the stored body stays as the client sent
            # it: a shallow copy is enough, since the checks replace top-level fields only.
            copy = CompletionRequest(route, dict(body))
            await self._validator.check(route, copy, principal.tenant, principal.key, model)
        except TidegateError as error:
            checked.fail(line_no, error.code or error.error_type, error.message, error.param)
            return False
        return True
