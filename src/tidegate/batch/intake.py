"""Moving a batch out of ``validating``: check its input file, then store all its lines (and go
``in_progress``) or fail it with every problem found — in one transaction either way, still
holding the batch's lease, so a validator that loses its lease (or a batch cancelled or expired
meanwhile) changes nothing.

The lines go in as multi-row inserts of a few hundred rows each, with a turn of the event loop
between them (building 50,000 ORM objects in one flush held the loop for seconds); each chunk's
bodies are parsed from the checked lines only then, so few are alive at once.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import insert

from tidegate.batch.claims import Sessions, held_update, now
from tidegate.batch.ports import BatchFiles
from tidegate.batch.validate import LineChecker, line_body
from tidegate.errors import TidegateError
from tidegate.protocol.batches import line_error
from tidegate.store.db import transaction
from tidegate.store.models import Batch, BatchLine
from tidegate.tenancy.keys import KeyService

_VALIDATING = ("validating",)
_INSERT_ROWS = 250


async def validate_batch(
    sessions: Sessions,
    *,
    batch: Batch,
    owner: str,
    files: BatchFiles,
    keys: KeyService,
    checker: LineChecker,
) -> str:
    """Validate a batch whose lease this process holds; returns its new status."""
    try:
        principal = await keys.principal(batch.key_id)
        data = await files.content(batch.tenant_id, batch.input_file_id)
    except TidegateError as error:  # the key was revoked, or the input file deleted
        return await _fail(
            sessions, batch, owner, [line_error(None, "invalid_input", error.message)]
        )
    checked = await checker.check(data, batch.endpoint, principal)
    if checked.error_count:
        errors = checked.errors
        if checked.error_count > len(errors):
            more = checked.error_count - len(errors)
            errors.append(line_error(None, "too_many_errors", f"... and {more} more problems."))
        return await _fail(sessions, batch, owner, errors)
    async with transaction(sessions, "start a batch") as session:
        # The status change first: only while it still holds are the lines stored.
        if not await held_update(
            session,
            batch.id,
            owner,
            _VALIDATING,
            status="in_progress",
            in_progress_at=now(),
            total=len(checked.lines),
        ):
            await session.rollback()
            return "lost"
        lines = checked.lines
        for start in range(0, len(lines), _INSERT_ROWS):
            rows = [
                {
                    "batch_id": batch.id,
                    "line_no": line_no,
                    "custom_id": custom_id,
                    "body": line_body(raw),
                    "state": "pending",
                    "attempts": 0,
                }
                for line_no, custom_id, raw in lines[start : start + _INSERT_ROWS]
            ]
            await session.execute(insert(BatchLine), rows)
            await asyncio.sleep(0)
    return "in_progress"


async def _fail(
    sessions: Sessions, batch: Batch, owner: str, errors: list[dict[str, object]]
) -> str:
    async with transaction(sessions, "fail a batch") as session:
        done = await held_update(
            session, batch.id, owner, _VALIDATING, status="failed", failed_at=now(), errors=errors
        )
    return "failed" if done else "lost"
