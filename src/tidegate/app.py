"""Builds the ASGI app from a Config. The lifespan wires the services; nothing is global.

Each subsystem is wired by a function in its own package (``*/wiring.py``), which registers its
own teardown on the lifespan's exit stack; this module only composes them, in order. Startup:
the store (migrated), tenancy (an admin key exists, a generated one announced once),
observability, usage metering (replaying what a crashed process left), the limits, the
validator (each model's tokenizer and context length), routing (remote upstreams are ready at
once; local engines are started by the supervisor and become ready when loaded), the upstream
connection pool, scheduling, rollouts, the Batch API, the local engines and the batch runner.
Shutdown runs in exact reverse order through the one exit stack: the batch runner stops
claiming first, the supervisor drains the replicas next, usage is flushed last.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

from opentelemetry.sdk.trace.export import SpanExporter
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
from tidegate.batch.wiring import start_runner, wire_batches
from tidegate.config import Config
from tidegate.engines.wiring import local_model_dir, start_engines
from tidegate.errors import TidegateError
from tidegate.heap import freeze_startup_heap
from tidegate.metering.wiring import wire_metering
from tidegate.observability.access_log import AccessLog
from tidegate.observability.loop_stalls import watch_loop_stalls
from tidegate.observability.recorder import RequestRecorder
from tidegate.observability.usage_metrics import register_usage_metrics
from tidegate.observability.wiring import start_metrics_listener, wire_observability
from tidegate.pipeline.accounting import RequestAccounting
from tidegate.pipeline.pricing import PriceTable
from tidegate.pipeline.redaction import Redactor
from tidegate.pipeline.wiring import (
    build_completions,
    start_context_lengths,
    wire_limits,
    wire_validation,
)
from tidegate.rollout.adapter_wiring import wire_adapters
from tidegate.rollout.wiring import wire_rollouts
from tidegate.routing.discovery import Resolver, resolve_host
from tidegate.routing.wiring import start_discovery, start_health_checks, wire_routing
from tidegate.safety.wiring import build_safety
from tidegate.scheduling.wiring import wire_scheduling
from tidegate.store.wiring import open_store
from tidegate.tenancy.wiring import wire_tenancy
from tidegate.upstream.wiring import build_providers, open_session


def build_app(
    config: Config,
    *,
    announce_admin_key: Callable[[str | None], None] | None = None,
    access_log: AccessLog | None = None,
    span_exporter: SpanExporter | None = None,
    dns_resolver: Resolver = resolve_host,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """``access_log`` and ``span_exporter``: where tests collect what the app writes;
    ``dns_resolver``: how ``discovery: dns`` upstreams are resolved; ``clock``: the wall
    clock route rules' time windows read."""
    slot = ServicesSlot()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            store = await open_store(config.store_url, stack)
            sessions = store.sessions
            tenancy = await wire_tenancy(config, sessions, announce_admin_key=announce_admin_key)
            seen = wire_observability(
                config, stack, access_log=access_log, span_exporter=span_exporter
            )
            metrics = seen.metrics
            # Usage first in, last out: every request served below is metered and flushed.
            redactor = Redactor()
            metering = await wire_metering(config, stack, sessions, redact=redactor.redact)
            register_usage_metrics(metrics.registry, metering.meter)
            limits = await wire_limits(
                config,
                stack,
                store=store.engine,
                tenants=tenancy.tenants,
                usage=metering.usage,
                metrics=metrics,
            )
            validation = wire_validation(config, stack, local_model_dir=local_model_dir(config))
            routing = wire_routing(config, metrics, clock=clock)
            await start_metrics_listener(config, stack, metrics)
            session = open_session(config, stack)
            await start_discovery(
                config,
                stack,
                routing=routing.table,
                session=session,
                metrics=metrics,
                resolver=dns_resolver,
            )
            await start_context_lengths(config, stack, pools=validation.pools, session=session)
            await start_health_checks(
                config, stack, routing=routing.table, session=session, metrics=metrics
            )
            scheduler = await wire_scheduling(config, stack, routing=routing.table, metrics=metrics)
            providers = build_providers(config, session)
            rollouts = await wire_rollouts(
                config,
                stack,
                sessions=sessions,
                routing=routing.table,
                providers=providers,
                meter=metering.meter,
                registry=metrics.registry,
                redact=redactor.redact,
            )
            adapters = await wire_adapters(
                config,
                stack,
                sessions=sessions,
                routing=routing.table,
                http=session,
                validation=validation,
            )
            tap = None if rollouts is None else rollouts.tap
            batches = wire_batches(config, sessions)
            completions = build_completions(
                config,
                routing=routing.table,
                providers=providers,
                metrics=metrics,
                routing_metrics=routing.metrics,
                validator=validation.validator,
                limiter=limits.limiter,
                tracing=seen.tracing,
                scheduler=scheduler,
                tap=tap,
                safety=build_safety(
                    config,
                    registry=metrics.registry,
                    routing=routing.table,
                    providers=providers,
                    session=session,
                    pii=lambda families: Redactor(families=families),
                ),
            )
            accounting = RequestAccounting(
                recorder=RequestRecorder(metrics=metrics, access_log=seen.access_log),
                prices=PriceTable(prices=config.pricing),
                meter=metering.meter,
                prompt_logs=metering.prompt_logs,
                tap=tap,
            )
            server = config.server
            slot.fill(
                ApiServices(
                    keys=tenancy.keys,
                    tenants=tenancy.tenants,
                    audit=tenancy.audit,
                    completions=completions,
                    accounting=accounting,
                    tracing=seen.tracing,
                    metrics=metrics,
                    routing=routing.table,
                    dependencies=limits.dependencies,
                    max_body_bytes=server.max_body_bytes,
                    usage=metering.usage,
                    limiter=limits.limiter,
                    files=None if batches is None else batches.files,
                    batches=None if batches is None else batches.batches,
                    rollouts=None if rollouts is None else rollouts.services,
                    adapters=adapters.service,
                    metrics_token=(
                        None
                        if server.metrics_token is None
                        else server.metrics_token.get_secret_value()
                    ),
                )
            )
            stack.callback(slot.clear)
            await start_engines(
                config,
                stack,
                routing=routing.table,
                metrics=metrics,
                scheduler=scheduler,
                audit=tenancy.audit.pool_scaled,
            )
            if batches is not None:
                start_runner(
                    config,
                    stack,
                    sessions=sessions,
                    files=batches.files,
                    keys=tenancy.keys,
                    routing=routing.table,
                    validator=validation.validator,
                    completions=completions,
                    accounting=accounting,
                )
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
