"""Usage events for metering tests, and a way to read back what the store holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.metering import UsageEvent
from tidegate.store.models import UsageRecord

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def usage_event(request_id: str, **fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "request_id": request_id,
        "created_at": T0,
        "tenant_id": "ten_system",
        "key_id": "key_0123456789abcdef01234567",
        "model": "fake-model",
        "replica": "u0",
        "route": "chat",
        "prompt_tokens": 10,
        "cached_tokens": 2,
        "completion_tokens": 5,
        "cost_usd": 0.001,
        "ttft_ms": 12.5,
        "duration_ms": 80.0,
        "status": 200,
        "outcome": "ok",
        "kind": "live",
    }
    values.update(fields)
    return UsageEvent(**values)


async def stored_ids(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list(await session.scalars(select(UsageRecord.request_id)))


async def stored_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(UsageRecord)) or 0)


async def stored_record(sessions: async_sessionmaker[AsyncSession], request_id: str) -> UsageRecord:
    async with sessions() as session:
        row = await session.get(UsageRecord, request_id)
        assert row is not None, request_id
        return row
