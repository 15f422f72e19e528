"""Where a rollout stands, how its current step is judged, and the one way its state changes.

A transition happens in the caller's transaction on a row read with :func:`locked` (``SELECT
... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already admits one writer), and
is itself an UPDATE conditional on the state and step read, so the controller and an operator
acting at the same moment cannot both move the rollout. The split follows in the same
transaction through ``policies.write_split``, which also writes the audit event.

States: running ⇄ paused; running → running (next step); running | paused → promoted,
rolled_back (the controller, a failed gate) or aborted (an operator).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidegate.errors import InvalidRequestError, NotFoundError
from tidegate.rollout.gates import GateResult, Gates, evaluate
from tidegate.rollout.metrics import RolloutState
from tidegate.rollout.split_writes import write_split
from tidegate.rollout.stats import PoolTotals
from tidegate.store.models import SYSTEM_TENANT_ID, Rollout
from tidegate.tenancy import audit
from tidegate.tenancy.actors import Actor

ACTIVE_STATES: tuple[RolloutState, ...] = ("running", "paused")
FINAL_STATES: tuple[RolloutState, ...] = ("promoted", "rolled_back", "aborted")


@dataclass(frozen=True, slots=True)
class RolloutInfo:
    id: str
    model: str
    stable_pool: str
    candidate_pool: str
    steps: tuple[float, ...]
    hold_s: float
    gates: Gates
    state: str
    step_index: int
    step_started_at: datetime
    reason: str | None
    history: tuple[dict[str, Any], ...]
    created_at: datetime
    created_by: str
    updated_at: datetime
    finished_at: datetime | None

    @property
    def share(self) -> float:
        """The candidate's share (percent) at the current step."""
        return self.steps[self.step_index]

    @property
    def last_step(self) -> bool:
        return self.step_index == len(self.steps) - 1

    @classmethod
    def of(cls, row: Rollout) -> RolloutInfo:
        return cls(
            id=row.id,
            model=row.model,
            stable_pool=row.stable_pool,
            candidate_pool=row.candidate_pool,
            steps=tuple(float(step) for step in row.steps),
            hold_s=row.hold_s,
            gates=Gates.from_mapping(row.gates),
            state=row.state,
            step_index=row.step_index,
            step_started_at=row.step_started_at,
            reason=row.reason,
            history=tuple(row.history or ()),
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
        )


def not_found(rollout_id: str) -> NotFoundError:
    return NotFoundError(f"No rollout with id '{rollout_id}'.", param="rollout_id")


async def locked(session: AsyncSession, rollout_id: str) -> Rollout:
    row = await session.scalar(select(Rollout).where(Rollout.id == rollout_id).with_for_update())
    if row is None:
        raise not_found(rollout_id)
    return row


def baseline(info: RolloutInfo, totals: dict[tuple[int, str], PoolTotals]) -> PoolTotals:
    """The stable side of the current step: its own figures, or, at a step that leaves the
    stable pool no traffic (100%), the stable pool's figures over every step so far."""
    if info.share < 100:
        return totals.get((info.step_index, info.stable_pool), PoolTotals())
    return PoolTotals.summed(
        part
        for (step, pool), part in totals.items()
        if pool == info.stable_pool and step <= info.step_index
    )


def judge(info: RolloutInfo, totals: dict[tuple[int, str], PoolTotals]) -> GateResult:
    """The current step's gates on the summed statistics of every gateway."""
    candidate = totals.get((info.step_index, info.candidate_pool), PoolTotals())
    return evaluate(info.gates, baseline(info, totals), candidate)


def weights_for(info: RolloutInfo, to: RolloutState, step_index: int) -> list[tuple[str, float]]:
    """The split a state puts in place (candidate first, so raising its share keeps sessions
    that landed on it there)."""
    if to == "promoted":
        return [(info.candidate_pool, 100.0)]
    if to in ("rolled_back", "aborted"):
        return [(info.stable_pool, 100.0)]
    share = info.steps[step_index]
    return [(info.candidate_pool, share), (info.stable_pool, 100.0 - share)]


@dataclass(frozen=True, slots=True)
class Move:
    to: RolloutState
    action: audit.Action
    reason: str
    step_index: int | None = None
    """The new step (advancing); None keeps the current one."""
    figures: dict[str, Any] | None = None
    """The step's gate figures, kept in the history entry."""
    split: bool = True
    """Write the split for the new state (pause and resume leave it where it is)."""


async def apply(session: AsyncSession, row: Rollout, move: Move, *, actor: Actor) -> RolloutInfo:
    """Move the locked ``row``; InvalidRequestError when it changed since it was read."""
    info = RolloutInfo.of(row)
    now = datetime.now(UTC)
    step_index = info.step_index if move.step_index is None else move.step_index
    entry: dict[str, Any] = {
        "at": now.isoformat(),
        "from": info.state,
        "to": move.to,
        "step": step_index,
        "share": info.steps[step_index],
        "reason": move.reason,
        "actor": actor.name,
    }
    if move.figures is not None:
        entry["figures"] = move.figures
    values: dict[str, Any] = {
        "state": move.to,
        "step_index": step_index,
        "updated_at": now,
        "history": [*info.history, entry],
    }
    if move.to == "running":  # advanced or resumed: the step's hold starts now
        values["step_started_at"] = now
    if move.to in FINAL_STATES:
        values.update(reason=move.reason, finished_at=now)
    result = await session.execute(
        update(Rollout)
        .where(
            Rollout.id == info.id,
            Rollout.state == info.state,
            Rollout.step_index == info.step_index,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise InvalidRequestError(
            f"Rollout '{info.id}' changed meanwhile; read it again and retry.",
            code="rollout_changed",
        )
    details = {"rollout_id": info.id, **{k: v for k, v in entry.items() if k != "at"}}
    if move.split:
        await write_split(
            session,
            model=info.model,
            stable_pool=info.candidate_pool if move.to == "promoted" else info.stable_pool,
            weights=weights_for(info, move.to, step_index),
            actor=actor,
            action=move.action,
            details=details,
        )
    else:
        audit.record(
            session,
            actor=actor,
            action=move.action,
            tenant_id=SYSTEM_TENANT_ID,
            target_type="model",
            target_id=info.model,
            details=details,
        )
    await session.refresh(row)
    return RolloutInfo.of(row)
