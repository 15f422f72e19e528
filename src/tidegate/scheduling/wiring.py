"""Scheduling for the app's lifespan: the per-pool priority scheduler, the export of each pool's
autoscaling signals and, when pools' capacity is shared with other gateways
(scheduling.cluster.mode), this gateway's cluster membership."""

from __future__ import annotations

import contextlib

from tidegate.config import Config
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import RoutingTable
from tidegate.scheduling.cluster import ClusterCapacity
from tidegate.scheduling.scheduler import Scheduler
from tidegate.scheduling.signals import SignalExporter


def cluster_shared(config: Config) -> bool:
    """Whether pools' capacity is shared with other gateways (scheduling.cluster.mode)."""
    mode = config.scheduling.cluster.mode
    return mode == "redis" or (mode == "auto" and config.limits.backend == "redis")


async def wire_scheduling(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    routing: RoutingTable,
    metrics: GatewayMetrics,
) -> Scheduler | None:
    """None: scheduling is off (requests go straight to the balancer)."""
    if not config.scheduling.enabled:
        return None
    shared = cluster_shared(config)
    scheduler = Scheduler(
        config=config.scheduling,
        default_concurrency=config.engines.profile.max_num_seqs,
        metrics=metrics,
        shared=shared,
    )
    scheduler.start()
    stack.push_async_callback(scheduler.stop)
    signals = SignalExporter(routing=routing, scheduler=scheduler, registry=metrics.registry)
    signals.start()
    stack.push_async_callback(signals.stop)
    if shared:
        # Stopped before the scheduler: a clean exit hands its slots back at once.
        cluster = _cluster(config, scheduler, routing, metrics)
        await cluster.start()
        stack.push_async_callback(cluster.stop)
    return scheduler


def _cluster(
    config: Config, scheduler: Scheduler, routing: RoutingTable, metrics: GatewayMetrics
) -> ClusterCapacity:
    cluster = config.scheduling.cluster
    return ClusterCapacity(
        scheduler=scheduler,
        pools=routing.pools,
        redis_url=config.limits.redis_url.get_secret_value(),
        key_prefix=config.limits.key_prefix,
        heartbeat_s=cluster.heartbeat_s,
        member_ttl_s=cluster.member_ttl_s,
        fallback_members=cluster.fallback_members,
        timeout_s=cluster.timeout_s,
        registry=metrics.registry,
    )
