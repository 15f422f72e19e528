"""Adding, removing and listing LoRA adapters at runtime (the admin API and the CLI).

An added adapter version is a ``lora_adapters`` row (audited, and recorded as a model version of
its public name, with its pool and source), which every gateway's ``AdapterSync`` applies: its
pool joins the routing table and each replica of the base pool loads it. Through a gateway
(``sync`` given) the change applies there at once and the answer says how each replica's load
went; an adapter that a replica's engine refuses (a wrong path, a rank above the pool's) is
taken back out and the answer is a 400 with the engine's words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.config import Config, adapter_target
from tidegate.errors import InvalidRequestError, NotFoundError
from tidegate.protocol.adapters import AdapterCreate
from tidegate.rollout.adapter_sync import AdapterSpec, AdapterSync, configured_adapters, stored_spec
from tidegate.rollout.sync import ACTIVE_STATES
from tidegate.rollout.traffic_checks import operator_only
from tidegate.rollout.versions import new_version_id
from tidegate.routing.replicas import RoutingTable
from tidegate.store.db import lock, transaction
from tidegate.store.models import SYSTEM_TENANT_ID, LoraAdapter, ModelVersion, Rollout
from tidegate.tenancy import audit
from tidegate.tenancy.actors import Actor


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    replica: str
    loaded: bool
    detail: str


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    spec: AdapterSpec
    replicas: tuple[ReplicaLoad, ...]
    """Each replica of the base pool: whether its engine lists the adapter."""


class AdapterService:
    def __init__(
        self,
        *,
        config: Config,
        sessions: async_sessionmaker[AsyncSession],
        routing: RoutingTable,
        sync: AdapterSync | None,
    ) -> None:
        self._sessions = sessions
        self._routing = routing
        self._sync = sync
        self._configured = configured_adapters(config)
        self._main_pool = config.engines.served_model_name

    async def add(self, change: AdapterCreate, *, actor: Actor) -> AdapterInfo:
        operator_only(actor)
        target = adapter_target(change.name, change.version)
        pool = self._base_pool(change.pool)
        async with transaction(self._sessions, "add a LoRA adapter") as session:
            await lock(session, "lora_adapters")
            stored = {row.target: row for row in await session.scalars(select(LoraAdapter))}
            self._check_names(change.name, target, pool, stored)
            now = datetime.now(UTC)
            session.add(
                LoraAdapter(
                    target=target,
                    name=change.name,
                    version=change.version,
                    pool=pool,
                    source=change.source,
                    created_at=now,
                    created_by=actor.name,
                )
            )
            session.add(
                ModelVersion(
                    id=new_version_id(),
                    model=change.name,
                    pool=target,
                    source=change.source,
                    revision=change.version,
                    profile_hash="",
                    created_at=now,
                    created_by=actor.name,
                )
            )
            audit.record(
                session,
                actor=actor,
                action="adapter.added",
                tenant_id=SYSTEM_TENANT_ID,
                target_type="adapter",
                target_id=target,
                details={"name": change.name, "pool": pool, "source": change.source},
            )
        spec = AdapterSpec(target, change.name, change.version, pool, change.source, False)
        if self._sync is None:
            return AdapterInfo(spec, ())
        for key in [key for key in self._sync.results if key[0] == target]:
            del self._sync.results[key]  # a former version's refusal is not this one's
        await self._sync.sync_now()
        info = self._info(spec)
        refused = [load for load in info.replicas if load.detail.startswith("HTTP ")]
        if refused:
            await self._delete(target, actor, reason="refused by the engine")
            await self._sync.sync_now()
            hint = (
                " Its engine has no runtime LoRA loading: start the pool with LoRA support "
                "(engines.lora or engines.pools[].lora: true, or a configured adapter)."
                if refused[0].detail.startswith("HTTP 404")
                else ""
            )
            raise InvalidRequestError(
                f"The engine of replica {refused[0].replica} refused the adapter "
                f"'{target}': {refused[0].detail}. It was not added.{hint}",
                param="path",
                code="adapter_refused",
            )
        return info

    async def remove(self, target: str, *, actor: Actor) -> AdapterSpec:
        operator_only(actor)
        if target in self._configured:
            raise InvalidRequestError(
                f"The adapter '{target}' is configured (engines.adapters): remove it from the "
                "config and restart the pool instead.",
                param="name",
            )
        spec = await self._delete(target, actor, reason="removed")
        if self._sync is not None:
            await self._sync.sync_now()
        return spec

    async def list(self) -> list[AdapterInfo]:
        async with transaction(self._sessions, "list the LoRA adapters") as session:
            rows = list(await session.scalars(select(LoraAdapter).order_by(LoraAdapter.target)))
        specs = [*self._configured.values(), *(stored_spec(row) for row in rows)]
        return [self._info(spec) for spec in specs]

    async def _delete(self, target: str, actor: Actor, *, reason: str) -> AdapterSpec:
        async with transaction(self._sessions, "remove a LoRA adapter") as session:
            await lock(session, "lora_adapters")
            row = await session.get(LoraAdapter, target)
            if row is None:
                raise NotFoundError(
                    f"No adapter '{target}' was added at runtime. GET /admin/adapters lists "
                    "them (a version's name is NAME or NAME@VERSION).",
                    param="name",
                    code="adapter_not_found",
                )
            spec = stored_spec(row)
            rollout = await session.scalar(
                select(Rollout.id).where(
                    Rollout.model == spec.name,
                    Rollout.state.in_(ACTIVE_STATES),
                    or_(Rollout.stable_pool == target, Rollout.candidate_pool == target),
                )
            )
            if rollout is not None:
                raise InvalidRequestError(
                    f"The adapter version '{target}' is part of the active rollout {rollout}: "
                    "abort, roll back or promote it first.",
                    param="name",
                    code="adapter_in_rollout",
                )
            await session.delete(row)
            audit.record(
                session,
                actor=actor,
                action="adapter.removed",
                tenant_id=SYSTEM_TENANT_ID,
                target_type="adapter",
                target_id=target,
                details={"name": spec.name, "pool": spec.pool, "reason": reason},
            )
        return spec

    def _base_pool(self, pool: str | None) -> str:
        pools = {p.name: p for p in self._routing.pools()}
        bases = sorted(name for name, p in pools.items() if p.base is None)
        if pool is None:
            if self._main_pool in pools:
                return self._main_pool
            if len(bases) == 1:
                return bases[0]
            raise InvalidRequestError(
                f"Name the base pool ('pool'); pools here: {', '.join(bases) or 'none'}.",
                param="pool",
            )
        found = pools.get(pool)
        if found is None or found.base is not None:
            raise InvalidRequestError(
                f"Unknown base pool '{pool[:100]}'. Pools here: {', '.join(bases) or 'none'}.",
                param="pool",
            )
        if any(replica.provider != "openai" for replica in found.replicas):
            raise InvalidRequestError(
                f"Pool '{pool}' is not an OpenAI-compatible engine (vLLM): it cannot load "
                "LoRA adapters.",
                param="pool",
            )
        return pool

    def _check_names(
        self, name: str, target: str, pool: str, stored: dict[str, LoraAdapter]
    ) -> None:
        adapters = dict(self._configured)
        adapters.update({t: stored_spec(row) for t, row in stored.items()})
        if target in adapters:
            raise InvalidRequestError(
                f"The adapter version '{target}' exists already; remove it first, or add "
                "another version (a 'version' label).",
                param="version",
                code="adapter_exists",
            )
        same_name = [spec for spec in adapters.values() if spec.name == name]
        if same_name and same_name[0].pool != pool:
            raise InvalidRequestError(
                f"The adapter '{name}' is served by pool '{same_name[0].pool}': its versions "
                "must share that base pool.",
                param="pool",
            )
        if not same_name and name in self._routing.models():
            raise InvalidRequestError(
                f"'{name}' is a model of this gateway already; an adapter needs a name of its own.",
                param="name",
                code="name_taken",
            )
        if target in {p.name for p in self._routing.pools()}:
            raise InvalidRequestError(
                f"'{target}' is a pool of this gateway already.", param="name", code="name_taken"
            )

    def _info(self, spec: AdapterSpec) -> AdapterInfo:
        try:
            replicas = self._routing.pool(spec.pool).replicas
        except KeyError:
            replicas = []
        results = self._sync.results if self._sync is not None else {}
        loads = []
        for replica in replicas:
            loaded = spec.target in replica.adapters
            result = results.get((spec.target, replica.id))
            detail = "" if loaded or result is None else result.detail
            loads.append(ReplicaLoad(replica.id, loaded, detail))
        return AdapterInfo(spec, tuple(loads))
