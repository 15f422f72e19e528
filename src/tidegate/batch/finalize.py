"""Finalizing a batch: its output and error files, built only from committed results.

The caller holds the batch's lease and no line is pending, so the results cannot change any
more. The files are written first, then ONE conditional UPDATE (still holding the lease, status
not yet terminal) references them and ends the batch. A process that dies in between leaves
its files unreferenced (never the batch's output; the Files API still lists them to the tenant
as batch_output files) and the next finalizer, once the lease runs out, writes fresh ones; a
finalizer that is alive but lost its lease deletes its own files. A batch never references two
output files.

The results are read a page of lines at a time, only the columns the files need (never the
request bodies), with a turn of the event loop between pages: loading 50,000 lines as ORM objects
in one go held the loop for seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Row, select

from tidegate.batch.claims import Sessions, held_update, now
from tidegate.batch.ports import BatchFiles
from tidegate.store.db import transaction
from tidegate.store.models import Batch, BatchLine

FINALIZING_STATUSES = ("finalizing", "cancelling")


_PAGE = 500
_COLUMNS = (BatchLine.line_no, BatchLine.custom_id, BatchLine.state, BatchLine.outcome)


def _line(batch_id: str, row: Row[Any]) -> bytes:
    result = row.result or {}
    line = {
        "id": result.get("id") or f"batch_req_{batch_id}_{row.line_no}",
        "custom_id": row.custom_id,
        "response": result.get("response"),
        "error": result.get("error"),
    }
    return orjson.dumps(line) + b"\n"


async def _page(sessions: Sessions, batch_id: str, after: int) -> Sequence[Row[Any]]:
    async with transaction(sessions, "read a batch's results") as session:
        rows = await session.execute(
            select(*_COLUMNS, BatchLine.result)
            .where(BatchLine.batch_id == batch_id, BatchLine.line_no > after)
            .order_by(BatchLine.line_no)
            .limit(_PAGE)
        )
        return rows.all()


async def finalize(
    sessions: Sessions,
    files: BatchFiles,
    batch: Batch,
    *,
    owner: str,
    crash: Callable[[str], None],
) -> bool:
    """Write the files and end the batch; False when another process got there first."""
    output: list[bytes] = []
    errors: list[bytes] = []
    after = 0
    while rows := await _page(sessions, batch.id, after):
        for row in rows:
            if row.state != "done":
                return False  # not ours to finish yet; the lease runs out and a later round retries
            (output if row.outcome == "succeeded" else errors).append(_line(batch.id, row))
        after = rows[-1].line_no
        await asyncio.sleep(0)
    output_id = error_id = None
    if output:
        stored = await files.create_output(
            batch.tenant_id, f"batch_{batch.id}_output.jsonl", b"".join(output)
        )
        output_id = stored.id
    crash("during_output")
    if errors:
        stored = await files.create_output(
            batch.tenant_id, f"batch_{batch.id}_error.jsonl", b"".join(errors)
        )
        error_id = stored.id
    at = now()
    if batch.cancelling_at is not None:
        status, stamp = "cancelled", "cancelled_at"
    elif batch.expired_at is not None:
        status, stamp = "expired", "expired_at"
    else:
        status, stamp = "completed", "completed_at"
    async with transaction(sessions, "finish a batch") as session:
        done = await held_update(
            session,
            batch.id,
            owner,
            FINALIZING_STATUSES,
            status=status,
            output_file_id=output_id,
            error_file_id=error_id,
            total=len(output) + len(errors),
            completed=len(output),
            failed=len(errors),
            **{stamp: batch.expired_at if status == "expired" else at},
        )
    if not done:
        # The lease ran out and another process finished the batch with its own files.
        for file_id in (output_id, error_id):
            if file_id is not None:
                await files.delete(batch.tenant_id, file_id)
    return done
