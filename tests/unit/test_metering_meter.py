"""UsageMeter on the real store (SQLite and PostgreSQL): batches, idempotent replays, crash
leftovers, a store outage, and the hot-path cost of record()."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.sql_statements import count_statements
from tests.support.usage_events import stored_count, stored_ids, stored_record, usage_event
from tidegate.metering import UsageMeter
from tidegate.store import StoreUnavailableError, create_engine, create_sessionmaker

Sessions = async_sessionmaker[AsyncSession]


def meter(sessions: Sessions, wal: Path, *, interval: float = 60.0, batch: int = 100) -> UsageMeter:
    return UsageMeter(sessions=sessions, wal_dir=wal, flush_interval_s=interval, batch_size=batch)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def segments(wal: Path) -> list[Path]:
    return sorted(wal.glob("*.wal"))


async def test_a_full_batch_is_flushed_before_the_interval(
    sessions: Sessions, tmp_path: Path
) -> None:
    wal = tmp_path / "wal"
    usage = meter(sessions, wal, interval=60.0, batch=10)
    await usage.start()
    for i in range(25):
        usage.record(usage_event(f"req_{i:03d}"))
    # 25 >= 10 woke the flusher at once: the rows arrive long before the 60 s interval.
    await eventually(lambda: _at_least(sessions, 25))
    assert usage.pending_events == 0
    await usage.stop()
    assert sorted(await stored_ids(sessions)) == [f"req_{i:03d}" for i in range(25)]
    assert list(wal.iterdir()) == []  # segments retired, lock released


async def test_the_interval_flushes_a_partial_batch(sessions: Sessions, tmp_path: Path) -> None:
    usage = meter(sessions, tmp_path / "wal", interval=0.05, batch=1000)
    await usage.start()
    try:
        for i in range(3):
            usage.record(usage_event(f"req_{i}"))
        await eventually(lambda: _at_least(sessions, 3))
        row = await stored_record(sessions, "req_1")
        assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens) == (10, 2, 5)
        assert row.created_at == usage_event("x").created_at and row.kind == "live"
    finally:
        await usage.stop()


async def test_records_written_twice_are_stored_once(sessions: Sessions, tmp_path: Path) -> None:
    first = meter(sessions, tmp_path / "a")
    await first.start()
    for i in range(5):
        first.record(usage_event(f"req_{i}", completion_tokens=i))
    first.record(usage_event("req_0", completion_tokens=99))  # a duplicate within one batch
    await first.flush()
    second = meter(sessions, tmp_path / "b")
    await second.start()
    for i in range(5):
        second.record(usage_event(f"req_{i}", completion_tokens=50))
    await second.stop()
    await first.stop()
    assert await stored_count(sessions) == 5
    assert (await stored_record(sessions, "req_0")).completion_tokens == 0  # the first one wins


async def test_leftovers_of_a_crashed_process_are_replayed_at_start(
    sessions: Sessions, tmp_path: Path
) -> None:
    # A batch larger than what it records: reaching batch_size wakes the flush, which could
    # store part of the events before the count below looks.
    crashed = meter(sessions, tmp_path / "live", batch=1000)
    await crashed.start()
    for i in range(250):
        crashed.record(usage_event(f"req_{i:03d}"))
    assert await stored_count(sessions) == 0  # never flushed
    # What a crashed process leaves: its segments, and no live lock on them.
    leftovers = tmp_path / "after-crash"
    leftovers.mkdir()
    copied = [shutil.copy(path, leftovers / path.name) for path in segments(tmp_path / "live")]
    assert copied

    fresh = meter(sessions, leftovers, batch=100)
    await fresh.start()  # replays before it returns
    assert await stored_count(sessions) == 250
    assert not any(Path(path).exists() for path in copied)
    await fresh.stop()
    assert list(leftovers.iterdir()) == []
    await crashed.stop()  # the same events again: still one row each
    assert await stored_count(sessions) == 250


async def test_a_live_process_segments_are_not_replayed_by_a_neighbour(
    sessions: Sessions, tmp_path: Path
) -> None:
    wal = tmp_path / "shared-wal"
    first = meter(sessions, wal)
    await first.start()
    first.record(usage_event("req_first"))
    second = meter(sessions, wal)
    await second.start()
    second.record(usage_event("req_second"))
    assert await stored_count(sessions) == 0
    assert len(segments(wal)) == 2  # one per owner, never a shared file
    await second.stop()
    assert await stored_ids(sessions) == ["req_second"]
    await first.stop()
    assert sorted(await stored_ids(sessions)) == ["req_first", "req_second"]
    assert list(wal.iterdir()) == []


async def test_a_store_outage_keeps_events_on_disk_for_the_next_start(
    sessions: Sessions, tmp_path: Path
) -> None:
    wal = tmp_path / "wal"
    down = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        usage = meter(create_sessionmaker(down), wal, batch=4)
        await usage.start()
        for i in range(10):
            usage.record(usage_event(f"req_{i}"))
        with pytest.raises(StoreUnavailableError):
            await usage.flush()
        assert usage.pending_events == 10
        await usage.stop()  # logs and keeps the segment
    finally:
        await down.dispose()
    assert len(segments(wal)) == 1

    restarted = meter(sessions, wal)
    await restarted.start()
    assert await stored_count(sessions) == 10
    await restarted.stop()
    assert list(wal.iterdir()) == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_record_does_no_store_work_on_the_request_path(
    sessions: Sessions, tmp_path: Path
) -> None:
    # record() costs one WAL append (its speed is in the overhead benchmark): nothing reaches
    # the store until the flusher runs, and then every record does.
    usage = meter(sessions, tmp_path / "wal", batch=100_000)
    await usage.start()
    statements = count_statements(sessions)
    events = [usage_event(f"req_{i:06d}") for i in range(20_000)]
    for event in events:
        usage.record(event)
    assert statements == []
    await usage.stop()
    assert await stored_count(sessions) == len(events)


async def test_record_refuses_before_start(sessions: Sessions, tmp_path: Path) -> None:
    usage = meter(sessions, tmp_path / "wal")
    with pytest.raises(RuntimeError, match="before start"):
        usage.record(usage_event("req_1"))


async def _at_least(sessions: Sessions, count: int) -> bool:
    return await stored_count(sessions) >= count


async def test_a_store_outage_is_retried_with_backoff_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = tmp_path / "wal"
    down = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        usage = meter(create_sessionmaker(down), wal, interval=0.05, batch=4)
        await usage.start()
        with caplog.at_level("WARNING"):
            started = time.monotonic()
            while time.monotonic() - started < 1.6:  # 32 flush intervals
                usage.record(usage_event(f"req_{time.monotonic_ns()}"))
                await asyncio.sleep(0.02)
            attempts = sum("usage-flush" in r.getMessage() for r in caplog.records)
            kept = [r for r in caplog.records if "retried with backoff" in r.getMessage()]
            # 0.1 + 0.2 + 0.4 + 0.8 s between attempts: 5 or so, not one per interval.
            assert 2 <= attempts <= 6, attempts
            assert len(kept) == 1  # said once when the outage began
            assert usage.pending_segments >= 1 and segments(wal)
        await usage.stop()
    finally:
        await down.dispose()
