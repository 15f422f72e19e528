"""The batch runner: one per gateway process, sharing the work with every other process through
the store.

Each round it looks at the unfinished batches: validates new ones (under the batch's lease),
claims pending lines of running ones (under line leases) within the per-batch and per-tenant
concurrency bounds, runs them through the live pipeline at the batch class, commits each result
idempotently, ends pending lines at the deadline (expired) or on cancel (cancelled), and
finalizes a batch once none of its lines is pending. A process that dies holds only leases, and
leases run out, so another process (or this one restarted) carries on where it stopped: lines
are executed at least once and committed exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from sqlalchemy import select, update

from tidegate.background import Periodic, TaskSet
from tidegate.batch.claims import (
    ClaimedLine,
    Sessions,
    claim_lines,
    close_pending,
    commit_line,
    line_counts,
    now,
    release_line,
    renew_leases,
    take_batch,
)
from tidegate.batch.crash import CrashHook
from tidegate.batch.execute import LineExecutor, LineResult, RetryLater, request_id
from tidegate.batch.finalize import finalize
from tidegate.batch.intake import validate_batch
from tidegate.batch.ports import BatchFiles
from tidegate.batch.validate import LineChecker
from tidegate.config import BatchConfig
from tidegate.errors import TidegateError
from tidegate.protocol.endpoints import ENDPOINT_OF_PATH, Endpoint
from tidegate.store.db import transaction
from tidegate.store.models import Batch
from tidegate.tenancy.keys import KeyService, Principal

log = logging.getLogger(__name__)

ACTIVE = ("validating", "in_progress", "cancelling", "finalizing")
_EXPIRED_MESSAGE = "The batch expired before this request could be run."
_CANCELLED_MESSAGE = "The batch was cancelled before this request was run."


class BatchRunner:
    def __init__(
        self,
        *,
        sessions: Sessions,
        files: BatchFiles,
        keys: KeyService,
        checker: LineChecker,
        executor: LineExecutor,
        config: BatchConfig,
        crash: CrashHook,
    ) -> None:
        self._sessions = sessions
        self._files = files
        self._keys = keys
        self._checker = checker
        self._executor = executor
        self._config = config
        self._crash = crash
        self.owner = f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        """Unique per process: leases name it."""
        self._periodic = Periodic(
            name="batch runner", interval_s=config.poll_interval_s, step=self._round
        )
        self._by_batch: Counter[str] = Counter()
        self._by_tenant: Counter[str] = Counter()
        self._tasks = TaskSet()
        self._busy: set[str] = set()
        """Batches this process is validating or finalizing now."""
        self._running: set[tuple[str, int]] = set()
        """Lines this process runs now (batch id, line number): their leases are renewed."""
        self._renewed_at = time.monotonic()

    def start(self) -> None:
        self._periodic.start()
        self._periodic.wake()

    async def stop(self) -> None:
        """Stop claiming; lines in flight are abandoned (their leases run out and another
        process, or this one restarted, runs them again)."""
        await self._periodic.stop()
        await self._tasks.cancel_all()

    async def _round(self) -> None:
        await self._renew()
        async with transaction(self._sessions, "list active batches") as session:
            batches = list(
                await session.scalars(
                    select(Batch).where(Batch.status.in_(ACTIVE)).order_by(Batch.created_at)
                )
            )
        for batch in batches:
            if batch.id in self._busy:
                continue
            if batch.status in ("validating", "in_progress") and batch.expires_at <= now():
                await self._expire(batch)
            elif batch.status == "validating":
                self._spawn_for(batch, self._validate(batch))
            elif batch.status == "in_progress":
                await self._advance(batch)
            elif batch.status == "cancelling":
                await self._cancel_pending(batch)
            else:  # finalizing: a finalizer died; take over once its lease runs out
                self._spawn_for(batch, self._finalize(batch, ("finalizing",)))

    async def _renew(self) -> None:
        """Every third of a lease, extend the leases of the lines running here."""
        lease_s = self._config.lease_s
        if not self._running or time.monotonic() - self._renewed_at < lease_s / 3:
            return
        self._renewed_at = time.monotonic()
        await renew_leases(self._sessions, list(self._running), owner=self.owner, lease_s=lease_s)

    async def _advance(self, batch: Batch) -> None:
        cfg = self._config
        room = min(
            cfg.concurrency_per_batch - self._by_batch[batch.id],
            cfg.concurrency_per_tenant - self._by_tenant[batch.tenant_id],
            cfg.claim_size,
        )
        if room > 0:
            lines = await claim_lines(
                self._sessions, batch.id, owner=self.owner, lease_s=cfg.lease_s, limit=room
            )
            if lines:
                await self._start_lines(batch, lines)
                return
        if self._by_batch[batch.id]:
            return  # lines of ours are in flight: not finished yet
        async with transaction(self._sessions, "count batch lines") as session:
            pending = (await line_counts(session, batch.id))[3]
        if pending == 0:
            values = {"status": "finalizing", "finalizing_at": now()}
            self._spawn_for(batch, self._finalize(batch, ("in_progress",), values))

    async def _start_lines(self, batch: Batch, lines: list[ClaimedLine]) -> None:
        route = ENDPOINT_OF_PATH[batch.endpoint]
        try:
            principal = await self._keys.principal(batch.key_id)
        except TidegateError as error:  # revoked or expired since: its lines cannot run
            for line in lines:
                result = LineResult(
                    "failed",
                    {
                        "id": request_id(line),
                        "response": None,
                        "error": {"code": error.code or error.error_type, "message": error.message},
                    },
                )
                await self._commit(line, result)
            return
        for line in lines:
            self._by_batch[batch.id] += 1
            self._by_tenant[batch.tenant_id] += 1
            self._running.add((line.batch_id, line.line_no))
            self._tasks.spawn(self._run_line(batch, line, route, principal))

    async def _run_line(
        self, batch: Batch, line: ClaimedLine, route: Endpoint, who: Principal
    ) -> None:
        try:
            self._crash("after_claim")
            try:
                result = await self._executor.run(line, route, who)
            except RetryLater as later:
                await release_line(
                    self._sessions, line, owner=self.owner, retry_after_s=later.retry_after_s
                )
                return
            self._crash("before_commit")
            await self._commit(line, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The store failed: the line's lease runs out and it runs again.
            log.exception("batch %s line %d: could not finish", line.batch_id, line.line_no)
        finally:
            self._running.discard((line.batch_id, line.line_no))
            self._by_batch[batch.id] -= 1
            self._by_tenant[batch.tenant_id] -= 1
            self._periodic.wake()  # room for another line

    async def _commit(self, line: ClaimedLine, result: LineResult) -> None:
        await commit_line(
            self._sessions,
            line.batch_id,
            line.line_no,
            outcome=result.outcome,
            result=result.result,
        )

    async def _validate(self, batch: Batch) -> None:
        if not await take_batch(
            self._sessions,
            batch.id,
            owner=self.owner,
            lease_s=self._config.lease_s,
            statuses=("validating",),
        ):
            return
        await validate_batch(
            self._sessions,
            batch=batch,
            owner=self.owner,
            files=self._files,
            keys=self._keys,
            checker=self._checker,
        )

    async def _finalize(
        self, batch: Batch, statuses: tuple[str, ...], values: dict[str, Any] | None = None
    ) -> None:
        if await take_batch(
            self._sessions,
            batch.id,
            owner=self.owner,
            lease_s=self._config.lease_s,
            statuses=statuses,
            values=values,
        ):
            await finalize(self._sessions, self._files, batch, owner=self.owner, crash=self._crash)

    async def _expire(self, batch: Batch) -> None:
        """At the deadline: pending lines (in flight or not) end as expired, the results
        committed so far are delivered. A late commit of a line in flight is then a no-op."""
        at = now()
        async with transaction(self._sessions, "expire a batch") as session:
            await close_pending(
                session,
                batch.id,
                outcome="expired",
                code="batch_expired",
                message=_EXPIRED_MESSAGE,
                free_only=False,
            )
            validating = batch.status == "validating"
            await session.execute(
                update(Batch)
                .where(Batch.id == batch.id, Batch.status == batch.status)
                .values(
                    status="expired" if validating else "finalizing",
                    expired_at=at,
                    finalizing_at=None if validating else at,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .execution_options(synchronize_session=False)
            )
        self._periodic.wake()

    async def _cancel_pending(self, batch: Batch) -> None:
        """Cancelling: lines not in flight end as cancelled; lines in flight finish. Once none
        is pending, the batch is finalized with what it has."""
        async with transaction(self._sessions, "cancel batch lines") as session:
            await close_pending(
                session,
                batch.id,
                outcome="cancelled",
                code="batch_cancelled",
                message=_CANCELLED_MESSAGE,
                free_only=True,
            )
            pending = (await line_counts(session, batch.id))[3]
        if pending == 0:
            self._spawn_for(batch, self._finalize(batch, ("cancelling",)))

    def _spawn_for(self, batch: Batch, work: Coroutine[Any, Any, None]) -> None:
        """Validate or finalize in the background, once per batch at a time in this process."""
        self._busy.add(batch.id)

        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch %s: validation or finalizing failed; retrying", batch.id)
            finally:
                self._busy.discard(batch.id)
                self._periodic.wake()

        self._tasks.spawn(run())
