"""Rollups, spend so far and raw record pages on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.usage_events import T0, usage_event
from tidegate.errors import InvalidRequestError
from tidegate.metering import UsageEvent, UsageMeter, UsageQueries

Sessions = async_sessionmaker[AsyncSession]
DAY = timedelta(days=1)


async def store(sessions: Sessions, tmp_path: Path, events: list[UsageEvent]) -> UsageQueries:
    usage = UsageMeter(
        sessions=sessions, wal_dir=tmp_path / "wal", flush_interval_s=60, batch_size=3
    )
    await usage.start()
    for event in events:
        usage.record(event)
    await usage.stop()
    return UsageQueries(sessions=sessions)


def sample() -> list[UsageEvent]:
    return [
        # tenant a: two requests on day 1 (two models), one just before midnight UTC on day 2
        usage_event("a1", tenant_id="ten_a", model="m1", prompt_tokens=100, completion_tokens=10,
                    cached_tokens=40, cost_usd=0.5),
        usage_event("a2", tenant_id="ten_a", model="m2", prompt_tokens=200, completion_tokens=20,
                    cost_usd=1.0),
        usage_event("a3", tenant_id="ten_a", model="m1", created_at=T0 + DAY + timedelta(
            hours=11, minutes=59, seconds=59), prompt_tokens=1, completion_tokens=1, cost_usd=0.25),
        # shadow traffic is metered but never charged
        usage_event("a4", tenant_id="ten_a", model="m1", kind="shadow", prompt_tokens=1000,
                    completion_tokens=1000, cost_usd=100.0),
        usage_event("b1", tenant_id="ten_b", model="m1", prompt_tokens=7, completion_tokens=3,
                    cost_usd=0.125, kind="batch"),
    ]  # fmt: skip


async def test_rollup_per_tenant_and_day(sessions: Sessions, tmp_path: Path) -> None:
    queries = await store(sessions, tmp_path, sample())
    rows = await queries.usage_rollup(None, None, None, "day")
    summary = [
        (r.tenant_id, r.day, r.model, r.requests, r.prompt_tokens, r.cached_tokens,
         r.completion_tokens, r.total_tokens, r.cost_usd)
        for r in rows
    ]  # fmt: skip
    assert summary == [
        ("ten_a", "2026-11-03", None, 2, 300, 42, 30, 330, 1.5),
        ("ten_a", "2026-11-04", None, 1, 1, 2, 1, 2, 0.25),
        ("ten_b", "2026-11-03", None, 1, 7, 2, 3, 10, 0.125),
    ]
    with_shadow = await queries.usage_rollup("ten_a", None, None, "day", include_shadow=True)
    assert [r.requests for r in with_shadow] == [3, 1]


async def test_rollup_per_model_with_tenant_and_time_filters(
    sessions: Sessions, tmp_path: Path
) -> None:
    queries = await store(sessions, tmp_path, sample())
    rows = await queries.usage_rollup("ten_a", None, None, "model")
    assert [(r.tenant_id, r.model, r.day, r.requests, r.cost_usd) for r in rows] == [
        ("ten_a", "m1", None, 2, 0.75),
        ("ten_a", "m2", None, 1, 1.0),
    ]
    day_two = datetime(2026, 11, 4, tzinfo=UTC)
    later = await queries.usage_rollup(None, day_two, day_two + DAY, "model")
    assert [(r.tenant_id, r.model, r.requests) for r in later] == [("ten_a", "m1", 1)]
    assert await queries.usage_rollup("ten_nobody", None, None, "day") == []


async def test_spend_so_far_per_day_and_month(sessions: Sessions, tmp_path: Path) -> None:
    queries = await store(sessions, tmp_path, sample())
    on_day_two = T0 + DAY + timedelta(hours=11, minutes=59, seconds=59, microseconds=1)
    day = await queries.spend_so_far("ten_a", "day", now=on_day_two)
    assert (day.tokens, day.cost_usd) == (2, 0.25)
    month = await queries.spend_so_far("ten_a", "month", now=on_day_two)
    assert (month.tokens, month.cost_usd) == (332, 1.75)  # shadow not counted
    next_month = await queries.spend_so_far("ten_a", "month", now=datetime(2026, 12, 1, tzinfo=UTC))
    assert (next_month.tokens, next_month.cost_usd) == (0, 0.0)
    batch = await queries.spend_so_far("ten_b", "day", now=T0)
    assert (batch.tokens, batch.cost_usd) == (10, 0.125)


async def test_records_come_in_stable_pages(sessions: Sessions, tmp_path: Path) -> None:
    # Equal timestamps on purpose: the request id breaks the tie, so no page skips a record.
    events = [usage_event(f"req_{i}", tenant_id="ten_a") for i in range(5)]
    events.append(usage_event("req_other", tenant_id="ten_b"))
    queries = await store(sessions, tmp_path, events)
    seen: list[UsageEvent] = []
    after = None
    for _ in range(5):
        page = await queries.list_records("ten_a", None, None, limit=2, after=after)
        seen.extend(page.records)
        after = page.next_cursor
        if after is None:
            break
    assert seen == events[:5]  # the whole event comes back, every column
    everything = await queries.list_records(None, T0, T0 + DAY, limit=1000)
    assert len(everything.records) == 6 and everything.next_cursor is None
    with pytest.raises(InvalidRequestError):
        await queries.list_records(None, None, None, after="not-a-cursor")
    with pytest.raises(InvalidRequestError):
        await queries.list_records(None, None, None, limit=0)
