"""The usage event: one per request, the in-memory and write-ahead form of a usage record.

Its fields are exactly the columns of ``store.models.UsageRecord``. On disk an event is one JSON
line (orjson serialises the slotted dataclass and its aware datetime directly, which keeps
``UsageMeter.record`` cheap).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

import orjson

UsageKind = Literal["live", "batch", "shadow"]
CHARGED_KINDS: tuple[UsageKind, ...] = ("live", "batch")
"""Shadow traffic is the operator's experiment: it is metered but never charged to a tenant."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageEvent:
    request_id: str
    created_at: datetime
    """When the request arrived (aware, UTC); the day a rollup counts it in."""
    tenant_id: str
    key_id: str | None
    model: str
    replica: str | None
    route: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_usd: float
    ttft_ms: float | None
    duration_ms: float
    status: int
    outcome: str
    kind: UsageKind = "live"
    client_request_id: str | None = None
    """The client's x-request-id, for correlation only: ``request_id`` is the gateway's own,
    so a client repeating an id (or borrowing another tenant's) cannot merge records."""
    pool: str | None = None
    """The pool that served the request (None: refused before any did)."""
    route_reason: str | None = None
    """Why that pool served it (``routing.rules``: default, rule:<i>, time_window:<i>, then
    /split, /cheapest, /only_meeting_target, /fastest, /fallback or /spillover)."""

    def to_json_line(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_APPEND_NEWLINE)

    def as_row(self) -> dict[str, Any]:
        """The column values for an INSERT."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    @classmethod
    def from_json_line(cls, line: bytes) -> UsageEvent:
        """Parse one WAL line; raises ValueError (orjson's JSONDecodeError is one) or
        TypeError (a missing field) on a damaged line."""
        data = orjson.loads(line)
        if not isinstance(data, dict):
            raise ValueError("a usage line must be a JSON object")
        # Unknown keys are ignored, so a WAL written by a newer tidegate still replays.
        values = {name: data[name] for name in FIELD_NAMES if name in data}
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        if values["created_at"].tzinfo is None:
            raise ValueError("created_at must carry a time zone")
        return cls(**values)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(UsageEvent))
