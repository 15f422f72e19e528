"""Building the LoRA adapter sync and service for the app's lifespan."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.config import Config
from tidegate.pipeline.wiring import Validation
from tidegate.rollout.adapter_sync import AdapterSync
from tidegate.rollout.adapters import AdapterService
from tidegate.routing.replicas import RoutingTable


@dataclass(frozen=True, slots=True)
class AdapterRuntime:
    sync: AdapterSync
    service: AdapterService


async def wire_adapters(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    sessions: async_sessionmaker[AsyncSession],
    routing: RoutingTable,
    http: aiohttp.ClientSession,
    validation: Validation | None = None,
) -> AdapterRuntime:
    """Starts the adapter sync (stopped at shutdown); it follows the store every
    rollouts.sync_interval_s, like traffic policies. ``validation``: runtime adapters are
    validated with their base pool's limits (context length, tokenizer)."""

    def validate_like_base(name: str, pool: str) -> None:
        limits = validation.pools.get(pool) if validation is not None else None
        if validation is not None and limits is not None:
            validation.validator.add_model(name, limits)

    sync = AdapterSync(
        config=config,
        sessions=sessions,
        routing=routing,
        http=http,
        interval_s=config.rollouts.sync_interval_s,
        on_added=validate_like_base,
    )
    await sync.start()
    stack.push_async_callback(sync.stop)
    return AdapterRuntime(
        sync=sync,
        service=AdapterService(config=config, sessions=sessions, routing=routing, sync=sync),
    )
