"""The purge job: deletes logged prompts and shadow comparisons past their retention window.

Each row carries its own ``expires_at`` (set from the tenant's retention when it was written),
so the purge is one indexed range delete per table, done in bounded chunks so a large backlog
never holds SQLite's single writer lock for long.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.background import Periodic
from tidegate.store.db import transaction
from tidegate.store.models import PromptLog, ShadowComparison

_PURGED = ((PromptLog, PromptLog.request_id), (ShadowComparison, ShadowComparison.id))


class RetentionPurger:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        interval_s: float,
        chunk_size: int = 5_000,
    ) -> None:
        self._sessions = sessions
        self._chunk = chunk_size
        self._periodic = Periodic(
            name="prompt-log-purge", interval_s=interval_s, step=self.purge_once
        )

    def start(self) -> None:
        self._periodic.start()
        self._periodic.wake()  # purge once at start: the gateway may have been down a while

    async def stop(self) -> None:
        await self._periodic.stop()

    async def purge_once(self, *, now: datetime | None = None) -> int:
        """Delete every prompt log and shadow comparison whose ``expires_at`` has passed;
        returns how many."""
        now = now or datetime.now(UTC)
        deleted = 0
        for table, key in _PURGED:
            while True:
                async with transaction(self._sessions, "purge expired texts") as session:
                    expired = select(key).where(table.expires_at <= now)
                    ids = list(await session.scalars(expired.limit(self._chunk)))
                    if ids:
                        await session.execute(delete(table).where(key.in_(ids)))
                deleted += len(ids)
                if len(ids) < self._chunk:
                    break
        return deleted
