"""One backend server: a local vLLM process or a remote OpenAI-compatible or Anthropic API.

``state`` is written by whoever owns the replica's lifecycle (the engine supervisor for local
replicas, the active health checker or DNS discovery for remote ones; static remote replicas
start ``READY``). Passive outlier ejection is separate (``ejected_until``), so it never fights
the lifecycle owner over ``state``. ``outstanding`` counts requests the gateway has in flight on
it; the supervisor waits for it to reach zero when draining.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Provider = Literal["openai", "anthropic"]


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    STOPPED = "stopped"
    CRASHED = "crashed"


REPLICA_STATES: tuple[ReplicaState, ...] = tuple(ReplicaState)


@dataclass(eq=False, slots=True)
class Replica:
    id: str
    """Stable and bounded (from config), so it may be a metric label."""
    model: str
    """The public model name it serves when no route is configured for it."""
    base_url: str
    """Base URL including /v1, without a trailing slash."""
    upstream_model: str
    """The model name sent upstream."""
    api_key: str | None = None
    pool: str = ""
    """The pool it belongs to; empty: the pool named like ``model``."""
    provider: Provider = "openai"
    """The wire protocol: OpenAI-compatible, or Anthropic Messages (translated)."""
    state: ReplicaState = ReplicaState.STARTING
    outstanding: int = 0
    max_concurrency: int = 0
    """Requests it serves at once, for admission and capacity metrics; 0: the engine profile's."""
    priority_scheduling: bool = False
    """It runs vLLM's priority scheduler: requests carry a `priority` field."""
    health_url: str | None = None
    """Polled by the active health checker; None: passive health only (or the supervisor's)."""
    ejected_until: float = 0.0
    """Passive outlier ejection: out of rotation until this ``time.monotonic()``."""
    consecutive_failures: int = 0
    ejections: int = 0
    """Ejections in a row without a success in between (the ejection time doubles with each)."""
    engine_waiting: int = 0
    """Requests waiting in the engine's own queue (from its /metrics), for load balancing."""
    kv_cache_usage: float = 0.0
    """The engine's KV cache use, 0..1 (from its /metrics)."""
    backend: bytes = b""
    """The x-tidegate-backend header value, POOL/ID (set when it joins the routing table)."""

    @property
    def pool_name(self) -> str:
        return self.pool or self.model

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY
