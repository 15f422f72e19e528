"""The one table from tidegate errors to OpenAI-format error responses.

Every ``TidegateError`` keeps its status, type, message, param and code; overload errors add
``Retry-After``. Anything else is an internal bug: a 500 that names the request id and never
echoes internals. Every 500 (a bug, or a ``StoreError``) is logged with its traceback and the
request id (``log_internal``), so none goes unnoticed.
"""

from __future__ import annotations

import logging
import math

import orjson

from tidegate.errors import LimitExceededError, TidegateError

Headers = list[tuple[bytes, bytes]]
REQUEST_ID_KEY = "tidegate.request_id"
"""Where the request id middleware leaves the gateway's id in the ASGI scope."""

log = logging.getLogger(__name__)


def log_internal(error: BaseException, request_id: str | None) -> None:
    """The log line of a 500: the request id and the traceback."""
    log.error(
        "request %s failed inside the gateway: %s",
        request_id or "(no id)",
        type(error).__name__,
        exc_info=error,
    )


def error_body(message: str, error_type: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    )


def error_response(error: TidegateError) -> tuple[int, bytes, Headers]:
    headers: Headers = list(error.headers) if isinstance(error, LimitExceededError) else []
    if error.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after_s))).encode()))
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    return (
        error.status,
        error_body(error.message, error.error_type, error.param, error.code),
        headers,
    )


def internal_error_response(request_id: str) -> tuple[int, bytes, Headers]:
    message = (
        f"The gateway failed to handle request {request_id}. This is a bug in tidegate, not in "
        "your request; retry, and report the request id if it persists."
    )
    return 500, error_body(message, "internal_error", None, None), []
