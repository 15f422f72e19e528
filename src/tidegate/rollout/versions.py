"""Model version records (owned by the traffic helper)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.config import Config


class VersionService:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], keep: int) -> None:
        self._sessions = sessions

    async def record_config(self, config: Config) -> None:
        """Record a version for each configured pool whose fingerprint is new."""
        return None  # placeholder until implemented
