"""The routing table a config describes: routes, pools (balancer, breaker) and remote replicas.

Local engine replicas join later, when the supervisor starts them (every local pool: the main
one, named engines.served_model_name, then engines.pools, all serving that public name);
DNS-discovered ones when they resolve. Pools get a circuit breaker by default only when they are
remote: a local engine that fails is the supervisor's to restart, not a reason to stop sending to
its pool.
"""

from __future__ import annotations

import time

from tidegate.config import Config, PoolConfig
from tidegate.routing.adapter_pools import adapter_pool
from tidegate.routing.balancer import build_balancer
from tidegate.routing.breaker import CircuitBreaker
from tidegate.routing.replicas import Pool, Replica, ReplicaState, RoutingTable
from tidegate.routing.rules import Route
from tidegate.routing.windows import Clock


def build_routing(config: Config, *, clock: Clock = time.time) -> RoutingTable:
    """Raises ``ValueError`` when a route names a pool nothing provides. ``clock``: what the
    rules' time windows read (seconds since the epoch)."""
    routing = RoutingTable(
        routes=[Route.from_config(route, clock=clock) for route in config.routing.routes]
    )
    configured = {pool.name: pool for pool in config.routing.pools}
    remote = {upstream.pool or upstream.model for upstream in config.upstreams}
    local = [pool.name for pool in config.engines.local_pools()]
    names = dict.fromkeys([*configured, *remote, *local])
    health = config.routing.health
    for name in names:
        settings = configured.get(name) or PoolConfig(name=name)
        breaker = settings.circuit_breaker
        if breaker is None:
            breaker = name in remote
        routing.add_pool(
            Pool(
                name,
                balancer=build_balancer(settings),
                breaker=(
                    CircuitBreaker(failures=health.breaker_failures, open_s=health.breaker_open_s)
                    if breaker
                    else None
                ),
                affinity_prefix_chars=(
                    settings.affinity_prefix_chars if settings.balancer == "prefix_affinity" else 0
                ),
            )
        )
    _add_static_upstreams(config, routing)
    _add_config_adapters(config, routing, configured)
    unknown = routing.unknown_pools()
    if unknown:
        raise ValueError(
            f"routing.routes name pools nothing provides: {', '.join(unknown)}. A pool is an "
            "upstream's `pool` (or `model`), the local engines' served_model_name or an "
            "engines.pools name, or an entry of routing.pools."
        )
    return routing


def _add_static_upstreams(config: Config, routing: RoutingTable) -> None:
    # Implicit routes list pools in config order, though local replicas (the supervisor) and
    # DNS-discovered ones join later: their pools take their places in the routes now. Extra
    # local pools follow the main one, so they get only what splits, rollouts or fallback send.
    served = config.engines.served_model_name
    for pool in config.engines.local_pools():
        routing.ensure_pool(pool.name, model=served)
    for index, upstream in enumerate(config.upstreams):
        if upstream.discovery == "dns":
            # its replicas come and go with DNS (routing.discovery)
            routing.ensure_pool(upstream.pool or upstream.model, model=upstream.model)
            continue
        root = upstream.url.rstrip("/").rsplit("/v1", 1)[0]
        routing.add(
            Replica(
                id=f"u{index}",
                model=upstream.model,
                pool=upstream.pool,
                provider=upstream.provider,
                base_url=upstream.url.rstrip("/"),
                upstream_model=upstream.upstream_model or upstream.model,
                api_key=upstream.resolved_api_key(),
                state=ReplicaState.READY,
                max_concurrency=upstream.max_concurrency,
                priority_scheduling=upstream.priority_scheduling,
                health_url=root + upstream.health_check_path
                if upstream.health_check_path
                else None,
            )
        )


def _add_config_adapters(
    config: Config, routing: RoutingTable, settings: dict[str, PoolConfig]
) -> None:
    """Each local pool's adapters, as pools on its replicas (the engines config checked them
    against the local pools; here against the remote pools and the public models)."""
    models = set(routing.models())
    for local in config.engines.local_pools():
        base = routing.pool(local.name)
        for adapter in local.adapters:
            if adapter.name in models:
                raise ValueError(f"adapter {adapter.name} clashes with the model of that name")
            if adapter.target in {pool.name for pool in routing.pools()}:
                raise ValueError(f"adapter {adapter.target} clashes with the pool of that name")
            routing.add_adapter(
                adapter_pool(adapter.target, base, settings=settings.get(local.name)),
                model=adapter.name,
            )
