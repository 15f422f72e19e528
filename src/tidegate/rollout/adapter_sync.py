"""Each gateway's view of the LoRA adapters: the configured ones and those added at runtime.

Every ``interval_s`` (and at once after an admin change made through this gateway) the sync
re-reads the store's ``lora_adapters`` rows, adds or removes their pools in the routing table
(``routing.adapter_pools``) and reconciles the engines: each ready OpenAI-compatible replica of
a base pool lists its registered adapters (``GET /v1/models``), gets the missing ones loaded
(``POST /v1/load_lora_adapter``) and the removed ones unloaded. So replicas that start or
restart later get their adapters within one interval, and ``Replica.adapters`` (what
adapter-aware routing reads) follows what each engine really has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.background import Periodic
from tidegate.config import Config, PoolConfig
from tidegate.routing.adapter_pools import adapter_pool
from tidegate.routing.replica import Replica
from tidegate.routing.replicas import RoutingTable
from tidegate.store.db import transaction
from tidegate.store.models import LoraAdapter
from tidegate.upstream.lora import LoraResult, load_adapter, loaded_adapters, unload_adapter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """One adapter version as the sync applies it."""

    target: str
    """Its pool and vLLM LoRA name."""
    name: str
    """The public model name."""
    version: str
    pool: str
    """The base pool."""
    source: str
    configured: bool


def configured_adapters(config: Config) -> dict[str, AdapterSpec]:
    return {
        adapter.target: AdapterSpec(
            adapter.target, adapter.name, adapter.version, local.name, adapter.source, True
        )
        for local in config.engines.local_pools()
        for adapter in local.adapters
    }


def stored_spec(row: LoraAdapter) -> AdapterSpec:
    return AdapterSpec(row.target, row.name, row.version, row.pool, row.source, False)


class AdapterSync:
    def __init__(
        self,
        *,
        config: Config,
        sessions: async_sessionmaker[AsyncSession],
        routing: RoutingTable,
        http: aiohttp.ClientSession,
        interval_s: float,
        load_timeout_s: float = 60.0,
        on_added: Callable[[str, str], None] | None = None,
    ) -> None:
        """``on_added(name, pool)``: a runtime adapter's public name joined, on that base pool
        (validation then counts its prompts like the pool's)."""
        self._on_added = on_added
        self._sessions = sessions
        self._routing = routing
        self._http = http
        self._load_timeout_s = load_timeout_s
        self._configured = configured_adapters(config)
        self._settings = {pool.name: pool for pool in config.routing.pools}
        self._runtime: dict[str, AdapterSpec] = {}
        """The stored adapters applied to the routing table now."""
        self._removed: dict[str, AdapterSpec] = {}
        """Removed from the store, still to unload from engines that have them."""
        self._skipped: set[str] = set()
        """Stored adapters whose base pool this gateway lacks (warned about once)."""
        self.results: dict[tuple[str, str], LoraResult] = {}
        """(target, replica id) → the last load's result, for the admin API's answer."""
        self._lock = asyncio.Lock()
        self._periodic = Periodic(name="adapter-sync", interval_s=interval_s, step=self.sync_now)

    def adapters(self) -> list[AdapterSpec]:
        """Every adapter version served here: the configured ones, then the stored ones."""
        return [*self._configured.values(), *self._runtime.values()]

    async def start(self) -> None:
        try:
            await self.sync_now()
        except Exception as exc:  # a store outage must not keep the gateway from starting
            log.warning("the first adapter sync failed: %s", exc)
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def sync_now(self) -> None:
        async with self._lock:
            async with transaction(self._sessions, "read the LoRA adapters") as session:
                rows = list(await session.scalars(select(LoraAdapter)))
            self._apply({row.target: stored_spec(row) for row in rows})
            await self._reconcile()

    def _apply(self, stored: dict[str, AdapterSpec]) -> None:
        for target in [t for t in self._runtime if t not in stored]:
            spec = self._runtime.pop(target)
            self._routing.remove_adapter(target, model=spec.name)
            self._removed[target] = spec
            for key in [key for key in self.results if key[0] == target]:
                del self.results[key]
            log.info("adapter %s removed", target)
        for target, spec in stored.items():
            if target in self._runtime or target in self._configured:
                continue
            try:
                base = self._routing.pool(spec.pool)
            except KeyError:
                if target not in self._skipped:
                    self._skipped.add(target)
                    log.warning("adapter %s skipped: no pool %s here", target, spec.pool)
                continue
            settings: PoolConfig | None = self._settings.get(spec.pool)
            self._routing.add_adapter(
                adapter_pool(target, base, settings=settings), model=spec.name
            )
            self._runtime[target] = spec
            self._removed.pop(target, None)
            if self._on_added is not None:
                self._on_added(spec.name, spec.pool)
            log.info("adapter %s added on pool %s (%s)", target, spec.pool, spec.source)

    async def _reconcile(self) -> None:
        wanted: dict[str, list[AdapterSpec]] = {}
        for spec in self.adapters():
            wanted.setdefault(spec.pool, []).append(spec)
        unwanted: dict[str, list[AdapterSpec]] = {}
        for spec in self._removed.values():
            unwanted.setdefault(spec.pool, []).append(spec)
        jobs = []
        for pool_name in wanted.keys() | unwanted.keys():
            try:
                pool = self._routing.pool(pool_name)
            except KeyError:
                continue
            for replica in pool.replicas:
                if replica.ready and replica.provider == "openai":
                    jobs.append(
                        self._replica(replica, wanted.get(pool_name, []), unwanted.get(pool_name))
                    )
        await asyncio.gather(*jobs)
        # Removed adapters are forgotten once no replica lists them any more.
        for target in [t for t in self._removed if not self._listed_anywhere(t)]:
            del self._removed[target]

    def _listed_anywhere(self, target: str) -> bool:
        return any(target in replica.adapters for replica in self._routing.replicas())

    async def _replica(
        self, replica: Replica, wanted: list[AdapterSpec], unwanted: list[AdapterSpec] | None
    ) -> None:
        http, url, key = self._http, replica.base_url, replica.api_key
        listed = await loaded_adapters(http, url, api_key=key)
        if listed is None:
            return  # no answer: try again next pass, keep what we knew
        have = set(listed)
        for spec in wanted:
            if spec.target in have:
                continue
            result = await load_adapter(
                http, url, spec.target, spec.source, api_key=key, timeout_s=self._load_timeout_s
            )
            self.results[(spec.target, replica.id)] = result
            if result.ok:
                have.add(spec.target)
            else:
                log.warning("loading adapter %s on %s failed: %s", spec.target, replica.id, result)
        for spec in unwanted or ():
            if spec.target in have:
                result = await unload_adapter(http, url, spec.target, api_key=key)
                if result.ok:
                    have.discard(spec.target)
        replica.record_adapters(frozenset(have))


async def add_stored_adapters(
    config: Config, routing: RoutingTable, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Give a routing table built from the config (the CLI's) the pools of the adapters added
    at runtime, so traffic splits and rollouts may name them as a gateway's table does."""
    async with transaction(sessions, "read the LoRA adapters") as session:
        rows = list(await session.scalars(select(LoraAdapter)))
    settings = {pool.name: pool for pool in config.routing.pools}
    known = {pool.name: pool for pool in routing.pools()}
    for row in rows:
        base = known.get(row.pool)
        if base is not None and row.target not in known:
            routing.add_adapter(
                adapter_pool(row.target, base, settings=settings.get(row.pool)), model=row.name
            )
