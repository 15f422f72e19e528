"""UsageMeter: exactly one usage record per request, written off the hot path, crash-safe.

``record(event)`` is synchronous and cheap: one ``write()`` of a JSON line to this process's
open WAL segment plus a list append. A background task then, every ``flush_interval_s`` (or as
soon as ``batch_size`` events wait): rotates the segment, inserts its events in transactions of
``batch_size`` rows with ``ON CONFLICT (request_id) DO NOTHING``, and deletes the segment.

What a failure can lose:
- process crash (kill -9, OOM): nothing ``record`` returned for. The bytes are in the kernel's
  page cache; the next meter to start on the same WAL directory (or any live one's periodic
  sweep) replays the dead process's segments. Replays are idempotent by request id.
- power failure or kernel crash: events neither committed to the store nor fsynced, i.e. those
  recorded in the last flush interval (at most about ``batch_size`` events at high rates) plus
  the time the insert takes. Segments the store could not take are fsynced at once, so a store
  outage does not widen that window.
- store outage (PostgreSQL restarting, failing over, down for minutes): nothing. Segments stay
  on disk and are retried with exponential backoff (the flush interval doubled per failure, at
  most ``_RETRY_CAP_S``); memory holds at most ``max_events_in_memory`` of their events, the rest
  is read back from the files. Inserts skip request ids already stored, so a batch that was
  committed just before its reply was lost is not counted twice.

Call ``record`` from the event loop thread that ran ``start``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.background import Periodic
from tidegate.metering.events import UsageEvent
from tidegate.metering.inserts import insert_new
from tidegate.metering.wal import (
    Segment,
    SegmentWriter,
    dead_owners,
    read_segment,
    retire_segment,
    sync_and_close,
)
from tidegate.store.errors import StoreError
from tidegate.store.models import UsageRecord

logger = logging.getLogger(__name__)
_RETRY_CAP_S = 5.0
"""Longest wait between attempts to store usage while the store is down: bounds how long after
the store returns its backlog starts to drain."""


class UsageMeter:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        wal_dir: Path,
        flush_interval_s: float,
        batch_size: int,
        sweep_interval_s: float = 60.0,
        max_events_in_memory: int = 200_000,
        max_backlog_bytes: int = 0,
    ) -> None:
        """``max_backlog_bytes``: WAL bytes waiting for the store beyond which ``full`` is
        true (the gateway then refuses new requests rather than serve them unmetered); 0:
        no bound."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._sessions = sessions
        self._batch_size = batch_size
        self._sweep_interval = sweep_interval_s
        self._max_in_memory = max_events_in_memory
        self._writer = SegmentWriter(directory=wal_dir)
        self._current: list[UsageEvent] = []
        self._current_bytes = 0
        self._pending_bytes = 0
        self._max_backlog = max_backlog_bytes
        self._full_logged = False
        self._pending: deque[Segment] = deque()
        self._periodic = Periodic(
            name="usage-flush", interval_s=flush_interval_s, step=self._flush_step
        )
        self._flushing = asyncio.Lock()  # the periodic flush, flush() and stop() never overlap
        self._last_sweep = 0.0
        self._open = False
        self._flush_interval = flush_interval_s
        self._failures = 0
        self._retry_at = 0.0
        self._down_since = 0.0
        self.wal_errors = 0
        """record() calls whose write-ahead failed (their events were kept in memory only)."""

    @property
    def pending_events(self) -> int:
        """Events recorded but not yet known to be in the store (a gauge for /metrics)."""
        waiting = sum(len(s.events) if s.events is not None else 0 for s in self._pending)
        return len(self._current) + waiting

    def record(self, event: UsageEvent) -> None:
        """Write one event ahead and queue it for the store; returns in microseconds."""
        if not self._open:
            raise RuntimeError("UsageMeter.record() before start() or after stop()")
        line = event.to_json_line()
        self._current_bytes += len(line)
        try:
            self._writer.append(line)
        except OSError as exc:
            # Disk full or gone: the request itself succeeded, so keep its usage in memory
            # (stored at the next flush, but not crash-safe) rather than fail the request.
            self.wal_errors += 1
            if self.wal_errors == 1 or self.wal_errors % 1000 == 0:
                logger.error("usage WAL write failed (%d so far): %s", self.wal_errors, exc)
        self._current.append(event)
        if len(self._current) >= self._batch_size:
            self._periodic.wake()

    async def start(self) -> None:
        """Take a WAL segment, replay what dead processes left, then flush in the background.

        Raises StoreError when leftovers cannot be stored: better not to serve than to start
        with usage that is missing from budgets and reports.
        """
        self._writer.open()
        self._open = True
        try:
            await self._replay_dead()
        except BaseException:
            await self.stop()
            raise
        self._periodic.start()

    async def flush(self) -> None:
        """Commit everything recorded so far (raises StoreError if the store refuses)."""
        async with self._flushing:
            self._seal_current(rotate=True)
            await self._commit_pending()

    async def stop(self) -> None:
        """Flush everything; what the store will not take stays on disk for the next start."""
        await self._periodic.stop()
        async with self._flushing:
            if not self._open:
                return
            self._open = False
            self._seal_current(rotate=False)
            try:
                await self._commit_pending()
            except StoreError as exc:
                logger.error(
                    "%d usage events could not be stored at shutdown (%s); they stay in %s "
                    "and are replayed at the next start",
                    self.pending_events,
                    exc.message,
                    self._writer.directory,
                )
            self._writer.release()

    @property
    def backlog_bytes(self) -> int:
        """Bytes of usage this process wrote ahead that the store has not taken yet."""
        return self._pending_bytes + self._current_bytes

    @property
    def full(self) -> bool:
        """The backlog reached ``max_backlog_bytes`` (the store has been down for long)."""
        if not self._max_backlog or self.backlog_bytes < self._max_backlog:
            self._full_logged = False
            return False
        if not self._full_logged:
            self._full_logged = True
            logger.error(
                "%d bytes of usage wait for the store in %s (metering.wal_max_bytes): new "
                "requests are refused with 503 until the store takes them",
                self.backlog_bytes,
                self._writer.directory,
            )
        return True

    @property
    def pending_segments(self) -> int:
        """Sealed segments not yet in the store (each a file in the WAL directory)."""
        return len(self._pending)

    @property
    def wal_directory(self) -> Path:
        return self._writer.directory

    async def _flush_step(self) -> None:
        async with self._flushing:
            self._seal_current(rotate=True)
            if self._pending and time.monotonic() < self._retry_at:
                await self._make_durable()  # backing off: keep them on disk, bounded in memory
                return
            try:
                await self._commit_pending()
            except StoreError:
                self._failed()
                raise
            self._recovered()
        if time.monotonic() - self._last_sweep >= self._sweep_interval:
            await self._replay_dead()  # gateway processes on this host that died and stay dead

    def _failed(self) -> None:
        now = time.monotonic()
        if self._failures == 0:
            self._down_since = now
            logger.warning(
                "the store does not take usage records; %d segments are kept in %s and "
                "retried with backoff (nothing is dropped)",
                len(self._pending),
                self._writer.directory,
            )
        self._failures += 1
        delay = min(_RETRY_CAP_S, self._flush_interval * 2 ** min(self._failures, 16))
        self._retry_at = now + delay

    def _recovered(self) -> None:
        if self._failures:
            logger.warning(
                "the store takes usage records again after %.1f s; the backlog is stored",
                time.monotonic() - self._down_since,
            )
        self._failures, self._retry_at = 0, 0.0

    def _seal_current(self, *, rotate: bool) -> None:
        if rotate and not self._current:
            return  # an empty segment stays open; nothing to commit
        path, fd = self._writer.rotate() if rotate else self._writer.close()
        if not self._current:  # the last segment at stop, never written to
            os.close(fd)
            path.unlink(missing_ok=True)
            return
        size, self._current_bytes = self._current_bytes, 0
        self._pending.append(Segment(path=path, events=self._current, fd=fd, size=size))
        self._pending_bytes += size
        self._current = []

    async def _commit_pending(self) -> None:
        while self._pending:
            segment = self._pending[0]
            try:
                if segment.events is None:
                    segment.events = (await asyncio.to_thread(read_segment, segment.path)).events
                await self._insert(segment.events or [])
            except StoreError:
                await self._make_durable()
                raise
            self._pending.popleft()
            self._pending_bytes -= segment.size
            if segment.fd >= 0:
                os.close(segment.fd)  # committed: no fsync needed
            retire_segment(segment)

    async def _make_durable(self) -> None:
        """The store is down: fsync waiting segments and bound the memory they hold."""
        for segment in self._pending:
            if segment.fd >= 0:
                fd, segment.fd = segment.fd, -1
                await asyncio.to_thread(sync_and_close, fd, self._writer.directory)
        held = self.pending_events - len(self._current)
        for segment in reversed(self._pending):  # keep the oldest: they are committed first
            if held <= self._max_in_memory:
                break
            if segment.events is not None:
                held -= len(segment.events)
                segment.events = None  # read back from its file when the store is back

    async def _insert(self, events: Sequence[UsageEvent]) -> None:
        for start in range(0, len(events), self._batch_size):
            rows = [event.as_row() for event in events[start : start + self._batch_size]]
            await insert_new(
                self._sessions, UsageRecord, rows, key="request_id", action="store usage records"
            )

    async def _replay_dead(self) -> None:
        self._last_sweep = time.monotonic()
        directory = self._writer.directory
        owners = await asyncio.to_thread(dead_owners, directory, except_owner=self._writer.owner)
        for owner in owners:
            replayed = 0
            try:
                for path in owner.segments:
                    try:
                        segment = await asyncio.to_thread(read_segment, path)
                    except FileNotFoundError:
                        continue  # another process replayed it first
                    await self._insert(segment.events or [])
                    retire_segment(segment)
                    replayed += len(segment.events or [])
            except BaseException:
                owner.give_up()
                raise
            owner.retire()
            logger.info(
                "replayed %d usage events left by stopped gateway process %s",
                replayed,
                owner.owner,
            )
