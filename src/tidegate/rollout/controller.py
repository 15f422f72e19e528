"""The staged rollout controller. Every gateway runs one; the one holding the store lease
``rollout-controller`` drives the running rollouts, the others stand by and take over once the
lease runs out (``rollouts.lock_ttl_s`` after its holder stopped renewing it).

Every ``controller_interval_s`` the driver judges each running rollout's current step on the
statistics all gateways have written (``rollout.stats``) with its gates (``rollout.gates``):

- a failing gate rolls the rollout back at once: all traffic to the stable pool, the gate and
  its figures as the reason;
- once the gates pass **and** the step's hold time has passed since it started, the rollout
  moves to the next step, or after the last one is promoted (the candidate becomes the stable
  pool);
- otherwise it holds; in particular a step advances only once each pool has ``min_samples``
  requests, however long that takes.

All state is in the store, so a restarted or replaced gateway carries on where the rollout
was. Store failures are logged and retried on the next tick. Every gateway (driving or not)
keeps the rollout gauges current from the store.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.background import Periodic
from tidegate.rollout import lease
from tidegate.rollout.gates import GateResult
from tidegate.rollout.metrics import ROLLOUT_STATES, RolloutMetrics
from tidegate.rollout.stats import step_totals
from tidegate.rollout.sync import PolicySync
from tidegate.rollout.transitions import ACTIVE_STATES, Move, RolloutInfo, apply, judge, locked
from tidegate.store.db import transaction
from tidegate.store.errors import StoreError
from tidegate.store.models import Rollout
from tidegate.tenancy.actors import Actor

log = logging.getLogger(__name__)

LEASE_NAME = "rollout-controller"
_GAUGE_ROWS = 1000
ACTOR = Actor.internal("rollout-controller")


def next_move(info: RolloutInfo, result: GateResult, now: datetime) -> Move | None:
    """What the controller does with a running rollout now; None: hold. Pure."""
    if result.verdict == "fail":
        return Move(
            to="rolled_back",
            action="rollout.rolled_back",
            reason=f"gate {result.gate} failed at step {info.step_index + 1}: {result.reason}",
            figures=dict(result.figures),
        )
    held_s = (now - info.step_started_at).total_seconds()
    if result.verdict != "pass" or held_s < info.hold_s:
        return None
    if info.last_step:
        return Move(
            to="promoted",
            action="rollout.promoted",
            reason=f"all {len(info.steps)} steps passed their gates",
            figures=dict(result.figures),
        )
    return Move(
        to="running",
        action="rollout.advanced",
        reason=f"step {info.step_index + 1} passed its gates for {info.hold_s:g} s",
        step_index=info.step_index + 1,
        figures=dict(result.figures),
    )


@dataclass(frozen=True, slots=True)
class Transition:
    rollout_id: str
    model: str
    to: str
    step_index: int


class RolloutController:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        sync: PolicySync,
        metrics: RolloutMetrics,
        gateway_id: str,
        interval_s: float,
        lock_ttl_s: float,
    ) -> None:
        self._sessions = sessions
        self._sync = sync
        self._metrics = metrics
        self._gateway_id = gateway_id
        self._lock_ttl_s = lock_ttl_s
        self._driving = False
        self._periodic = Periodic(name="rollout-controller", interval_s=interval_s, step=self.tick)

    @property
    def driving(self) -> bool:
        """This gateway holds the controller lease."""
        return self._driving

    async def tick(self) -> list[Transition]:
        """One round: take or renew the lease; if held, judge and move the running rollouts;
        refresh the gauges. Returns the transitions made."""
        self._driving = False  # until the store says otherwise
        self._driving = await lease.acquire(
            self._sessions, LEASE_NAME, holder=self._gateway_id, ttl_s=self._lock_ttl_s
        )
        made: list[Transition] = []
        if self._driving:
            for rollout_id in await self._running():
                transition = await self._drive(rollout_id)
                if transition is not None:
                    made.append(transition)
                    self._metrics.rollout_transitions.labels(transition.model, transition.to).inc()
        if made:
            await self._sync.sync_now()  # this gateway follows its own moves at once
        await self._refresh_gauges()
        return made

    async def _running(self) -> list[str]:
        async with transaction(self._sessions, "list running rollouts") as session:
            ids = await session.scalars(
                select(Rollout.id).where(Rollout.state == "running").order_by(Rollout.created_at)
            )
            return list(ids)

    async def _drive(self, rollout_id: str) -> Transition | None:
        async with transaction(self._sessions, "advance a rollout") as session:
            row = await locked(session, rollout_id)
            if row.state != "running":
                return None  # an operator moved it meanwhile
            info = RolloutInfo.of(row)
            result = judge(info, await step_totals(session, rollout_id))
            move = next_move(info, result, datetime.now(UTC))
            if move is None:
                return None
            moved = await apply(session, row, move, actor=ACTOR)
        log.info("rollout %s of %s: %s (%s)", info.id, info.model, moved.state, move.reason)
        return Transition(info.id, info.model, moved.state, moved.step_index)

    async def _refresh_gauges(self) -> None:
        async with transaction(self._sessions, "read rollout states") as session:
            rows = (
                await session.execute(
                    select(Rollout.model, Rollout.state, Rollout.step_index)
                    .order_by(Rollout.created_at.desc())
                    .limit(_GAUGE_ROWS)  # the newest are enough, however long the history
                )
            ).all()
        latest: dict[str, tuple[str, int]] = {}
        for row in rows:
            latest.setdefault(row.model, (row.state, row.step_index))  # newest first
        for model, (state, step_index) in latest.items():
            active = state in ACTIVE_STATES
            self._metrics.rollout_step.labels(model).set(step_index if active else -1)
            for name in ROLLOUT_STATES:
                self._metrics.rollout_state.labels(model, name).set(1 if name == state else 0)

    async def start(self) -> None:
        self._periodic.start()
        self._periodic.wake()  # the first round at once: a restarted gateway resumes

    async def stop(self) -> None:
        await self._periodic.stop()
        if self._driving:
            self._driving = False
            with contextlib.suppress(StoreError):  # else the lease simply runs out
                await lease.release(self._sessions, LEASE_NAME, holder=self._gateway_id)
