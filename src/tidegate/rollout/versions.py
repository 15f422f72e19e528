"""Model version records: what each pool serves under a public model name.

Every gateway records its configured pools at startup (:meth:`VersionService.record_config`):
a version is added only when a pool's fingerprint (source, revision, engine profile hash)
differs from the newest one recorded for that pool, so restarts add nothing. The check and the
insert run under one store lock, so gateways starting together record a change once. Operators
may also register versions through the admin API. Each model keeps its newest ``keep`` records.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.config import Config, EngineProfile
from tidegate.engines.model_prepare import bundled_name, looks_like_path, prepared_dir
from tidegate.errors import TidegateError
from tidegate.rollout.traffic_checks import check_pool, check_text, operator_only
from tidegate.routing.replicas import RoutingTable
from tidegate.store.db import lock, transaction
from tidegate.store.models import SYSTEM_TENANT_ID, ModelVersion
from tidegate.tenancy import audit
from tidegate.tenancy.actors import Actor

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What one pool serves."""

    model: str
    """The public model name."""
    pool: str
    source: str
    revision: str
    profile_hash: str

    def same(self, row: ModelVersion) -> bool:
        return (row.source, row.revision, row.profile_hash) == (
            self.source,
            self.revision,
            self.profile_hash,
        )


@dataclass(frozen=True, slots=True)
class VersionInfo:
    id: str
    model: str
    pool: str
    source: str
    revision: str
    profile_hash: str
    created_at: datetime
    created_by: str


class VersionService:
    """Records and lists model versions. ``routing``, when given, checks model and pool names
    of registrations and lets listing tell an unknown model from one with no versions."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        keep: int,
        routing: RoutingTable | None = None,
    ) -> None:
        self._sessions = sessions
        self._keep = keep
        self._routing = routing

    async def register(
        self,
        model: str,
        pool: str,
        source: str,
        revision: str = "",
        profile_hash: str = "",
        *,
        actor: Actor,
    ) -> VersionInfo:
        operator_only(actor)
        if self._routing is not None:
            self._routing.route(model)  # ModelNotFoundError for an unknown model
            known = sorted(p.name for p in self._routing.pools())
            check_pool(pool, known, param="pool")
        fingerprint = Fingerprint(
            model=model,
            pool=pool,
            source=check_text(source, param="source", max_len=1000),
            revision=check_text(revision, param="revision", max_len=200, required=False),
            profile_hash=check_text(profile_hash, param="profile_hash", max_len=64, required=False),
        )
        async with transaction(self._sessions, "register a model version") as session:
            row = self._add(session, fingerprint, actor)
            await self._prune(session, model)
        return _info(row)

    async def record_config(self, config: Config) -> None:
        """Record a version for each configured pool whose fingerprint is new. A store failure
        is logged, not raised: a missing record must not keep the gateway from starting."""
        fingerprints = await asyncio.to_thread(configured_fingerprints, config)
        if not fingerprints:
            return
        actor = Actor.internal("startup")
        try:
            async with transaction(self._sessions, "record model versions") as session:
                await lock(session, "model_versions")
                added = await self._record_new(session, fingerprints, actor)
                for model in sorted({f.model for f in added}):
                    await self._prune(session, model)
        except TidegateError as exc:
            log.warning("recording the configured model versions failed: %s", exc)
            return
        for fingerprint in added:
            log.info("new version of %s/%s recorded", fingerprint.model, fingerprint.pool)

    async def _record_new(
        self, session: AsyncSession, fingerprints: list[Fingerprint], actor: Actor
    ) -> list[Fingerprint]:
        models = sorted({f.model for f in fingerprints})
        rows = await session.scalars(
            select(ModelVersion)
            .where(ModelVersion.model.in_(models))
            .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        )
        newest: dict[tuple[str, str], ModelVersion] = {}
        for row in rows:
            newest.setdefault((row.model, row.pool), row)
        added = []
        for fingerprint in fingerprints:
            current = newest.get((fingerprint.model, fingerprint.pool))
            if current is None or not fingerprint.same(current):
                self._add(session, fingerprint, actor)
                added.append(fingerprint)
        await session.flush()
        return added

    def _add(self, session: AsyncSession, fingerprint: Fingerprint, actor: Actor) -> ModelVersion:
        row = ModelVersion(
            id=new_version_id(),
            model=fingerprint.model,
            pool=fingerprint.pool,
            source=fingerprint.source,
            revision=fingerprint.revision,
            profile_hash=fingerprint.profile_hash,
            created_at=datetime.now(UTC),
            created_by=actor.name,
        )
        session.add(row)
        audit.record(
            session,
            actor=actor,
            action="version.registered",
            tenant_id=SYSTEM_TENANT_ID,
            target_type="model",
            target_id=fingerprint.model,
            details={
                "version_id": row.id,
                "pool": row.pool,
                "source": row.source,
                "revision": row.revision,
                "profile_hash": row.profile_hash,
            },
        )
        return row

    async def _prune(self, session: AsyncSession, model: str) -> None:
        await session.flush()
        kept = select(ModelVersion.id).where(ModelVersion.model == model)
        kept = kept.order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        keep_ids = list(await session.scalars(kept.limit(self._keep)))
        await session.execute(
            delete(ModelVersion)
            .where(ModelVersion.model == model, ModelVersion.id.not_in(keep_ids))
            .execution_options(synchronize_session=False)
        )

    async def list(self, model: str) -> list[VersionInfo]:
        """Newest first. ModelNotFoundError for a model neither served here nor recorded."""
        async with transaction(self._sessions, "list model versions") as session:
            rows = await session.scalars(
                select(ModelVersion)
                .where(ModelVersion.model == model)
                .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
            )
            versions = [_info(row) for row in rows]
        if not versions and self._routing is not None:
            self._routing.route(model)
        return versions


def configured_fingerprints(config: Config) -> list[Fingerprint]:
    """The config's local and upstream pools, each once. Reads model directories' listings."""
    found: dict[tuple[str, str], Fingerprint] = {}
    served = config.engines.served_model_name
    for local in config.engines.local_pools():
        found.setdefault(
            (served, local.name),
            Fingerprint(
                model=served,
                pool=local.name,
                source=local.model,
                revision=model_revision(config, local.model),
                profile_hash=profile_hash(local.profile),
            ),
        )
        # Each LoRA adapter version: a version of the adapter's public name, on its own pool.
        for adapter in local.adapters:
            found.setdefault(
                (adapter.name, adapter.target),
                Fingerprint(
                    model=adapter.name,
                    pool=adapter.target,
                    source=adapter.source,
                    revision=model_revision(config, adapter.path) if adapter.path else "",
                    profile_hash="",
                ),
            )
    for upstream in config.upstreams:
        pool = upstream.pool or upstream.model
        found.setdefault(
            (upstream.model, pool),
            Fingerprint(upstream.model, pool, upstream.upstream_model or upstream.model, "", ""),
        )
    return list(found.values())


def model_revision(config: Config, model: str) -> str:
    """A checksum of a local model directory's config and weight file names and sizes (cheap:
    no file is read); the model string itself for a hub id or a directory not there yet."""
    name = bundled_name(model)
    if name is not None:
        directory = prepared_dir(config, name)
    elif looks_like_path(model):
        directory = Path(model).expanduser()
    else:
        return model
    digest = hashlib.sha256()
    try:
        files = sorted(
            (entry.name, entry.stat().st_size)
            for entry in directory.iterdir()
            if entry.is_file() and _config_or_weights(entry.name)
        )
    except OSError:
        return model
    if not files:
        return model
    for file_name, size in files:
        digest.update(f"{file_name}\t{size}\n".encode())
    return "files:" + digest.hexdigest()[:16]


def profile_hash(profile: EngineProfile) -> str:
    document = orjson.dumps(profile.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(document).hexdigest()[:16]


def _config_or_weights(name: str) -> bool:
    return name == "config.json" or name.endswith(_WEIGHT_SUFFIXES) or name.endswith(".index.json")


def new_version_id() -> str:
    # Time-ordered, so versions created within one clock tick still list newest first.
    return f"ver_{time.time_ns():016x}{secrets.token_hex(4)}"


def _info(row: ModelVersion) -> VersionInfo:
    return VersionInfo(
        id=row.id,
        model=row.model,
        pool=row.pool,
        source=row.source,
        revision=row.revision,
        profile_hash=row.profile_hash,
        created_at=row.created_at,
        created_by=row.created_by,
    )
