"""The per-request record that the access log line and the request metrics are made from."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tidegate.errors import Outcome
from tidegate.observability.metrics import UNKNOWN_MODEL, Route


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    route: Route
    started: float = field(default_factory=time.perf_counter)
    key_id: str | None = None
    model: str = UNKNOWN_MODEL
    """A public model name from the routing table, or ``unknown``: safe as a metric label."""
    replica: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    status: int = 200
    outcome: Outcome = "ok"
    error_type: str | None = None
