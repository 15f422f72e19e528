"""The OpenAI Batch API's wire shapes: the create request, and the Batch object.

No I/O: ``batch/service.py`` stores batches, ``api/batches.py`` speaks HTTP, and both use these
to parse what the client sent and to render what it gets back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tidegate.errors import InvalidRequestError
from tidegate.protocol.endpoints import ENDPOINT_OF_PATH
from tidegate.store.models import Batch

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
"""Statuses a batch never leaves."""
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
_WINDOW = re.compile(r"^([1-9][0-9]{0,6})([hms])$")
_UNIT_S = {"h": 3600, "m": 60, "s": 1}


@dataclass(frozen=True, slots=True)
class BatchCreate:
    input_file_id: str
    endpoint: str
    completion_window: str
    window_s: float
    metadata: dict[str, str] | None


def parse_window(value: object, max_s: float) -> float:
    """Seconds of a completion_window like ``24h``, ``30m`` or ``90s`` (OpenAI only accepts
    ``24h``; shorter ones are useful for tests and short jobs)."""
    match = _WINDOW.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidRequestError(
            "completion_window must be a duration like '24h', '30m' or '90s'.",
            param="completion_window",
        )
    seconds = float(int(match.group(1)) * _UNIT_S[match.group(2)])
    if seconds > max_s:
        raise InvalidRequestError(
            f"completion_window may be at most {int(max_s)} seconds on this gateway.",
            param="completion_window",
        )
    return seconds


def _metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise InvalidRequestError(
            f"metadata must be an object of at most {MAX_METADATA_PAIRS} string pairs.",
            param="metadata",
        )
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > MAX_METADATA_KEY:
            raise InvalidRequestError(
                f"metadata keys are strings of at most {MAX_METADATA_KEY} characters and values "
                f"strings of at most {MAX_METADATA_VALUE}.",
                param="metadata",
            )
        if len(item) > MAX_METADATA_VALUE:
            raise InvalidRequestError(
                f"metadata values are at most {MAX_METADATA_VALUE} characters.", param="metadata"
            )
    return dict(value)


def parse_create(data: dict[str, Any], *, max_window_s: float) -> BatchCreate:
    """The body of ``POST /v1/batches``; InvalidRequestError names the field that is wrong."""
    file_id = data.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequestError("input_file_id is required.", param="input_file_id")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or endpoint not in ENDPOINT_OF_PATH:
        raise InvalidRequestError(
            f"endpoint must be one of {', '.join(ENDPOINT_OF_PATH)}.", param="endpoint"
        )
    window = data.get("completion_window")
    window_s = parse_window(window, max_window_s)
    assert isinstance(window, str)
    return BatchCreate(file_id, endpoint, window, window_s, _metadata(data.get("metadata")))


def _ts(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def batch_object(row: Batch, counts: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The OpenAI Batch object. ``counts``: live (total, completed, failed) while it runs;
    None: the counts stored on the row."""
    total, completed, failed = (
        counts
        if counts is not None
        else (
            row.total,
            row.completed,
            row.failed,
        )
    )
    errors = None
    if row.errors:
        errors = {"object": "list", "data": row.errors}
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": errors,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": _ts(row.created_at),
        "in_progress_at": _ts(row.in_progress_at),
        "expires_at": _ts(row.expires_at),
        "finalizing_at": _ts(row.finalizing_at),
        "completed_at": _ts(row.completed_at),
        "failed_at": _ts(row.failed_at),
        "expired_at": _ts(row.expired_at),
        "cancelling_at": _ts(row.cancelling_at),
        "cancelled_at": _ts(row.cancelled_at),
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": row.batch_metadata,
    }


def line_error(
    line: int | None, code: str, message: str, param: str | None = None
) -> dict[str, Any]:
    """One entry of a batch's ``errors.data`` (OpenAI's shape)."""
    return {"code": code, "message": message, "param": param, "line": line}
