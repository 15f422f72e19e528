"""Replicas and pools: the routing table the supervisor and the upstream config fill in.

A ``Replica`` is one OpenAI-compatible server (a local vLLM process or a remote URL). Its
``state`` is written by whoever owns its lifecycle (the engine supervisor for local replicas;
remote ones start ``READY``) and read by the balancer, which only picks ``READY`` replicas.
``outstanding`` counts requests the gateway has in flight on it; the supervisor waits for it to
reach zero when draining.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from tidegate.errors import ModelNotFoundError, NoReadyReplicaError


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    STOPPED = "stopped"
    CRASHED = "crashed"


REPLICA_STATES: tuple[ReplicaState, ...] = tuple(ReplicaState)


@dataclass(eq=False)
class Replica:
    id: str
    """Stable and bounded (from config), so it may be a metric label."""
    model: str
    """The public model name clients use."""
    base_url: str
    """Base URL including /v1, without a trailing slash."""
    upstream_model: str
    """The model name sent upstream."""
    api_key: str | None = None
    state: ReplicaState = ReplicaState.STARTING
    outstanding: int = 0
    max_concurrency: int = 0
    """Requests it serves at once, for the pool capacity metric; 0: the engine profile's."""
    priority_scheduling: bool = False
    """It runs vLLM's priority scheduler: requests carry a `priority` field."""

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY


@dataclass(eq=False)
class Pool:
    """The replicas that serve one public model name."""

    model: str
    replicas: list[Replica] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def pick(self, *, avoid: Replica | None = None) -> Replica:
        """Least outstanding requests with power-of-two choices among ready replicas.

        ``avoid`` (a replica that just failed) is skipped unless it is the only one ready.
        """
        ready = [r for r in self.replicas if r.state is ReplicaState.READY]
        if avoid is not None and len(ready) > 1 and avoid in ready:
            ready.remove(avoid)
        if not ready:
            raise NoReadyReplicaError(
                f"No replica of model '{self.model}' is ready yet (engines may still be loading). "
                "Retry after the Retry-After interval; GET /readyz tells when the model is up.",
                retry_after_s=2.0,
            )
        if len(ready) == 1:
            return ready[0]
        a, b = self._rng.sample(ready, 2)
        return a if a.outstanding <= b.outstanding else b

    @property
    def has_ready(self) -> bool:
        return any(r.state is ReplicaState.READY for r in self.replicas)


class RoutingTable:
    """Public model name → pool. Built at startup; replica states change at runtime and DNS
    discovery adds and removes replicas."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}

    def add(self, replica: Replica) -> None:
        self.ensure_pool(replica.model).replicas.append(replica)

    def ensure_pool(self, model: str) -> Pool:
        """The model's pool, created empty if needed (discovery may not have found replicas yet:
        requests then get 503 Retry-After instead of 404)."""
        return self._pools.setdefault(model, Pool(model))

    def remove(self, replica: Replica) -> None:
        """Take a replica out of its pool (discovery, once a drained one has no requests left)."""
        pool = self._pools.get(replica.model)
        if pool is not None and replica in pool.replicas:
            pool.replicas.remove(replica)

    def pools(self) -> list[Pool]:
        return list(self._pools.values())

    def pool(self, model: str) -> Pool:
        pool = self._pools.get(model)
        if pool is None:
            known = ", ".join(sorted(self._pools)) or "none"
            raise ModelNotFoundError(
                f"The model '{model}' does not exist on this gateway. Models served here: {known}. "
                "GET /v1/models lists them.",
                param="model",
                code="model_not_found",
            )
        return pool

    def models(self) -> list[str]:
        return sorted(self._pools)

    def replicas(self) -> Iterator[Replica]:
        for pool in self._pools.values():
            yield from pool.replicas
