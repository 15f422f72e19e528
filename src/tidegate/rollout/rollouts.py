"""Rollout lifecycle operations for operators (admin API and CLI): start, read, pause, resume,
abort, promote, report. The controller (``rollout.controller``) makes the automatic moves.

Every change is a transition of ``rollout.transitions`` (conditional on the state read, with a
history entry, the new split and an audit event in one transaction). After a change made
through a gateway, its ``PolicySync`` applies it at once; the others within
``rollouts.sync_interval_s``.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.errors import InvalidRequestError
from tidegate.rollout.gates import GateResult, Gates
from tidegate.rollout.metrics import RolloutState
from tidegate.rollout.report import ReportFormat, render_report
from tidegate.rollout.shadow_reports import PairSummary, ShadowReports
from tidegate.rollout.split_writes import write_split
from tidegate.rollout.stats import step_totals
from tidegate.rollout.sync import PolicySync
from tidegate.rollout.transitions import (
    ACTIVE_STATES,
    Move,
    RolloutInfo,
    apply,
    judge,
    locked,
    not_found,
)
from tidegate.routing.replicas import RoutingTable
from tidegate.store.db import transaction
from tidegate.store.errors import StoreError
from tidegate.store.models import Rollout, TrafficPolicy
from tidegate.tenancy import audit
from tidegate.tenancy.actors import Actor

log = logging.getLogger(__name__)

Operation = Literal["pause", "resume", "abort", "promote"]
OPERATIONS: tuple[Operation, ...] = ("pause", "resume", "abort", "promote")


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    rollout: RolloutInfo
    gate: GateResult | None
    """The current step's gates on the figures so far (None once the rollout is over)."""


def check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    """Increasing candidate shares in (0, 100], ending at 100, with one below 100 at least (the
    last step's baseline is the stable pool's figures of the earlier steps)."""
    values = tuple(float(step) for step in steps)
    if not values or values[-1] != 100:
        raise InvalidRequestError(
            "steps must end at 100 (the candidate's share in percent at each step, e.g. 5,25,100).",
            param="steps",
        )
    if len(values) < 2:
        raise InvalidRequestError(
            "steps need a step below 100 first: its stable-pool figures are the last step's "
            "baseline. To switch all traffic at once, set the traffic split instead.",
            param="steps",
        )
    if any(not 0 < value <= 100 for value in values) or any(
        later <= earlier for earlier, later in zip(values, values[1:], strict=False)
    ):
        raise InvalidRequestError(
            f"steps must increase strictly within (0, 100] (got {', '.join(map(_pct, values))}).",
            param="steps",
        )
    return values


def _pct(value: float) -> str:
    return f"{value:g}"


class RolloutService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        routing: RoutingTable | None,
        sync: PolicySync | None,
        shadow_reports: ShadowReports | None = None,
    ) -> None:
        """``routing``: pool names are checked against it (None: not checked); ``sync``: this
        gateway's policy copy, refreshed after each change."""
        self._sessions = sessions
        self._routing = routing
        self._sync = sync
        self._shadow_reports = shadow_reports

    async def start(
        self,
        *,
        model: str,
        candidate_pool: str,
        steps: Sequence[float],
        hold_s: float,
        gates: Gates | Mapping[str, Any] | None,
        actor: Actor,
    ) -> RolloutInfo:
        shares = check_steps(steps)
        if not hold_s > 0:
            raise InvalidRequestError("hold_s must be more than 0 seconds.", param="hold_s")
        checked = gates if isinstance(gates, Gates) else Gates.from_mapping(gates)
        self._check_pools(model, candidate_pool)
        now = datetime.now(UTC)
        async with transaction(self._sessions, "start a rollout") as session:
            stable = await self._stable_pool(session, model)
            if stable == candidate_pool:
                raise InvalidRequestError(
                    f"Pool '{candidate_pool}' is already the stable pool of '{model}'; the "
                    "candidate must be another pool.",
                    param="candidate_pool",
                )
            self._check_pool(stable, "stable_pool")
            await self._refuse_second(session, model)
            row = Rollout(
                id="ro_" + secrets.token_hex(12),
                model=model,
                stable_pool=stable,
                candidate_pool=candidate_pool,
                steps=list(shares),
                hold_s=float(hold_s),
                gates=checked.to_dict(),
                state="running",
                step_index=0,
                step_started_at=now,
                history=[_started(now, shares[0], actor)],
                created_at=now,
                created_by=actor.name,
                updated_at=now,
            )
            session.add(row)
            await write_split(
                session,
                model=model,
                stable_pool=stable,
                weights=[(candidate_pool, shares[0]), (stable, 100.0 - shares[0])],
                actor=actor,
                action="rollout.started",
                details={
                    "rollout_id": row.id,
                    "candidate_pool": candidate_pool,
                    "steps": list(shares),
                    "hold_s": float(hold_s),
                    "gates": checked.to_dict(),
                },
            )
            info = RolloutInfo.of(row)
        await self._synced()
        return info

    async def get(self, rollout_id: str) -> RolloutStatus:
        async with transaction(self._sessions, "read a rollout") as session:
            row = await session.get(Rollout, rollout_id)
            if row is None:
                raise not_found(rollout_id)
            info = RolloutInfo.of(row)
            gate = None
            if info.state in ACTIVE_STATES:
                gate = judge(info, await step_totals(session, info.id))
            return RolloutStatus(info, gate)

    async def latest(self, model: str) -> RolloutStatus:
        """The model's newest rollout."""
        async with transaction(self._sessions, "read a rollout") as session:
            rollout_id = await session.scalar(
                select(Rollout.id)
                .where(Rollout.model == model)
                .order_by(Rollout.created_at.desc())
                .limit(1)
            )
        if rollout_id is None:
            raise InvalidRequestError(f"Model '{model}' has no rollout.", param="model")
        return await self.get(rollout_id)

    async def list(
        self, *, model: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[RolloutInfo]:
        """Newest first."""
        query = select(Rollout).order_by(Rollout.created_at.desc()).limit(limit)
        if model is not None:
            query = query.where(Rollout.model == model)
        if state is not None:
            query = query.where(Rollout.state == state)
        async with transaction(self._sessions, "list rollouts") as session:
            return [RolloutInfo.of(row) for row in await session.scalars(query)]

    async def pause(self, rollout_id: str, *, actor: Actor) -> RolloutInfo:
        """Hold the rollout where it is: the split stays, the hold timer stops."""
        return await self.operate(rollout_id, "pause", actor=actor)

    async def resume(self, rollout_id: str, *, actor: Actor) -> RolloutInfo:
        """Go on from the current step; its hold time starts again."""
        return await self.operate(rollout_id, "resume", actor=actor)

    async def abort(self, rollout_id: str, *, actor: Actor) -> RolloutInfo:
        """End it and send all traffic to the stable pool."""
        return await self.operate(rollout_id, "abort", actor=actor)

    async def promote(self, rollout_id: str, *, actor: Actor) -> RolloutInfo:
        """End it now: all traffic to the candidate, which becomes the stable pool."""
        return await self.operate(rollout_id, "promote", actor=actor)

    async def report(self, rollout_id: str, *, format: ReportFormat = "md") -> str:
        async with transaction(self._sessions, "read a rollout") as session:
            row = await session.get(Rollout, rollout_id)
            if row is None:
                raise not_found(rollout_id)
            info = RolloutInfo.of(row)
            totals = await step_totals(session, rollout_id)
        shadow = await self._shadow_summary(info.model)
        return render_report(info, totals, format=format, shadow=shadow)

    async def operate(self, rollout_id: str, operation: Operation, *, actor: Actor) -> RolloutInfo:
        """One of the operator's moves (see the methods of the same names)."""
        async with transaction(self._sessions, f"{operation} a rollout") as session:
            row = await locked(session, rollout_id)
            info = await apply(session, row, _move(operation, row.state, actor), actor=actor)
        await self._synced()
        return info

    def _check_pools(self, model: str, candidate_pool: str) -> None:
        if self._routing is None:
            return
        self._routing.route(model)  # ModelNotFoundError for a model nothing serves
        self._check_pool(candidate_pool, "candidate_pool")

    def _check_pool(self, pool: str, param: str) -> None:
        if self._routing is None:
            return
        try:
            self._routing.pool(pool)
        except KeyError:
            known = ", ".join(sorted(p.name for p in self._routing.pools())) or "none"
            raise InvalidRequestError(
                f"No pool named '{pool}' on this gateway. Pools: {known}.", param=param
            ) from None

    async def _stable_pool(self, session: AsyncSession, model: str) -> str:
        policy = await session.get(TrafficPolicy, model)
        if policy is not None and policy.stable_pool:
            return policy.stable_pool
        if self._routing is None:
            raise InvalidRequestError(
                f"Model '{model}' has no traffic policy naming its stable pool.", param="model"
            )
        return self._routing.route(model).pools[0]

    async def _refuse_second(self, session: AsyncSession, model: str) -> None:
        active = await session.scalar(
            select(Rollout.id).where(Rollout.model == model, Rollout.state.in_(ACTIVE_STATES))
        )
        if active is not None:
            raise InvalidRequestError(
                f"Model '{model}' already has an active rollout ({active}); pause, abort or "
                "promote it first.",
                param="model",
                code="rollout_active",
            )

    async def _synced(self) -> None:
        if self._sync is None:
            return
        try:
            await self._sync.sync_now()
        except StoreError as error:  # committed already: the periodic sync applies it
            log.warning("rollout change not applied at once: %s", error.message)

    async def _shadow_summary(self, model: str) -> builtins.list[PairSummary] | None:
        if self._shadow_reports is None:
            return None
        return await self._shadow_reports.summary(model)


_ALLOWED: dict[Operation, tuple[RolloutState, ...]] = {
    "pause": ("running",),
    "resume": ("paused",),
    "abort": ACTIVE_STATES,
    "promote": ACTIVE_STATES,
}
_MOVES: dict[Operation, tuple[RolloutState, audit.Action, bool]] = {
    "pause": ("paused", "rollout.paused", False),
    "resume": ("running", "rollout.resumed", False),
    "abort": ("aborted", "rollout.aborted", True),
    "promote": ("promoted", "rollout.promoted", True),
}


def _move(operation: Operation, state: str, actor: Actor) -> Move:
    allowed = _ALLOWED[operation]
    if state not in allowed:
        raise InvalidRequestError(
            f"Cannot {operation} a rollout that is {state}; only a {' or '.join(allowed)} one.",
            code="rollout_state",
        )
    to, action, split = _MOVES[operation]
    return Move(
        to=to,
        action=action,
        reason=f"{operation} by {actor.name}",
        split=split,
    )


def _started(now: datetime, share: float, actor: Actor) -> dict[str, Any]:
    return {
        "at": now.isoformat(),
        "from": None,
        "to": "running",
        "step": 0,
        "share": share,
        "reason": f"started by {actor.name}",
        "actor": actor.name,
    }
