"""One backend server: a local vLLM process or a remote OpenAI-compatible or Anthropic API.

The replica owns its figures: other packages read its fields and change them only through its
methods. ``state`` moves (``set_state``, ``mark_ready`` ...) at the call of whoever owns the
replica's lifecycle (the engine supervisor for local replicas, the active health checker or DNS
discovery for remote ones; static remote replicas start ``READY``). Passive outlier ejection is
separate (``record_failure``, ``eject``, ``readmit``), so it never fights the lifecycle owner over
``state``. The engine's own load figures come in through ``record_engine_load``.
``outstanding`` counts requests the gateway has in flight on it (``lease``); the supervisor waits
for it to reach zero when draining.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from tidegate.config import ProviderName


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
    provider: ProviderName = "openai"
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
    adapters: frozenset[str] = frozenset()
    """The LoRA adapter versions the engine has registered (from its /v1/models and the
    gateway's loads), replaced as a whole by the adapter sync; adapter-aware routing reads it."""
    leases: int = 0
    """Requests sent to it so far (the autoscaler counts arrivals with it)."""
    first_lease_at: float | None = None
    """Wall-clock time of its first request (how long a new replica took to serve)."""
    backend: bytes = field(init=False, default=b"")
    """The x-tidegate-backend header value, POOL/ID."""

    def __post_init__(self) -> None:
        self.backend = f"{self.pool_name}/{self.id}".encode()

    @property
    def pool_name(self) -> str:
        return self.pool or self.model

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY

    def routable(self, now: float) -> bool:
        """Ready and not ejected: the balancer may pick it."""
        return self.state is ReplicaState.READY and self.ejected_until <= now

    # -- lifecycle (the supervisor, the health checker, discovery) ------------------------

    def set_state(self, state: ReplicaState) -> bool:
        """Move to ``state``; True when that is a change."""
        changed = self.state is not state
        self.state = state
        return changed

    def mark_ready(self) -> bool:
        return self.set_state(ReplicaState.READY)

    def mark_unhealthy(self) -> bool:
        return self.set_state(ReplicaState.UNHEALTHY)

    def mark_draining(self) -> bool:
        """Out of rotation; requests in flight finish (``outstanding`` counts them)."""
        return self.set_state(ReplicaState.DRAINING)

    # -- passive outlier detection (routing.outlier decides; the replica keeps count) -----

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def record_success(self) -> None:
        """A request succeeded: the failure streak and the ejection backoff start over."""
        if self.consecutive_failures or self.ejections:
            self.consecutive_failures = 0
            self.ejections = 0

    def record_failure(self) -> int:
        """A request failed; returns the failures in a row so far."""
        self.consecutive_failures += 1
        return self.consecutive_failures

    def eject(self, until: float) -> None:
        """Out of rotation until ``until`` (``time.monotonic()``); the ejection counts towards
        the backoff of the next one, and the failure streak starts over."""
        self.ejections += 1
        self.ejected_until = until
        self.consecutive_failures = 0

    def readmit(self) -> None:
        """End an ejection now (its health checks say it is back)."""
        self.ejected_until = 0.0

    # -- the engine's own figures (engines.engine_metrics scrapes them) -------------------

    def record_adapters(self, adapters: frozenset[str]) -> None:
        """The LoRA adapters the engine has registered now (the adapter sync read them)."""
        self.adapters = adapters

    def record_engine_load(self, *, waiting: int | None, kv_cache_usage: float | None) -> None:
        """What the engine's /metrics said; None leaves a figure as it was."""
        if waiting is not None:
            self.engine_waiting = waiting
        if kv_cache_usage is not None:
            self.kv_cache_usage = kv_cache_usage

    def lease(self) -> InFlightLease:
        """Count one request in flight on this replica until the lease is released (the
        upstream exchange is its only taker); releasing twice counts once."""
        if not self.leases:
            self.first_lease_at = time.time()
        self.leases += 1
        self.outstanding += 1
        return InFlightLease(self)


class InFlightLease:
    """One request in flight on a replica; ``release`` ends it, exactly once."""

    __slots__ = ("_replica",)

    def __init__(self, replica: Replica) -> None:
        self._replica: Replica | None = replica

    def release(self) -> None:
        replica = self._replica
        if replica is not None:
            self._replica = None
            replica.outstanding -= 1
