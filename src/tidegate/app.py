"""Builds the ASGI app from a Config. The lifespan wires the services; nothing is global.

Startup: migrate the store, make sure an admin key exists (announcing a generated one once),
start usage metering (replaying what a crashed process left), build the limiter, the validator
(each model's tokenizer and context length) and the routing table (remote upstreams are ready at
once; local engines are started by the supervisor and become ready when loaded), open the
upstream connection pool, start the scheduler. Shutdown runs in exact reverse order through one
exit stack: the supervisor drains the replicas first, usage is flushed last.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import aiohttp
from opentelemetry.sdk.trace.export import SpanExporter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from tidegate.api.asgi import RequestIds
from tidegate.api.input_guard import guard_routes
from tidegate.api.request_id import RequestIdMiddleware
from tidegate.api.routes import (
    build_routes,
    http_error_handler,
    internal_error_handler,
    tidegate_error_handler,
)
from tidegate.api.services import ApiServices, ServicesSlot
from tidegate.batch.files import FileService
from tidegate.batch.service import BatchService
from tidegate.batch.storage import build_storage
from tidegate.batch.wiring import build_runner
from tidegate.config import Config
from tidegate.errors import TidegateError
from tidegate.heap import freeze_startup_heap
from tidegate.metering import PromptLogWriter, RetentionPurger, UsageMeter, UsageQueries
from tidegate.observability.access_log import AccessLog
from tidegate.observability.dependencies import Dependencies
from tidegate.observability.loop_stalls import watch_loop_stalls
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.metrics_listener import MetricsListener
from tidegate.observability.recorder import RequestRecorder
from tidegate.observability.tracing import Tracing
from tidegate.observability.usage_metrics import register_usage_metrics
from tidegate.pipeline.accounting import RequestAccounting
from tidegate.pipeline.completions import CompletionService
from tidegate.pipeline.context_lengths import ContextLengths
from tidegate.pipeline.limits import Limiter, RedisLimitStore, build_limit_store, build_limiter
from tidegate.pipeline.limits.model import LimitStore
from tidegate.pipeline.limits.seeding import seed_budget_spend
from tidegate.pipeline.model_limits import models_for_pools, pool_limits
from tidegate.pipeline.pricing import PriceTable
from tidegate.pipeline.redaction import Redactor
from tidegate.pipeline.validation import RequestValidator
from tidegate.rollout.wiring import RolloutRuntime, build_rollouts
from tidegate.routing.build import build_routing
from tidegate.routing.discovery import Resolver, dns_discoveries, resolve_host
from tidegate.routing.health import HealthChecker
from tidegate.routing.metrics import RoutingMetrics
from tidegate.routing.outlier import OutlierDetector
from tidegate.routing.pool_metrics import register_pool_metrics
from tidegate.routing.replicas import RoutingTable
from tidegate.routing.retry_budget import RetryBudget
from tidegate.scheduling import Scheduler
from tidegate.scheduling.cluster import ClusterCapacity
from tidegate.store.db import create_engine, create_sessionmaker
from tidegate.store.migrate import migrate
from tidegate.tenancy.audit import AuditLog
from tidegate.tenancy.keys import KeyService
from tidegate.tenancy.tenants import TenantService
from tidegate.upstream.anthropic import AnthropicClient
from tidegate.upstream.client import Provider, UpstreamClient, UpstreamTimeouts

_log = logging.getLogger(__name__)


class Engines(Protocol):
    """The local engine manager (tidegate.engines.supervisor.EngineSupervisor)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def _local_engines(config: Config, routing: RoutingTable, metrics: GatewayMetrics) -> Engines:
    from tidegate.engines.supervisor import EngineSupervisor  # only `up` with engines needs it

    return EngineSupervisor(config=config, routing=routing, metrics=metrics)


def _local_model_dir(config: Config) -> str | None:
    if config.engines.replicas <= 0:
        return None
    from tidegate.engines.model_prepare import resolve_model

    resolved = resolve_model(config)
    return resolved if Path(resolved).is_dir() else None


async def _seed_budgets(limiter: Limiter, tenants: TenantService, usage: UsageQueries) -> None:
    """The in-process limit store starts empty: give it today's and this month's spend."""
    for tenant in await tenants.list():
        await seed_budget_spend(
            limiter, usage, tenant_id=tenant.id, budgets=tenant.settings.budgets
        )


def _file_service(config: Config, sessions: async_sessionmaker[AsyncSession]) -> FileService | None:
    if not config.batch.enabled:
        return None
    return FileService(
        sessions=sessions,
        storage=build_storage(config),
        config=config.batch,
        max_line_bytes=config.server.max_body_bytes,
    )


def _dependencies(
    store: AsyncEngine, limit_store: LimitStore, metrics: GatewayMetrics
) -> Dependencies:
    """The store and the limit store, probed for /readyz and tidegate_dependency_up."""

    async def store_ping() -> None:
        async with store.connect() as connection:
            await connection.execute(text("SELECT 1"))

    dependencies = Dependencies(registry=metrics.registry)
    dependencies.add("store", backend=store.dialect.name, probe=store_ping)
    if isinstance(limit_store, RedisLimitStore):
        dependencies.add("limit_store", backend="redis", probe=limit_store.ping)
    else:
        dependencies.add("limit_store", backend="memory", probe=None)
    return dependencies


def _cluster_shared(config: Config) -> bool:
    """Whether pools' capacity is shared with other gateways (scheduling.cluster.mode)."""
    mode = config.scheduling.cluster.mode
    return mode == "redis" or (mode == "auto" and config.limits.backend == "redis")


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


def build_app(
    config: Config,
    *,
    announce_admin_key: Callable[[str | None], None] | None = None,
    access_log: AccessLog | None = None,
    span_exporter: SpanExporter | None = None,
    dns_resolver: Resolver = resolve_host,
) -> Starlette:
    """``access_log`` and ``span_exporter``: where tests collect what the app writes;
    ``dns_resolver``: how ``discovery: dns`` upstreams are resolved."""
    slot = ServicesSlot()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await migrate(config.store_url)
            store = create_engine(config.store_url)
            stack.push_async_callback(store.dispose)
            sessions = create_sessionmaker(store)
            keys = KeyService(
                sessions=sessions,
                cache_ttl_s=config.store.key_cache_ttl_s,
                outage_s=config.store.key_cache_outage_s,
            )
            generated = await keys.ensure_admin_key(config.admin_key)
            if config.admin_key is None and announce_admin_key is not None:
                announce_admin_key(generated)  # None: one was generated at an earlier start
            tenants = TenantService(sessions=sessions)
            usage = UsageQueries(sessions=sessions)

            metrics = GatewayMetrics()
            tracing = Tracing(
                service_name=config.telemetry.service_name,
                otlp_endpoint=config.telemetry.otlp_endpoint,
                exporter=span_exporter,
            )
            stack.callback(tracing.shutdown)
            log = access_log or AccessLog(enabled=config.server.access_log)
            log.start()
            stack.push_async_callback(log.stop)

            # Usage first in, last out: every request served below is metered and flushed.
            meter = UsageMeter(
                sessions=sessions,
                wal_dir=config.wal_dir,
                flush_interval_s=config.metering.flush_interval_s,
                batch_size=config.metering.batch_size,
                max_backlog_bytes=config.metering.wal_max_bytes,
            )
            await meter.start()
            stack.push_async_callback(meter.stop)
            register_usage_metrics(metrics.registry, meter)
            redactor = Redactor()
            prompt_logs = PromptLogWriter(
                sessions=sessions,
                redact=redactor.redact,
                flush_interval_s=config.metering.flush_interval_s,
                batch_size=config.metering.batch_size,
            )
            prompt_logs.start()
            stack.push_async_callback(prompt_logs.stop)
            purger = RetentionPurger(sessions=sessions, interval_s=config.metering.purge_interval_s)
            purger.start()
            stack.push_async_callback(purger.stop)

            # A Redis store rebuilds counters it lost (a Redis restart) from the usage records.
            limit_store = build_limit_store(config.limits, usage=usage)
            limiter = build_limiter(
                limits=config.limits,
                pricing=config.pricing,
                registry=metrics.registry,
                store=limit_store,
            )
            stack.push_async_callback(limiter.aclose)
            if isinstance(limit_store, RedisLimitStore):
                await limit_store.start()  # warm connections before /readyz says ready
            dependencies = _dependencies(store, limit_store, metrics)
            dependencies.start()
            stack.push_async_callback(dependencies.stop)
            if config.limits.backend == "memory":
                await _seed_budgets(limiter, tenants, usage)

            tokenizer_pool = ThreadPoolExecutor(
                max_workers=config.validation.tokenizer_threads, thread_name_prefix="tokenizer"
            )
            stack.callback(tokenizer_pool.shutdown, wait=False, cancel_futures=True)
            pools = pool_limits(
                config, local_model_dir=_local_model_dir(config), executor=tokenizer_pool
            )
            validator = RequestValidator(
                config=config.validation, models=models_for_pools(config, pools)
            )

            routing = build_routing(config)
            register_pool_metrics(
                metrics.registry,
                routing=routing,
                default_concurrency=config.engines.profile.max_num_seqs,
            )
            server = config.server
            if server.metrics_port is not None:
                listener = MetricsListener(
                    registry=metrics.registry, host=server.metrics_host, port=server.metrics_port
                )
                await listener.start()
                stack.push_async_callback(listener.stop)
                _log.info("metrics listener on %s (no token)", listener.url)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=server.upstream_max_connections, keepalive_timeout=30
                ),
                skip_auto_headers=("User-Agent",),
            )
            stack.push_async_callback(session.close)
            for discovery in dns_discoveries(
                config.upstreams,
                routing=routing,
                session=session,
                metrics=metrics,
                resolver=dns_resolver,
            ):
                await discovery.start()
                stack.push_async_callback(discovery.stop)
            # vLLM's max_model_len for pools whose config gives no context_length.
            context_lengths = ContextLengths(config=config, pools=pools, session=session)
            await context_lengths.start()
            stack.push_async_callback(context_lengths.stop)
            checker = HealthChecker(
                routing=routing, session=session, config=config.routing.health, metrics=metrics
            )
            await checker.start()
            stack.push_async_callback(checker.stop)
            timeouts = UpstreamTimeouts(
                connect_s=server.connect_timeout_s,
                total_s=server.request_timeout_s,
                idle_s=server.idle_timeout_s,
            )
            upstream = UpstreamClient(session=session, timeouts=timeouts)
            routing_metrics = RoutingMetrics(metrics.registry)

            scheduler: Scheduler | None = None
            if config.scheduling.enabled:
                shared = _cluster_shared(config)
                scheduler = Scheduler(
                    config=config.scheduling,
                    default_concurrency=config.engines.profile.max_num_seqs,
                    metrics=metrics,
                    shared=shared,
                )
                scheduler.start()
                stack.push_async_callback(scheduler.stop)
                if shared:
                    # Stopped before the scheduler: a clean exit hands its slots back at once.
                    cluster = _cluster(config, scheduler, routing, metrics)
                    await cluster.start()
                    stack.push_async_callback(cluster.stop)

            providers: dict[str, Provider] = {
                "openai": upstream,
                "anthropic": AnthropicClient(session=session, timeouts=timeouts),
            }
            rollouts: RolloutRuntime | None = None
            if config.rollouts.enabled:
                rollouts = build_rollouts(
                    config,
                    sessions=sessions,
                    routing=routing,
                    providers=providers,
                    meter=meter,
                    registry=metrics.registry,
                    redact=redactor.redact,
                )
                await rollouts.services.versions.record_config(config)
                await rollouts.start()
                stack.push_async_callback(rollouts.stop)

            files = _file_service(config, sessions)
            batches = (
                None
                if files is None
                else BatchService(
                    sessions=sessions,
                    files=files,
                    max_window_s=config.batch.max_completion_window_s,
                )
            )
            slot.fill(
                ApiServices(
                    keys=keys,
                    tenants=tenants,
                    audit=AuditLog(sessions=sessions),
                    completions=CompletionService(
                        routing=routing,
                        providers=providers,
                        metrics=metrics,
                        routing_metrics=routing_metrics,
                        validator=validator,
                        limiter=limiter,
                        tracing=tracing,
                        outliers=OutlierDetector(
                            config.routing.health, on_eject=routing_metrics.ejected
                        ),
                        retry_budget=RetryBudget(ratio=config.routing.health.retry_budget_ratio),
                        ttft_targets={
                            "interactive": config.scheduling.interactive.ttft_target_s,
                            "batch": config.scheduling.batch.ttft_target_s,
                        },
                        scheduler=scheduler,
                        tap=None if rollouts is None else rollouts.tap,
                    ),
                    accounting=RequestAccounting(
                        recorder=RequestRecorder(metrics=metrics, access_log=log),
                        prices=PriceTable(prices=config.pricing),
                        meter=meter,
                        prompt_logs=prompt_logs,
                        tap=None if rollouts is None else rollouts.tap,
                    ),
                    tracing=tracing,
                    metrics=metrics,
                    routing=routing,
                    dependencies=dependencies,
                    max_body_bytes=server.max_body_bytes,
                    usage=usage,
                    limiter=limiter,
                    files=files,
                    batches=batches,
                    rollouts=None if rollouts is None else rollouts.services,
                    metrics_token=(
                        None
                        if server.metrics_token is None
                        else server.metrics_token.get_secret_value()
                    ),
                )
            )
            stack.callback(slot.clear)
            if config.engines.replicas > 0:
                engines = _local_engines(config, routing, metrics)
                # Registered before start(): a replica that started must be stopped, even when
                # another one failed to.
                stack.push_async_callback(engines.stop)
                await engines.start()
            if files is not None:
                # Started last, stopped first: no line is claimed once shutdown begins.
                running = slot.get()
                runner = build_runner(
                    config.batch,
                    sessions=sessions,
                    files=files,
                    keys=keys,
                    routing=routing,
                    validator=validator,
                    completions=running.completions,
                    accounting=running.accounting,
                    max_line_bytes=config.server.max_body_bytes,
                )
                runner.start()
                stack.push_async_callback(runner.stop)
            freeze_startup_heap()  # full collections then skip the start-up heap
            await stack.enter_async_context(watch_loop_stalls(metrics.registry))
            yield

    ids = RequestIds()
    return Starlette(
        routes=guard_routes(build_routes(slot, ids, console=config.console.enabled)),
        middleware=[Middleware(RequestIdMiddleware, ids=ids)],
        exception_handlers={
            TidegateError: tidegate_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        lifespan=lifespan,
    )
