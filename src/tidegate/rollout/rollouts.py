"""Rollout lifecycle operations (owned by the controller helper)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.rollout.sync import PolicySync
from tidegate.routing.replicas import RoutingTable


class RolloutService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        routing: RoutingTable | None,
        sync: PolicySync | None,
    ) -> None:
        self._sessions = sessions
