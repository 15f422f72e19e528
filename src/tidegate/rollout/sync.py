"""Each gateway's copy of the store's traffic policies and running rollouts.

Every ``rollouts.sync_interval_s`` (and at once after an admin change made through this gateway)
the policies are re-read and applied to the routing table: a route's ``split`` is set or
cleared, the shadow targets and the active rollouts are replaced. Requests read these without a
lock or an await: each is one attribute or one dict replaced as a whole.

A split is rebuilt only when its policy's revision (or the set of its pools this gateway knows)
changed, so a sync with nothing new costs two small queries. Policies naming a model or pool
this gateway does not serve are skipped with a warning, logged once per revision: gateways may
serve different subsets of the models, and local pools join the routing table as they start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Set
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.background import Periodic
from tidegate.errors import ModelNotFoundError
from tidegate.rollout.metrics import RolloutMetrics
from tidegate.routing.replicas import RoutingTable
from tidegate.routing.rules import Route
from tidegate.routing.split import StickyBy, TrafficSplit
from tidegate.store.db import transaction
from tidegate.store.models import Rollout, TrafficPolicy

log = logging.getLogger(__name__)

ACTIVE_STATES = ("running", "paused")
"""Rollout states the request path follows (statistics, shadow capture)."""


@dataclass(frozen=True, slots=True)
class ShadowTarget:
    pool: str
    sample: float
    """The share of requests mirrored, 0 to 1."""


@dataclass(frozen=True, slots=True)
class ActiveRollout:
    """A running or paused rollout, as the request path needs it."""

    id: str
    model: str
    step_index: int
    stable_pool: str
    candidate_pool: str
    running: bool


@dataclass(frozen=True, slots=True)
class _Applied:
    """What was last applied to a model's route: re-applied only when this changes."""

    revision: int
    pools: tuple[str, ...]
    """The policy's pools this gateway knew then."""


class PolicySync:
    """Follows the store's traffic policies and active rollouts in this gateway."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        routing: RoutingTable,
        interval_s: float,
        metrics: RolloutMetrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._routing = routing
        self._metrics = metrics
        self._watched: frozenset[str] = frozenset()
        self._shadows: dict[str, ShadowTarget] = {}
        self._rollouts: dict[str, ActiveRollout] = {}
        self._applied: dict[str, _Applied] = {}
        self._shown: dict[str, tuple[str, ...]] = {}
        """Model → the pools it has traffic_share series for."""
        self._warned: set[tuple[str, int, str]] = set()
        self._lock = asyncio.Lock()
        self._periodic = Periodic(
            name="traffic-policy-sync", interval_s=interval_s, step=self.sync_now
        )

    @property
    def watched(self) -> Set[str]:
        """Models with a shadow target or an active rollout."""
        return self._watched

    @property
    def running(self) -> bool:
        """The background sync is alive."""
        return self._periodic.running

    def shadow_for(self, model: str) -> ShadowTarget | None:
        return self._shadows.get(model)

    def rollout_for(self, model: str) -> ActiveRollout | None:
        return self._rollouts.get(model)

    async def sync_now(self) -> None:
        """Read the policies and rollouts and apply them. Raises StoreError when the store
        fails; the last applied state then stays."""
        async with self._lock:  # the loop and an admin change may ask at once
            async with transaction(self._sessions, "read the traffic policies") as session:
                policies = list(await session.scalars(select(TrafficPolicy)))
                rollouts = list(
                    await session.scalars(
                        select(Rollout)
                        .where(Rollout.state.in_(ACTIVE_STATES))
                        .order_by(Rollout.created_at)
                    )
                )
            self._apply_splits(policies)
            shadows = self._shadow_targets(policies)
            # Newest last, so a (never expected) second active rollout of a model wins.
            active = {row.model: active_rollout(row) for row in rollouts}
            self._shadows = shadows
            self._rollouts = active
            self._watched = frozenset(shadows) | frozenset(active)

    async def start(self) -> None:
        await self.sync_now()
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def _apply_splits(self, policies: list[TrafficPolicy]) -> None:
        wanted = {policy.model: policy for policy in policies if policy.weights}
        for model in [model for model in self._applied if model not in wanted]:
            self._clear(model)
        for model, policy in wanted.items():
            route = self._route(model, policy.revision)
            if route is not None:
                self._apply(route, policy)

    def _route(self, model: str, revision: int) -> Route | None:
        try:
            return self._routing.route(model)
        except ModelNotFoundError:
            self._warn_once(model, revision, "skipped, no route for this model here")
            return None

    def _apply(self, route: Route, policy: TrafficPolicy) -> None:
        known = {pool.name for pool in self._routing.pools()}
        weights = [(str(pool), float(weight)) for pool, weight in policy.weights]
        usable = tuple((pool, weight) for pool, weight in weights if pool in known)
        applied = _Applied(policy.revision, tuple(pool for pool, _ in usable))
        if self._applied.get(route.model) == applied:
            return
        if len(usable) < len(weights):
            unknown = sorted({pool for pool, _ in weights if pool not in known})
            self._warn_once(
                route.model, policy.revision, f"ignoring unknown pools {', '.join(unknown)}"
            )
        try:
            split = TrafficSplit(weights=usable, sticky_by=_sticky(policy.sticky_by))
        except ValueError:
            self._warn_once(
                route.model, policy.revision, "no split, no known pool has a weight > 0"
            )
            route.apply_split(None)
            self._show(route.model, None)
        else:
            route.apply_split(split)
            self._show(route.model, split)
        self._applied[route.model] = applied
        log.info("traffic split of %s: %s (revision %d)", route.model, usable, policy.revision)

    def _clear(self, model: str) -> None:
        del self._applied[model]
        with contextlib.suppress(ModelNotFoundError):
            self._routing.route(model).apply_split(None)
        self._show(model, None)
        log.info("traffic split of %s removed", model)

    def _show(self, model: str, split: TrafficSplit | None) -> None:
        """The traffic_share gauge: the split's shares; no series for a model without one."""
        if self._metrics is None:
            return
        gauge = self._metrics.traffic_share
        pools = tuple(pool for pool, _ in split.weights) if split is not None else ()
        for pool in self._shown.pop(model, ()):
            if pool not in pools:
                gauge.remove(model, pool)
        if split is not None:
            for pool in pools:
                gauge.labels(model=model, pool=pool).set(split.share(pool))
            self._shown[model] = pools

    def _shadow_targets(self, policies: list[TrafficPolicy]) -> dict[str, ShadowTarget]:
        known = {pool.name for pool in self._routing.pools()}
        served = set(self._routing.models())
        targets: dict[str, ShadowTarget] = {}
        for policy in policies:
            pool = policy.shadow_pool
            if pool is None or policy.shadow_sample <= 0 or policy.model not in served:
                continue
            if pool not in known:
                self._warn_once(policy.model, policy.revision, f"no shadow, unknown pool {pool}")
                continue
            targets[policy.model] = ShadowTarget(pool, min(float(policy.shadow_sample), 1.0))
        return targets

    def _warn_once(self, model: str, revision: int, problem: str) -> None:
        if (model, revision, problem) not in self._warned:
            self._warned.add((model, revision, problem))
            log.warning("traffic policy of %s (revision %d): %s", model, revision, problem)


def _sticky(value: str) -> StickyBy:
    return "tenant" if value == "tenant" else "session"


def active_rollout(row: Rollout) -> ActiveRollout:
    return ActiveRollout(
        id=row.id,
        model=row.model,
        step_index=row.step_index,
        stable_pool=row.stable_pool,
        candidate_pool=row.candidate_pool,
        running=row.state == "running",
    )
