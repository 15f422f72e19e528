"""Traffic policies in the store: a model's weighted split, its stable pool and its shadow.

``TrafficPolicies`` is what operators use (admin API, CLI): it checks names against the routing
table, refuses a manual split while a rollout owns it, and rolls back in one call: everything to
the stable pool and the model's active rollout ended, applied in this gateway at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.errors import InvalidRequestError, TidegateError
from tidegate.rollout.split_writes import write_split
from tidegate.rollout.sync import ACTIVE_STATES, ActiveRollout, PolicySync, active_rollout
from tidegate.rollout.traffic_checks import (
    check_pool,
    check_sample,
    check_sticky,
    check_weights,
    operator_only,
)
from tidegate.rollout.transitions import Move, apply
from tidegate.routing.replicas import RoutingTable
from tidegate.routing.split import StickyBy
from tidegate.store.db import transaction
from tidegate.store.models import SYSTEM_TENANT_ID, Rollout, TrafficPolicy
from tidegate.tenancy import audit
from tidegate.tenancy.actors import Actor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrafficInfo:
    """A model's traffic policy as the admin API and CLI show it (defaults when it has none)."""

    model: str
    stable_pool: str
    weights: tuple[tuple[str, float], ...]
    """Empty: no split, the route's own chain serves."""
    sticky_by: StickyBy
    shadow_pool: str | None
    shadow_sample: float
    revision: int
    """0: no policy stored yet."""
    updated_at: datetime | None
    updated_by: str | None
    rollout: ActiveRollout | None
    """The model's running or paused rollout, which owns the split while it lasts."""

    def shares(self) -> dict[str, float]:
        """Each pool's share of the traffic, 0 to 1 (empty without a split)."""
        total = sum(weight for _, weight in self.weights if weight > 0)
        if total <= 0:
            return {}
        return {pool: max(weight, 0.0) / total for pool, weight in self.weights}


@dataclass(frozen=True, slots=True)
class SplitChange:
    weights: tuple[tuple[str, float], ...]
    """(pool, weight) in order: the first pool takes the low end of the sticky hash space."""
    sticky_by: str | None = None
    """None: keep the policy's (session for a new one)."""
    stable_pool: str | None = None
    """None: keep the policy's (the route's first pool for a new one)."""


@dataclass(frozen=True, slots=True)
class ShadowChange:
    pool: str | None
    """None: mirror nothing."""
    sample: float = 0.0


@dataclass(frozen=True, slots=True)
class RollbackResult:
    traffic: TrafficInfo
    rolled_back: tuple[str, ...]
    """Ids of the rollouts the rollback ended."""


class TrafficPolicies:
    """Reads and changes traffic policies for the admin API and the CLI (operators only).

    ``routing`` checks model and pool names (the CLI builds one from the config); ``sync``, when
    given, applies a change in this gateway as soon as it commits.
    """

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        routing: RoutingTable | None,
        sync: PolicySync | None,
    ) -> None:
        self._sessions = sessions
        self._routing = routing
        self._sync = sync

    async def get(self, model: str) -> TrafficInfo:
        default_stable = self._default_stable(model)
        async with transaction(self._sessions, "read a traffic policy") as session:
            policy = await session.get(TrafficPolicy, model)
            return await _info(session, model, policy, default_stable)

    async def list(self) -> list[TrafficInfo]:
        """Every stored policy, by model name."""
        async with transaction(self._sessions, "read the traffic policies") as session:
            policies = await session.scalars(select(TrafficPolicy).order_by(TrafficPolicy.model))
            active = {
                row.model: active_rollout(row)
                for row in await session.scalars(
                    select(Rollout)
                    .where(Rollout.state.in_(ACTIVE_STATES))
                    .order_by(Rollout.created_at)
                )
            }
            return [_to_info(p.model, p, p.stable_pool, active.get(p.model)) for p in policies]

    async def set_split(
        self,
        model: str,
        weights: Sequence[tuple[str, float]],
        sticky_by: str | None = None,
        stable_pool: str | None = None,
        *,
        actor: Actor,
    ) -> TrafficInfo:
        change = SplitChange(tuple(weights), sticky_by, stable_pool)
        return await self.update(model, split=change, actor=actor)

    async def set_shadow(
        self, model: str, pool: str | None, sample: float = 0.0, *, actor: Actor
    ) -> TrafficInfo:
        return await self.update(model, shadow=ShadowChange(pool, sample), actor=actor)

    async def update(
        self,
        model: str,
        *,
        actor: Actor,
        split: SplitChange | None = None,
        shadow: ShadowChange | None = None,
    ) -> TrafficInfo:
        """Change the split, the shadow or both in one transaction (one audit row each)."""
        operator_only(actor)
        if split is None and shadow is None:
            raise InvalidRequestError("Nothing to change: send weights, shadow or both.")
        default_stable = self._default_stable(model)
        known = self._known_pools()
        if split is not None:
            split = _checked_split(split, known)
        if shadow is not None:
            shadow = _checked_shadow(shadow, known)
        async with transaction(self._sessions, "change a traffic policy") as session:
            policy = await session.get(TrafficPolicy, model, with_for_update=True)
            if split is not None:
                policy = await _write_split(session, model, policy, split, default_stable, actor)
            if shadow is not None:
                policy = _write_shadow(session, model, policy, shadow, default_stable, actor)
            info = await _info(session, model, policy, default_stable)
        await self._refresh()
        return info

    async def rollback(self, model: str, *, actor: Actor) -> RollbackResult:
        """All traffic to the stable pool at once; a running or paused rollout of the model
        ends as rolled_back."""
        operator_only(actor)
        default_stable = self._default_stable(model)
        async with transaction(self._sessions, "roll back a model's traffic") as session:
            current = await session.get(TrafficPolicy, model, with_for_update=True)
            stable = current.stable_pool if current is not None else default_stable
            if stable is None:
                raise InvalidRequestError(
                    f"The model '{model}' has no traffic policy, so there is no stable pool to "
                    "roll back to.",
                    param="model",
                )
            ended = await _end_rollouts(session, model, actor)
            policy = await write_split(
                session,
                model=model,
                stable_pool=stable,
                weights=[(stable, 100.0)],
                actor=actor,
                action="traffic.rolled_back",
                details={"rollouts": list(ended)},
            )
            info = await _info(session, model, policy, stable)
        await self._refresh()
        return RollbackResult(info, ended)

    def _default_stable(self, model: str) -> str | None:
        """The route's first pool; ModelNotFoundError for a model the routing table lacks."""
        if self._routing is None:
            return None
        return self._routing.route(model).pools[0]

    def _known_pools(self) -> Sequence[str] | None:
        if self._routing is None:
            return None
        return sorted(pool.name for pool in self._routing.pools())

    async def _refresh(self) -> None:
        if self._sync is None:
            return
        try:
            await self._sync.sync_now()
        except TidegateError as exc:  # committed: the sync loop applies it within its interval
            log.warning("applying a traffic change at once failed: %s", exc)


def _checked_split(split: SplitChange, known: Sequence[str] | None) -> SplitChange:
    return SplitChange(
        weights=check_weights(split.weights, known),
        sticky_by=None if split.sticky_by is None else check_sticky(split.sticky_by),
        stable_pool=(
            None
            if split.stable_pool is None
            else check_pool(split.stable_pool, known, param="stable_pool")
        ),
    )


def _checked_shadow(shadow: ShadowChange, known: Sequence[str] | None) -> ShadowChange:
    if shadow.pool is None:
        return ShadowChange(None, 0.0)
    return ShadowChange(
        check_pool(shadow.pool, known, param="shadow.pool"), check_sample(shadow.sample)
    )


async def _write_split(
    session: AsyncSession,
    model: str,
    current: TrafficPolicy | None,
    split: SplitChange,
    default_stable: str | None,
    actor: Actor,
) -> TrafficPolicy:
    running = await _active_rollout(session, model)
    if running is not None:
        raise InvalidRequestError(
            f"Rollout {running.id} of '{model}' is {running.state} and sets the split itself. "
            f"Promote or abort it first (`tidegate rollout abort {running.id}`), or roll back.",
            param="weights",
        )
    stable = split.stable_pool or (current.stable_pool if current else default_stable)
    sticky = split.sticky_by or (current.sticky_by if current else "session")
    policy = await write_split(
        session,
        model=model,
        # Without a routing table (no config at hand) the heaviest pool is the best guess.
        stable_pool=stable or max(split.weights, key=lambda item: item[1])[0],
        weights=list(split.weights),
        actor=actor,
        details={"sticky_by": sticky},
    )
    policy.sticky_by = sticky
    return policy


def _write_shadow(
    session: AsyncSession,
    model: str,
    policy: TrafficPolicy | None,
    shadow: ShadowChange,
    default_stable: str | None,
    actor: Actor,
) -> TrafficPolicy:
    now = datetime.now(UTC)
    if policy is None:
        if default_stable is None:
            raise InvalidRequestError(
                f"The model '{model}' has no traffic policy yet; set a split first.",
                param="model",
            )
        policy = TrafficPolicy(
            model=model, stable_pool=default_stable, weights=[], sticky_by="session", revision=0
        )
        session.add(policy)
    policy.shadow_pool = shadow.pool
    policy.shadow_sample = shadow.sample
    policy.revision = (policy.revision or 0) + 1
    policy.updated_at = now
    policy.updated_by = actor.name
    audit.record(
        session,
        actor=actor,
        action="traffic.shadow_changed",
        tenant_id=SYSTEM_TENANT_ID,
        target_type="model",
        target_id=model,
        details={"shadow_pool": shadow.pool, "shadow_sample": shadow.sample},
    )
    return policy


async def _active_rollout(session: AsyncSession, model: str) -> Rollout | None:
    query = (
        select(Rollout)
        .where(Rollout.model == model, Rollout.state.in_(ACTIVE_STATES))
        .order_by(Rollout.created_at.desc())
        .limit(1)
    )
    row: Rollout | None = await session.scalar(query)
    return row


async def _end_rollouts(session: AsyncSession, model: str, actor: Actor) -> tuple[str, ...]:
    """End the model's running or paused rollouts as rolled_back (the caller writes the split);
    one the controller moved meanwhile is left as it is."""
    rows = await session.scalars(
        select(Rollout).where(Rollout.model == model, Rollout.state.in_(ACTIVE_STATES))
    )
    move = Move(
        to="rolled_back",
        action="rollout.rolled_back",
        reason=f"rolled back by {actor.name}",
        split=False,
    )
    ended: list[str] = []
    for row in list(rows):
        try:
            await apply(session, row, move, actor=actor)
        except InvalidRequestError:
            continue  # it changed meanwhile (the controller's transition wins)
        ended.append(row.id)
    return tuple(ended)


async def _info(
    session: AsyncSession, model: str, policy: TrafficPolicy | None, default_stable: str | None
) -> TrafficInfo:
    row = await _active_rollout(session, model)
    rollout = None if row is None else active_rollout(row)
    return _to_info(model, policy, default_stable or "", rollout)


def _to_info(
    model: str, policy: TrafficPolicy | None, default_stable: str, rollout: ActiveRollout | None
) -> TrafficInfo:
    if policy is None:
        return TrafficInfo(model, default_stable, (), "session", None, 0.0, 0, None, None, rollout)
    return TrafficInfo(
        model=model,
        stable_pool=policy.stable_pool,
        weights=tuple((str(pool), float(weight)) for pool, weight in policy.weights or ()),
        sticky_by="tenant" if policy.sticky_by == "tenant" else "session",
        shadow_pool=policy.shadow_pool,
        shadow_sample=float(policy.shadow_sample or 0.0),
        revision=policy.revision,
        updated_at=policy.updated_at,
        updated_by=policy.updated_by,
        rollout=rollout,
    )
