"""Per-step request statistics of the pools in a running rollout (owned by the controller's
helper; see its module docs once written)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.gateway.completions import PreparedRequest
from tidegate.observability.records import RequestRecord
from tidegate.rollout.sync import PolicySync


class StepStats:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        sync: PolicySync,
        gateway_id: str,
        flush_interval_s: float,
    ) -> None:
        self._sessions = sessions
        self._sync = sync
        self._gateway_id = gateway_id
        self._flush_interval_s = flush_interval_s

    def wants_capture(self, request: PreparedRequest, record: RequestRecord) -> bool:
        """The request asked for JSON and its model is in a running rollout."""
        return False  # placeholder until implemented

    def observe(
        self, record: RequestRecord, *, duration_s: float, payload: dict[str, Any] | None
    ) -> None:
        return None  # placeholder until implemented

    async def flush(self) -> None:
        return None  # placeholder until implemented

    async def start(self) -> None:
        return None  # placeholder until implemented

    async def stop(self) -> None:
        return None  # placeholder until implemented
