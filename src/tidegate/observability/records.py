"""The per-request record that the access log, the metrics and the usage record are made from."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tidegate.errors import Outcome
from tidegate.observability.capture import ResponseCapture
from tidegate.observability.metrics import UNKNOWN_MODEL
from tidegate.protocol.endpoints import Endpoint


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    """The gateway's own id (never the client's): the usage record's key."""
    route: Endpoint
    client_request_id: str | None = None
    """The client's x-request-id, kept only to correlate (any tenant may send any value)."""
    started: float = field(default_factory=time.perf_counter)
    """perf_counter() at arrival, for durations."""
    arrived_at: float = field(default_factory=time.time)
    """Wall-clock arrival, for the usage record."""
    key_id: str | None = None
    tenant_id: str | None = None
    tenant: str | None = None
    """The tenant's name (operator-created, so a bounded metric label)."""
    model: str = UNKNOWN_MODEL
    """A public model name from the routing table, or ``unknown``: safe as a metric label."""
    pool: str | None = None
    """The pool whose replica served the request."""
    route_reason: str | None = None
    """Why that pool served it (``routing.rules``: default, rule:<i>, time_window:<i>, with
    /split, /cheapest, /only_meeting_target, /fastest, /fallback or /spillover)."""
    split_pool: str | None = None
    """The pool a traffic split chose for the request (None without a split). When it differs
    from ``pool``, the chosen pool failed or was passed over before the first byte."""
    replica: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    ttft_s: float | None = None
    status: int = 200
    outcome: Outcome = "ok"
    error_type: str | None = None
    rejection: str | None = None
    """Why the gateway itself refused the request (a RejectionReason), if it did."""
    safety: str | None = None
    """The content-safety decision that refused or cut the request: ``stage:policy/check``
    (names from config, never the text)."""
    refused_fields: Mapping[str, Any] | None = None
    """The body of a request a content-safety check refused, kept only when its tenant logs
    prompts (``log_prompt``), so that the prompt log holds refused prompts too."""
    capture: ResponseCapture | None = None
    """The response's text, finish reason and tool calls; None unless the tenant logs prompts or
    a rollout watches the request (see ``gateway.taps``)."""
    log_prompt: bool = False
    """The tenant logs prompts: write the prompt and the captured completion."""
    prompt_retention_days: int = 0
    """How long the tenant keeps logged texts (when ``log_prompt``)."""
    tapped: bool = False
    """A request tap (rollout statistics, shadow traffic) saw it admitted and wants it finished."""
    kind: Literal["live", "batch", "shadow"] = "live"
    """What the usage record says it was: a live request, a batch line, or shadow traffic."""
