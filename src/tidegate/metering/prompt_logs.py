"""Redacted prompt and completion text for tenants that opted in (``settings.log_prompts``).

The request path only appends to a bounded in-memory buffer; redaction (regexes over possibly
long text) runs in a worker thread at flush time, and rows are inserted in batches. Prompt logs
are a debugging aid, not an account: they have no write-ahead file, and when the store cannot
keep up the oldest buffered entries are dropped (counted in ``dropped``) rather than growing
memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.background import Periodic
from tidegate.metering.inserts import insert_new
from tidegate.store.models import PromptLog

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Entry:
    request_id: str
    tenant_id: str
    created_at: datetime
    retention_days: int
    prompt: str
    completion: str


class PromptLogWriter:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        redact: Callable[[str], str],
        flush_interval_s: float,
        batch_size: int,
        max_buffered: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self._redact = redact
        self._batch_size = batch_size
        self._buffer: deque[_Entry] = deque(maxlen=max_buffered)
        self._periodic = Periodic(
            name="prompt-log-flush", interval_s=flush_interval_s, step=self.flush
        )
        self._flushing = asyncio.Lock()
        self.dropped = 0
        """Entries dropped because the buffer was full (the store was down or too slow)."""

    def log(
        self,
        *,
        request_id: str,
        tenant_id: str,
        prompt: str,
        completion: str,
        retention_days: int,
        created_at: datetime | None = None,
    ) -> None:
        """Queue one request's text; call only for tenants with ``log_prompts`` on. The text is
        redacted before it is stored, never here on the request path."""
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # deque drops the oldest entry on append
        self._buffer.append(
            _Entry(
                request_id=request_id,
                tenant_id=tenant_id,
                created_at=created_at or datetime.now(UTC),
                retention_days=retention_days,
                prompt=prompt,
                completion=completion,
            )
        )
        if len(self._buffer) >= self._batch_size:
            self._periodic.wake()

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        try:
            await self.flush()
        except Exception:
            logger.exception("%d prompt log entries were not stored at shutdown", len(self._buffer))

    async def flush(self) -> None:
        """Redact and store everything buffered (raises StoreError if the store refuses; the
        batch then goes back to the front of the buffer)."""
        async with self._flushing:
            while self._buffer:
                batch = [
                    self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
                ]
                try:
                    rows = await asyncio.to_thread(self._rows, batch)
                    await insert_new(
                        self._sessions,
                        PromptLog,
                        rows,
                        key="request_id",
                        action="store prompt logs",
                    )
                except BaseException:
                    assert self._buffer.maxlen is not None
                    self.dropped += max(0, len(self._buffer) + len(batch) - self._buffer.maxlen)
                    self._buffer.extendleft(reversed(batch))  # retried first next time
                    raise

    def _rows(self, batch: list[_Entry]) -> list[dict[str, Any]]:
        return [
            {
                "request_id": entry.request_id,
                "tenant_id": entry.tenant_id,
                "created_at": entry.created_at,
                "expires_at": entry.created_at + timedelta(days=entry.retention_days),
                "prompt": _storable(self._redact(entry.prompt)),
                "completion": _storable(self._redact(entry.completion)),
            }
            for entry in batch
        ]


def _storable(text: str) -> str:
    """PostgreSQL's text type refuses NUL, and one such prompt would fail every flush after it
    (its batch is retried first): the log copy shows it as U+FFFD instead."""
    return text.replace("\x00", "\ufffd")
