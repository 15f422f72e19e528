"""Building the rollout layer from the gateway's own services (called by the app's lifespan)."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.config import Config
from tidegate.metering import UsageMeter
from tidegate.rollout.controller import RolloutController
from tidegate.rollout.metrics import RolloutMetrics
from tidegate.rollout.policies import TrafficPolicies
from tidegate.rollout.rollouts import RolloutService
from tidegate.rollout.shadow import ShadowMirror
from tidegate.rollout.shadow_reports import ShadowReports
from tidegate.rollout.stats import StepStats
from tidegate.rollout.sync import PolicySync
from tidegate.rollout.tap import RolloutTap
from tidegate.rollout.versions import VersionService
from tidegate.routing.replicas import RoutingTable
from tidegate.upstream.client import Provider


def gateway_id() -> str:
    """This gateway process, as leases and per-gateway statistics name it."""
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class RolloutServices:
    """What the admin API needs."""

    policies: TrafficPolicies
    versions: VersionService
    rollouts: RolloutService
    shadow_reports: ShadowReports
    sync: PolicySync


@dataclass(frozen=True, slots=True)
class RolloutRuntime:
    tap: RolloutTap
    services: RolloutServices
    sync: PolicySync
    stats: StepStats
    shadow: ShadowMirror
    controller: RolloutController

    async def start(self) -> None:
        await self.sync.start()
        await self.stats.start()
        await self.shadow.start()
        await self.controller.start()

    async def stop(self) -> None:
        await self.controller.stop()
        await self.shadow.stop()
        await self.stats.stop()
        await self.sync.stop()


async def wire_rollouts(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    sessions: async_sessionmaker[AsyncSession],
    routing: RoutingTable,
    providers: dict[str, Provider],
    meter: UsageMeter | None,
    registry: CollectorRegistry,
    redact: Callable[[str], str],
) -> RolloutRuntime | None:
    """None: rollouts are off. Records the running config as a version, then starts the policy
    sync, statistics, shadow mirror and controller (stopped in reverse)."""
    if not config.rollouts.enabled:
        return None
    rollouts = build_rollouts(
        config,
        sessions=sessions,
        routing=routing,
        providers=providers,
        meter=meter,
        registry=registry,
        redact=redact,
    )
    await rollouts.services.versions.record_config(config)
    await rollouts.start()
    stack.push_async_callback(rollouts.stop)
    return rollouts


def build_rollouts(
    config: Config,
    *,
    sessions: async_sessionmaker[AsyncSession],
    routing: RoutingTable,
    providers: dict[str, Provider],
    meter: UsageMeter | None,
    registry: CollectorRegistry,
    redact: Callable[[str], str],
) -> RolloutRuntime:
    settings = config.rollouts
    me = gateway_id()
    metrics = RolloutMetrics(registry)
    sync = PolicySync(
        sessions=sessions,
        routing=routing,
        interval_s=settings.sync_interval_s,
        metrics=metrics,
    )
    stats = StepStats(
        sessions=sessions,
        sync=sync,
        gateway_id=me,
        flush_interval_s=settings.stats_flush_interval_s,
    )
    shadow = ShadowMirror(
        sessions=sessions,
        routing=routing,
        providers=providers,
        meter=meter,
        metrics=metrics,
        redact=redact,
        max_concurrency=settings.shadow_max_concurrency,
        timeout_s=settings.shadow_timeout_s,
        retention_days=settings.shadow_retention_days,
    )
    policies = TrafficPolicies(sessions=sessions, routing=routing, sync=sync)
    services = RolloutServices(
        policies=policies,
        versions=VersionService(sessions=sessions, keep=settings.keep_versions, routing=routing),
        rollouts=RolloutService(
            sessions=sessions,
            routing=routing,
            sync=sync,
            shadow_reports=ShadowReports(sessions=sessions),  # stateless: a second one is free
        ),
        shadow_reports=ShadowReports(sessions=sessions),
        sync=sync,
    )
    controller = RolloutController(
        sessions=sessions,
        sync=sync,
        metrics=metrics,
        gateway_id=me,
        interval_s=settings.controller_interval_s,
        lock_ttl_s=settings.lock_ttl_s,
    )
    return RolloutRuntime(
        tap=RolloutTap(sync=sync, stats=stats, shadow=shadow),
        services=services,
        sync=sync,
        stats=stats,
        shadow=shadow,
        controller=controller,
    )
