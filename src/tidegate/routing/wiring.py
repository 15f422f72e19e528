"""Routing for the app's lifespan: the routing table a config describes, its pool metrics, DNS
discovery of ``discovery: dns`` upstreams and the active health checks."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import aiohttp

from tidegate.config import Config
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.build import build_routing
from tidegate.routing.discovery import Resolver, dns_discoveries
from tidegate.routing.health import HealthChecker
from tidegate.routing.metrics import RoutingMetrics
from tidegate.routing.pool_metrics import register_pool_metrics
from tidegate.routing.replicas import RoutingTable
from tidegate.routing.windows import Clock


@dataclass(frozen=True, slots=True)
class Routing:
    table: RoutingTable
    metrics: RoutingMetrics


def wire_routing(config: Config, metrics: GatewayMetrics, *, clock: Clock = time.time) -> Routing:
    """Remote upstreams are ready at once; local engines join when the supervisor starts them,
    discovered ones when DNS names them. ``clock``: what route rules' time windows read."""
    table = build_routing(config, clock=clock)
    register_pool_metrics(
        metrics.registry, routing=table, default_concurrency=config.engines.profile.max_num_seqs
    )
    return Routing(table=table, metrics=RoutingMetrics(metrics.registry))


async def start_discovery(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    routing: RoutingTable,
    session: aiohttp.ClientSession,
    metrics: GatewayMetrics,
    resolver: Resolver,
) -> None:
    """One DNS discovery per ``discovery: dns`` upstream, each resolved once before serving."""
    for discovery in dns_discoveries(
        config.upstreams, routing=routing, session=session, metrics=metrics, resolver=resolver
    ):
        await discovery.start()
        stack.push_async_callback(discovery.stop)


async def start_health_checks(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    routing: RoutingTable,
    session: aiohttp.ClientSession,
    metrics: GatewayMetrics,
) -> None:
    checker = HealthChecker(
        routing=routing, session=session, config=config.routing.health, metrics=metrics
    )
    await checker.start()
    stack.push_async_callback(checker.stop)
