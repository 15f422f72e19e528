"""The Batch API's logic: create, retrieve, list and cancel a tenant's batches.

Creating a batch only records it (``validating``): reading and checking the input file is the
runner's job, so a large file never holds an HTTP request open. A batch or file of another
tenant is answered exactly like a missing id.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidegate.batch.claims import Sessions, line_counts, now
from tidegate.batch.ports import BatchFiles
from tidegate.errors import InvalidRequestError, NotFoundError
from tidegate.protocol.batches import TERMINAL, BatchCreate, batch_object
from tidegate.store.db import transaction
from tidegate.store.models import Batch
from tidegate.tenancy.keys import Principal

DEFAULT_PAGE = 20
MAX_PAGE = 100
# Cancel works until a batch's results are being assembled (OpenAI's rule too).
_CANCELLABLE = ("validating", "in_progress")


def _not_found(batch_id: str) -> NotFoundError:
    return NotFoundError(f"No batch found with id '{batch_id}'.", param="batch_id")


class BatchService:
    def __init__(self, *, sessions: Sessions, files: BatchFiles, max_window_s: float) -> None:
        """``max_window_s``: the longest completion_window (batch.max_completion_window_s)."""
        self._sessions = sessions
        self._files = files
        self.max_window_s = max_window_s

    async def create(self, principal: Principal, request: BatchCreate) -> dict[str, Any]:
        stored = await self._files.get(principal.tenant_id, request.input_file_id)
        if stored.purpose != "batch":
            raise InvalidRequestError(
                f"File '{stored.id}' was not uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        created = now()
        row = Batch(
            id="batch_" + secrets.token_hex(12),
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            endpoint=request.endpoint,
            input_file_id=request.input_file_id,
            completion_window=request.completion_window,
            batch_metadata=request.metadata,
            status="validating",
            total=0,
            completed=0,
            failed=0,
            created_at=created,
            expires_at=created + timedelta(seconds=request.window_s),
        )
        async with transaction(self._sessions, "create a batch") as session:
            session.add(row)
        return batch_object(row)

    async def get(self, tenant_id: str, batch_id: str) -> dict[str, Any]:
        async with transaction(self._sessions, "read a batch") as session:
            row = await self._row(session, tenant_id, batch_id)
            return await _render(session, row)

    async def list(self, tenant_id: str, *, after: str | None, limit: int | None) -> dict[str, Any]:
        """Newest first, like OpenAI's list; ``after``: the last id of the previous page."""
        size = DEFAULT_PAGE if limit is None else limit
        if not 1 <= size <= MAX_PAGE:
            raise InvalidRequestError(f"limit must be 1 to {MAX_PAGE}.", param="limit")
        async with transaction(self._sessions, "list batches") as session:
            query = (
                select(Batch)
                .where(Batch.tenant_id == tenant_id)
                .order_by(Batch.created_at.desc(), Batch.id.desc())
                .limit(size + 1)
            )
            if after is not None:
                last = await session.get(Batch, after)
                if last is None or last.tenant_id != tenant_id:
                    raise InvalidRequestError(
                        f"Invalid value for 'after': no batch with id '{after}'.", param="after"
                    )
                # Newest first: the next page holds the rows older than ``after``.
                query = query.where(
                    or_(
                        Batch.created_at < last.created_at,
                        and_(Batch.created_at == last.created_at, Batch.id < last.id),
                    )
                )
            rows = list(await session.scalars(query))
            data = [await _render(session, row) for row in rows[:size]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > size,
        }

    async def cancel(self, tenant_id: str, batch_id: str) -> dict[str, Any]:
        """Cancelling stops new lines from starting; the runner lets the ones in flight finish,
        ends the rest as cancelled and delivers the partial results."""
        async with transaction(self._sessions, "cancel a batch") as session:
            row = await self._row(session, tenant_id, batch_id)
            if row.status in ("cancelling", "cancelled"):
                return await _render(session, row)
            if row.status not in _CANCELLABLE:
                raise InvalidRequestError(
                    f"Batch '{batch_id}' is {row.status} and can no longer be cancelled."
                )
            at = now()
            # The validator's lease is dropped too: its work no longer matters (its final
            # update requires status validating), and the runner can finish the batch at once.
            await session.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.status == row.status)
                .values(
                    status="cancelling", cancelling_at=at, lease_owner=None, lease_expires_at=None
                )
                .execution_options(synchronize_session=False)
            )
            await session.refresh(row)
            return await _render(session, row)

    async def _row(self, session: AsyncSession, tenant_id: str, batch_id: str) -> Batch:
        row = await session.get(Batch, batch_id)
        if row is None or row.tenant_id != tenant_id:
            raise _not_found(batch_id)
        return row


async def _render(session: AsyncSession, row: Batch) -> dict[str, Any]:
    if row.status in TERMINAL or row.status == "validating":
        return batch_object(row)
    total, succeeded, other, _ = await line_counts(session, row.id)
    return batch_object(row, (total, succeeded, other))
