"""Finalizing a batch: its output and error files, built only from committed results.

The caller holds the batch's lease and no line is pending, so the results cannot change any
more. The files are written first, then ONE conditional UPDATE (still holding the lease, status
not yet terminal) references them and ends the batch. A process that dies in between leaves
its files unreferenced (never the batch's output; the Files API still lists them to the tenant
as batch_output files) and the next finalizer, once the lease runs out, writes fresh ones; a
finalizer that is alive but lost its lease deletes its own files. A batch never references two
output files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import select

from tidegate.batch.claims import Sessions, held_update, now
from tidegate.batch.ports import BatchFiles
from tidegate.store.db import transaction
from tidegate.store.models import Batch, BatchLine

FINALIZING_STATUSES = ("finalizing", "cancelling")


def _line(batch_id: str, row: BatchLine) -> dict[str, Any]:
    result = row.result or {}
    return {
        "id": result.get("id") or f"batch_req_{batch_id}_{row.line_no}",
        "custom_id": row.custom_id,
        "response": result.get("response"),
        "error": result.get("error"),
    }


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def finalize(
    sessions: Sessions,
    files: BatchFiles,
    batch: Batch,
    *,
    owner: str,
    crash: Callable[[str], None],
) -> bool:
    """Write the files and end the batch; False when another process got there first."""
    async with transaction(sessions, "read a batch's results") as session:
        rows = list(
            await session.scalars(
                select(BatchLine).where(BatchLine.batch_id == batch.id).order_by(BatchLine.line_no)
            )
        )
    if any(row.state != "done" for row in rows):
        return False  # not ours to finish yet; the lease runs out and a later round retries
    output = [_line(batch.id, r) for r in rows if r.outcome == "succeeded"]
    errors = [_line(batch.id, r) for r in rows if r.outcome != "succeeded"]
    output_id = error_id = None
    if output:
        stored = await files.create_output(
            batch.tenant_id, f"batch_{batch.id}_output.jsonl", _jsonl(output)
        )
        output_id = stored.id
    crash("during_output")
    if errors:
        stored = await files.create_output(
            batch.tenant_id, f"batch_{batch.id}_error.jsonl", _jsonl(errors)
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
            total=len(rows),
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
