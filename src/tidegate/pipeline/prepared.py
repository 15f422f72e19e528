"""A request once admitted, as the rest of its way reads it: the typed body, the pools to try,
its reservation and its scheduling facts. Its own module so that what watches requests (the
taps) and what serves them (``completions``) can both name it without importing each other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from tidegate.pipeline.limits import Admission
from tidegate.protocol.endpoints import Endpoint
from tidegate.protocol.requests import CompletionRequest
from tidegate.routing.replicas import Pool
from tidegate.routing.rules import FIRST, Branch
from tidegate.safety.gates import RequestGate
from tidegate.scheduling import PriorityClass

__all__ = ["PreparedRequest", "RoutingHints", "tenant_session"]


def tenant_session(tenant_id: str, session_id: str | None) -> str | None:
    """The x-tidegate-session-id within its tenant's namespace: a session id is the client's
    choice, so two tenants picking the same one must not share a replica pin or a split arm."""
    return None if not session_id else f"{tenant_id}:{session_id}"


@dataclass(slots=True)
class RoutingHints:
    """Request headers that steer routing (x-tidegate-*), as sent."""

    priority: str | None = None
    deadline_ms: str | None = None
    quality: str | None = None
    session_id: str | None = None


@dataclass(slots=True)
class PreparedRequest:
    request: CompletionRequest
    """The validated body, with the gateway's edits (its completion cap, the usage option)."""
    chain: tuple[Pool, ...]
    """The pools to try, in order (the route's rules chose them)."""
    client_wants_usage: bool
    admission: Admission
    span: Span | None
    klass: PriorityClass = "interactive"
    """The scheduling class."""
    tenant: str = ""
    """Whose fair share the request counts against (the tenant's name)."""
    cost: int = 1
    """Estimated tokens (prompt + max_tokens), for fair sharing."""
    deadline_s: float | None = None
    """How long after arrival the request may still wait for a slot (x-tidegate-deadline-ms)."""
    spillover: bool = False
    """Move on to the next pool when the predicted queue wait breaks the class's TTFT target."""
    session_id: str | None = None
    """x-tidegate-session-id scoped by tenant (``tenant_session``), the explicit affinity key."""
    backend: bytes = b""
    """The x-tidegate-backend value once a replica took the request: POOL/REPLICA."""
    safety: RequestGate | None = None
    """The content-safety output checks of the answer; None when no policy checks outputs."""
    branch: Branch | None = None
    """The route's branch that chose ``chain`` (its reasons say why a pool served)."""
    pick: int = FIRST
    """How ``chain``'s first pool was picked (``routing.rules.FIRST`` ... ``FASTEST``)."""
    reason: bytes = b""
    """The x-tidegate-route-reason value once a pool took the request."""

    @property
    def route(self) -> Endpoint:
        return self.request.route

    @property
    def stream(self) -> bool:
        return self.request.stream

    @property
    def payload(self) -> Mapping[str, Any]:
        """The body's fields as forwarded (read-only: edits go through ``request``)."""
        return self.request.fields
