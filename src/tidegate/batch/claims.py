"""The batch runner's store operations: leases, claims and idempotent commits.

Every state change is one conditional UPDATE, so any number of gateway processes can run the
same batches: a lease (``lease_owner``, ``lease_expires_at``) is taken only when it is free or
has run out, and a line's result is committed only while the line is still ``pending``. A live
process renews the leases of the lines it runs; a process that dies stops renewing them, so they
run out and another process takes over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.store.db import transaction
from tidegate.store.models import Batch, BatchLine

Sessions = async_sessionmaker[AsyncSession]


def now() -> datetime:
    return datetime.now(UTC)


def _free(lease: Any, at: datetime) -> Any:
    return or_(lease.is_(None), lease < at)


@dataclass(frozen=True, slots=True)
class ClaimedLine:
    batch_id: str
    line_no: int
    custom_id: str
    body: dict[str, Any]
    attempt: int


async def take_batch(
    sessions: Sessions,
    batch_id: str,
    *,
    owner: str,
    lease_s: float,
    statuses: tuple[str, ...],
    values: dict[str, Any] | None = None,
) -> bool:
    """Take the batch's lease (for validating or finalizing) if it is in one of ``statuses``
    and nobody holds it; ``values``: more columns to set in the same UPDATE."""
    at = now()
    async with transaction(sessions, "take a batch") as session:
        result = await session.execute(
            update(Batch)
            .where(
                Batch.id == batch_id,
                Batch.status.in_(statuses),
                _free(Batch.lease_expires_at, at),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=at + timedelta(seconds=lease_s),
                **(values or {}),
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def held_update(
    session: AsyncSession, batch_id: str, owner: str, statuses: tuple[str, ...], **values: Any
) -> bool:
    """Change a batch this process holds the lease of (and release it); False when the lease
    was lost or the status moved on meanwhile (then nothing changes)."""
    result = await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.lease_owner == owner, Batch.status.in_(statuses))
        .values(lease_owner=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def claim_lines(
    sessions: Sessions, batch_id: str, *, owner: str, lease_s: float, limit: int
) -> list[ClaimedLine]:
    """Lease up to ``limit`` pending lines whose lease is free or expired, lowest first."""
    at = now()
    async with transaction(sessions, "claim batch lines") as session:
        candidates = (
            select(BatchLine.line_no)
            .where(
                BatchLine.batch_id == batch_id,
                BatchLine.state == "pending",
                _free(BatchLine.lease_expires_at, at),
            )
            .order_by(BatchLine.line_no)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            # Another process claiming the same batch skips these rows instead of waiting.
            candidates = candidates.with_for_update(skip_locked=True)
        numbers = list(await session.scalars(candidates))
        if not numbers:
            return []
        # The WHERE repeats the claim condition: the UPDATE is the claim, the SELECT only a hint.
        rows = await session.execute(
            update(BatchLine)
            .where(
                BatchLine.batch_id == batch_id,
                BatchLine.line_no.in_(numbers),
                BatchLine.state == "pending",
                _free(BatchLine.lease_expires_at, at),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=at + timedelta(seconds=lease_s),
                attempts=BatchLine.attempts + 1,
            )
            .returning(BatchLine.line_no, BatchLine.custom_id, BatchLine.body, BatchLine.attempts)
            .execution_options(synchronize_session=False)
        )
        claimed = [ClaimedLine(batch_id, r[0], r[1], r[2], r[3]) for r in rows]
    return sorted(claimed, key=lambda line: line.line_no)


async def renew_leases(
    sessions: Sessions, lines: list[tuple[str, int]], *, owner: str, lease_s: float
) -> None:
    """Extend the leases this process holds on ``lines`` (batch id, line number), so a line that
    runs longer than one lease is not taken over (and run twice) while it is still running."""
    by_batch: dict[str, list[int]] = {}
    for batch_id, line_no in lines:
        by_batch.setdefault(batch_id, []).append(line_no)
    until = now() + timedelta(seconds=lease_s)
    async with transaction(sessions, "renew batch line leases") as session:
        for batch_id, numbers in by_batch.items():
            await session.execute(
                update(BatchLine)
                .where(
                    BatchLine.batch_id == batch_id,
                    BatchLine.line_no.in_(numbers),
                    BatchLine.state == "pending",
                    BatchLine.lease_owner == owner,
                )
                .values(lease_expires_at=until)
                .execution_options(synchronize_session=False)
            )


async def release_line(
    sessions: Sessions, line: ClaimedLine, *, owner: str, retry_after_s: float
) -> None:
    """Give a line back to be tried again no sooner than ``retry_after_s`` from now (its lease
    then reads as expired): the back-off after a limit or overload refusal."""
    async with transaction(sessions, "release a batch line") as session:
        await session.execute(
            update(BatchLine)
            .where(
                BatchLine.batch_id == line.batch_id,
                BatchLine.line_no == line.line_no,
                BatchLine.state == "pending",
                BatchLine.lease_owner == owner,
            )
            .values(lease_owner=None, lease_expires_at=now() + timedelta(seconds=retry_after_s))
            .execution_options(synchronize_session=False)
        )


async def commit_line(
    sessions: Sessions, batch_id: str, line_no: int, *, outcome: str, result: dict[str, Any]
) -> bool:
    """Record a line's result once: a second commit of the same line (a re-execution after its
    lease ran out) changes nothing and returns False."""
    async with transaction(sessions, "commit a batch line") as session:
        done = await session.execute(
            update(BatchLine)
            .where(
                BatchLine.batch_id == batch_id,
                BatchLine.line_no == line_no,
                BatchLine.state == "pending",
            )
            .values(
                state="done",
                outcome=outcome,
                result=result,
                finished_at=now(),
                lease_owner=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]


async def close_pending(
    session: AsyncSession, batch_id: str, *, outcome: str, code: str, message: str, free_only: bool
) -> int:
    """End the batch's pending lines as ``outcome`` with an error result. ``free_only``: leave
    lines that are in flight (their lease holds) to finish — how cancel treats them."""
    at = now()
    conditions = [BatchLine.batch_id == batch_id, BatchLine.state == "pending"]
    if free_only:
        conditions.append(_free(BatchLine.lease_expires_at, at))
    result = await session.execute(
        update(BatchLine)
        .where(*conditions)
        .values(
            state="done",
            outcome=outcome,
            result={"error": {"code": code, "message": message}},
            finished_at=at,
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def line_counts(session: AsyncSession, batch_id: str) -> tuple[int, int, int, int]:
    """(total, succeeded, ended otherwise, pending) of a batch's lines."""
    rows = await session.execute(
        select(BatchLine.state, BatchLine.outcome, func.count())
        .where(BatchLine.batch_id == batch_id)
        .group_by(BatchLine.state, BatchLine.outcome)
    )
    total = succeeded = other = pending = 0
    for state, outcome, count in rows:
        total += count
        if state == "pending":
            pending += count
        elif outcome == "succeeded":
            succeeded += count
        else:
            other += count
    return total, succeeded, other, pending
