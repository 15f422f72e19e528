"""The request pipeline for the app's lifespan: the limits (and the dependency probes /readyz
reads), the validator with each model's tokenizer and context length, and the completion
service that ties them to routing, scheduling and the upstream providers."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tidegate.config import Config
from tidegate.metering import UsageQueries
from tidegate.observability.dependencies import Dependencies
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.tracing import Tracing
from tidegate.pipeline.completions import CompletionService
from tidegate.pipeline.context_lengths import ContextLengths
from tidegate.pipeline.limits import Limiter, RedisLimitStore, build_limit_store, build_limiter
from tidegate.pipeline.limits.model import LimitStore
from tidegate.pipeline.limits.seeding import seed_budget_spend
from tidegate.pipeline.model_limits import models_for_pools, pool_limits
from tidegate.pipeline.taps import RequestTap
from tidegate.pipeline.validation import ModelLimits, RequestValidator
from tidegate.routing.cost import pool_economics
from tidegate.routing.metrics import RoutingMetrics
from tidegate.routing.outlier import OutlierDetector
from tidegate.routing.replicas import RoutingTable
from tidegate.routing.retry_budget import RetryBudget
from tidegate.safety.gates import SafetyGates
from tidegate.scheduling import Scheduler
from tidegate.tenancy.tenants import TenantService
from tidegate.upstream.client import Provider


@dataclass(frozen=True, slots=True)
class Limits:
    limiter: Limiter
    dependencies: Dependencies


async def wire_limits(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    store: AsyncEngine,
    tenants: TenantService,
    usage: UsageQueries,
    metrics: GatewayMetrics,
) -> Limits:
    """The limiter on its store (a Redis one rebuilds counters it lost, a Redis restart, from
    the usage records; an in-process one starts from today's and this month's spend), and the
    store and limit-store probes."""
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
        for tenant in await tenants.list():
            await seed_budget_spend(
                limiter, usage, tenant_id=tenant.id, budgets=tenant.settings.budgets
            )
    return Limits(limiter=limiter, dependencies=dependencies)


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


@dataclass(frozen=True, slots=True)
class Validation:
    validator: RequestValidator
    pools: dict[str, ModelLimits]
    """Each pool's limits (tokenizer, context length), by pool name."""


def wire_validation(
    config: Config, stack: contextlib.AsyncExitStack, *, local_model_dir: str | None
) -> Validation:
    """Tokenizers count prompts on their own threads, so the event loop never waits on one."""
    tokenizer_pool = ThreadPoolExecutor(
        max_workers=config.validation.tokenizer_threads, thread_name_prefix="tokenizer"
    )
    stack.callback(tokenizer_pool.shutdown, wait=False, cancel_futures=True)
    pools = pool_limits(config, local_model_dir=local_model_dir, executor=tokenizer_pool)
    validator = RequestValidator(config=config.validation, models=models_for_pools(config, pools))
    return Validation(validator=validator, pools=pools)


async def start_context_lengths(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    pools: dict[str, ModelLimits],
    session: aiohttp.ClientSession,
) -> None:
    """vLLM's max_model_len for pools whose config gives no context_length."""
    context_lengths = ContextLengths(config=config, pools=pools, session=session)
    await context_lengths.start()
    stack.push_async_callback(context_lengths.stop)


def build_completions(
    config: Config,
    *,
    routing: RoutingTable,
    providers: dict[str, Provider],
    metrics: GatewayMetrics,
    routing_metrics: RoutingMetrics,
    validator: RequestValidator,
    limiter: Limiter,
    tracing: Tracing,
    scheduler: Scheduler | None,
    tap: RequestTap | None,
    safety: SafetyGates | None = None,
) -> CompletionService:
    return CompletionService(
        routing=routing,
        providers=providers,
        metrics=metrics,
        routing_metrics=routing_metrics,
        validator=validator,
        limiter=limiter,
        tracing=tracing,
        outliers=OutlierDetector(config.routing.health, on_eject=routing_metrics.ejected),
        retry_budget=RetryBudget(ratio=config.routing.health.retry_budget_ratio),
        ttft_targets={
            "interactive": config.scheduling.interactive.ttft_target_s,
            "batch": config.scheduling.batch.ttft_target_s,
        },
        scheduler=scheduler,
        tap=tap,
        safety=safety,
        economics=pool_economics(config),
    )
