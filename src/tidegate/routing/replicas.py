"""Pools and the routing table the supervisor, discovery and the upstream config fill in.

A ``Pool`` is a named group of interchangeable replicas with one balancer and, for remote APIs, a
circuit breaker. The ``RoutingTable`` maps pool names to pools and public model names to
``Route``s (chains of pool names, see ``rules``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tidegate.errors import ModelNotFoundError, NoReadyReplicaError
from tidegate.routing.balancer import Balancer, LeastOutstanding
from tidegate.routing.breaker import CircuitBreaker
from tidegate.routing.replica import REPLICA_STATES, Replica, ReplicaState
from tidegate.routing.rules import RequestTraits, Route

__all__ = ["REPLICA_STATES", "Pool", "Replica", "ReplicaState", "RoutingTable"]


@dataclass(eq=False)
class Pool:
    """The replicas behind one pool name."""

    name: str
    replicas: list[Replica] = field(default_factory=list)
    balancer: Balancer = field(default_factory=LeastOutstanding)
    breaker: CircuitBreaker | None = None
    affinity_prefix_chars: int = 0
    """How much leading prompt the affinity key hashes; 0: the balancer takes no key."""
    upstream_model: str | None = None
    """Sent upstream as ``model`` instead of the replica's own name: a LoRA adapter version
    (its vLLM LoRA name) served by ``base``'s replicas."""
    base: Pool | None = None
    """The pool whose replicas (the same list) and capacity this adapter pool shares: the
    scheduler queues its requests in the base pool's queue."""
    _backends: dict[str, bytes] = field(default_factory=dict, repr=False)
    """An adapter pool's x-tidegate-backend values by replica id, made once each."""

    def backend_of(self, replica: Replica) -> bytes:
        """The x-tidegate-backend value, POOL/ID: the replica's own, except that an adapter
        pool names itself (the version that served), not its base pool."""
        if self.base is None:
            return replica.backend
        value = self._backends.get(replica.id)
        if value is None:
            value = self._backends[replica.id] = f"{self.name}/{replica.id}".encode()
        return value

    def candidates(self, now: float | None = None) -> list[Replica]:
        """Ready replicas not ejected by outlier detection."""
        if now is None:
            now = time.monotonic()
        return [r for r in self.replicas if r.routable(now)]

    def pick(self, *, avoid: Replica | None = None, affinity: int | None = None) -> Replica:
        """The balancer's choice among the candidates.

        ``avoid`` (a replica that just failed) is skipped unless it is the only candidate.
        """
        ready = self.candidates()
        if avoid is not None and len(ready) > 1 and avoid in ready:
            ready.remove(avoid)
        if not ready:
            raise NoReadyReplicaError(
                f"No replica of pool '{self.name}' is ready (engines may still be loading, or "
                "all are failing health checks). Retry after the Retry-After interval; GET /readyz "
                "tells when the model is up.",
                retry_after_s=2.0,
            )
        if len(ready) == 1:
            return ready[0]
        return self.balancer.pick(ready, affinity=affinity)

    @property
    def has_ready(self) -> bool:
        return any(r.ready for r in self.replicas)

    def available(self, now: float) -> bool:
        """Worth trying: a candidate exists and the breaker (if any) is not open."""
        if self.breaker is not None and self.breaker.state == "open":
            return False
        return any(r.routable(now) for r in self.replicas)


class RoutingTable:
    """Pool name → pool, public model name → route. Built at startup; replica states change at
    runtime and DNS discovery adds and removes replicas."""

    def __init__(self, *, routes: list[Route] | None = None) -> None:
        self._pools: dict[str, Pool] = {}
        self._routes: dict[str, Route] = {route.model: route for route in routes or ()}
        self._chains: dict[tuple[str, ...], tuple[Pool, ...]] = {}

    def add(self, replica: Replica) -> None:
        self.ensure_pool(replica.pool_name, model=replica.model).replicas.append(replica)

    def add_pool(self, pool: Pool) -> None:
        """Register a configured pool (before its replicas join)."""
        self._pools.setdefault(pool.name, pool)

    def ensure_pool(self, name: str, *, model: str | None = None) -> Pool:
        """The pool, created empty if needed (discovery may not have found replicas yet:
        requests then get 503 Retry-After instead of 404). ``model``: the public model name its
        replicas serve, which gets an implicit route to this pool unless one is configured."""
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = Pool(name)
        model = model or name
        route = self._routes.get(model)
        if route is None:
            self._routes[model] = Route(model=model, pools=(name,))
        else:
            route.extend(name)
        return pool

    def add_adapter(self, pool: Pool, *, model: str) -> None:
        """Register an adapter version's pool (sharing its base pool's replicas) and give the
        public ``model`` a route to it: its first version leads the implicit route, later ones
        follow (they get what splits and rollouts send them)."""
        if pool.name in self._pools:
            return
        self._pools[pool.name] = pool
        self.ensure_pool(pool.name, model=model)
        self._chains.clear()

    def remove_adapter(self, name: str, *, model: str) -> None:
        """Take an adapter version's pool out; the model's route goes with its last one."""
        pool = self._pools.get(name)
        if pool is None or pool.base is None:
            return
        del self._pools[name]
        self._chains.clear()
        route = self._routes.get(model)
        if route is not None and not route.explicit:
            route.pools = tuple(p for p in route.pools if p != name)
            if not route.pools:
                del self._routes[model]

    def remove(self, replica: Replica) -> None:
        """Take a replica out of its pool (discovery, once a drained one has no requests left)."""
        pool = self._pools.get(replica.pool_name)
        if pool is not None and replica in pool.replicas:
            pool.replicas.remove(replica)

    def pools(self) -> list[Pool]:
        return list(self._pools.values())

    def pool(self, name: str) -> Pool:
        pool = self._pools.get(name)
        if pool is None:
            raise KeyError(f"no pool named {name!r}")
        return pool

    def route(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is None:
            known = ", ".join(self.models()) or "none"
            raise ModelNotFoundError(
                f"The model '{model}' does not exist on this gateway. Models served here: {known}. "
                "GET /v1/models lists them.",
                param="model",
                code="model_not_found",
            )
        return route

    def chain(
        self,
        route: Route,
        traits: RequestTraits | None,
        *,
        split_pool: str | None = None,
        names: tuple[str, ...] | None = None,
    ) -> tuple[Pool, ...]:
        """The pools a request tries, in order: the route's rules pick the names (None: the
        route's default chain) unless ``names`` (the branch the caller chose) gives them;
        ``split_pool`` (the traffic split's choice) goes first."""
        if names is None:
            names = route.chain(traits) if traits is not None else route.pools
        if split_pool is not None and names[0] != split_pool:
            names = (split_pool, *(name for name in names if name != split_pool))
        pools = self._chains.get(names)
        if pools is None:
            pools = tuple(self._pools[name] for name in names if name in self._pools)
            if not pools:
                raise NoReadyReplicaError(
                    f"No pool of model '{route.model}' has been set up yet. Retry after the "
                    "Retry-After interval.",
                    retry_after_s=2.0,
                )
            if len(pools) == len(names):
                self._chains[names] = pools  # complete (removing an adapter pool clears this)
        return pools

    def models(self) -> list[str]:
        """Public model names."""
        return sorted(self._routes)

    def model_ready(self, model: str) -> bool:
        """A pool of the model's default chain has a ready replica."""
        route = self._routes.get(model)
        return route is not None and any(
            name in self._pools and self._pools[name].has_ready for name in route.pools
        )

    def unknown_pools(self) -> list[str]:
        """Pool names configured routes refer to that no replica or pool config provides."""
        names = {
            name
            for route in self._routes.values()
            for chain in (route.pools, *(pools for _, pools in route.rules))
            for name in chain
        }
        return sorted(names - self._pools.keys())

    def replicas(self) -> Iterator[Replica]:
        for pool in self._pools.values():
            yield from pool.replicas
