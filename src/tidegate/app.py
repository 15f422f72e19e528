"""Builds the ASGI app from a Config. The lifespan wires the services; nothing is global.

Startup: migrate the store, make sure an admin key exists (announcing a generated one once),
build the routing table (remote upstreams are ready at once; local engines are started by the
supervisor and become ready when loaded), open the upstream connection pool. Shutdown runs in
reverse; the supervisor drains the replicas before stopping them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import aiohttp
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from tidegate.api.request_id import RequestIdMiddleware
from tidegate.api.routes import build_routes, http_error_handler, tidegate_error_handler
from tidegate.api.services import ApiServices, ServicesSlot
from tidegate.config import Config
from tidegate.errors import TidegateError
from tidegate.gateway.completions import CompletionService
from tidegate.gateway.keys import KeyService
from tidegate.observability.access_log import AccessLog
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.recorder import RequestRecorder
from tidegate.routing.replicas import Replica, ReplicaState, RoutingTable
from tidegate.store.db import create_engine, create_sessionmaker
from tidegate.store.migrate import migrate
from tidegate.upstream.client import UpstreamClient, UpstreamTimeouts


class Engines(Protocol):
    """The local engine manager (tidegate.engines.supervisor.EngineSupervisor)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def add_remote_upstreams(config: Config, routing: RoutingTable) -> None:
    for index, upstream in enumerate(config.upstreams):
        routing.add(
            Replica(
                id=f"u{index}",
                model=upstream.model,
                base_url=upstream.url.rstrip("/"),
                upstream_model=upstream.upstream_model or upstream.model,
                api_key=upstream.api_key.get_secret_value() if upstream.api_key else None,
                state=ReplicaState.READY,
            )
        )


def _local_engines(config: Config, routing: RoutingTable, metrics: GatewayMetrics) -> Engines:
    from tidegate.engines.supervisor import EngineSupervisor  # only `up` with engines needs it

    return EngineSupervisor(config=config, routing=routing, metrics=metrics)


def build_app(
    config: Config,
    *,
    announce_admin_key: Callable[[str | None], None] | None = None,
    access_log: AccessLog | None = None,
) -> Starlette:
    slot = ServicesSlot()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await migrate(config.store_url)
        store = create_engine(config.store_url)
        keys = KeyService(
            sessions=create_sessionmaker(store), cache_ttl_s=config.store.key_cache_ttl_s
        )
        generated = await keys.ensure_admin_key(config.admin_key)
        if config.admin_key is None and announce_admin_key is not None:
            announce_admin_key(generated)  # None: one was generated at an earlier start

        metrics = GatewayMetrics()
        routing = RoutingTable()
        add_remote_upstreams(config, routing)
        engines: Engines | None = None
        if config.engines.replicas > 0:
            engines = _local_engines(config, routing, metrics)

        server = config.server
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=server.upstream_max_connections, keepalive_timeout=30
            ),
            skip_auto_headers=("User-Agent",),
        )
        upstream = UpstreamClient(
            session=session,
            timeouts=UpstreamTimeouts(
                connect_s=server.connect_timeout_s,
                total_s=server.request_timeout_s,
                idle_s=server.idle_timeout_s,
            ),
        )
        log = access_log or AccessLog(enabled=server.access_log)
        log.start()

        async def store_ping() -> None:
            async with store.connect() as connection:
                await connection.execute(text("SELECT 1"))

        slot.fill(
            ApiServices(
                keys=keys,
                completions=CompletionService(routing=routing, upstream=upstream, metrics=metrics),
                recorder=RequestRecorder(metrics=metrics, access_log=log),
                metrics=metrics,
                routing=routing,
                store_ping=store_ping,
                max_body_bytes=server.max_body_bytes,
            )
        )
        try:
            if engines is not None:
                await engines.start()
            yield
        finally:
            if engines is not None:
                await engines.stop()
            slot.clear()
            await session.close()
            await log.stop()
            await store.dispose()

    return Starlette(
        routes=build_routes(slot),
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            TidegateError: tidegate_error_handler,
            HTTPException: http_error_handler,
        },
        lifespan=lifespan,
    )
