"""The staged rollout controller (owned by the controller helper)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.rollout.metrics import RolloutMetrics
from tidegate.rollout.sync import PolicySync


class RolloutController:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        sync: PolicySync,
        metrics: RolloutMetrics,
        gateway_id: str,
        interval_s: float,
        lock_ttl_s: float,
    ) -> None:
        self._sessions = sessions

    async def start(self) -> None:
        return None  # placeholder until implemented

    async def stop(self) -> None:
        return None  # placeholder until implemented
