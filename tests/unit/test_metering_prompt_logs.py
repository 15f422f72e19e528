"""Prompt logs: redacted off the request path, kept for the tenant's retention, then purged (and
shadow comparisons with them)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.usage_events import T0
from tidegate.metering import PromptLogWriter, RetentionPurger
from tidegate.store.models import PromptLog, ShadowComparison

Sessions = async_sessionmaker[AsyncSession]
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def redact_emails(text: str) -> str:
    """Stands in for gateway.redaction.Redactor().redact: same signature, one pattern."""
    return EMAIL.sub("[EMAIL]", text)


async def rows(sessions: Sessions) -> dict[str, PromptLog]:
    async with sessions() as session:
        return {row.request_id: row for row in await session.scalars(select(PromptLog))}


async def test_logged_text_is_redacted_and_expires_per_tenant(sessions: Sessions) -> None:
    writer = PromptLogWriter(
        sessions=sessions, redact=redact_emails, flush_interval_s=60, batch_size=2
    )
    writer.start()
    writer.log(
        request_id="req_1",
        tenant_id="ten_a",
        prompt="mail me at jane.doe@example.com",
        completion="sure, jane.doe@example.com",
        retention_days=7,
        created_at=T0,
    )
    writer.log(
        request_id="req_2",
        tenant_id="ten_b",
        prompt="hello",
        completion="hi",
        retention_days=30,
        created_at=T0,
    )
    writer.log(
        request_id="req_2",  # a retried request: the first text is kept
        tenant_id="ten_b",
        prompt="again",
        completion="hi",
        retention_days=30,
        created_at=T0,
    )
    await writer.stop()
    stored = await rows(sessions)
    assert set(stored) == {"req_1", "req_2"}
    assert stored["req_1"].prompt == "mail me at [EMAIL]"
    assert stored["req_1"].completion == "sure, [EMAIL]"
    assert stored["req_1"].expires_at == T0 + timedelta(days=7)
    assert stored["req_2"].prompt == "hello" and stored["req_2"].tenant_id == "ten_b"
    assert stored["req_2"].expires_at == T0 + timedelta(days=30)
    assert writer.dropped == 0


async def test_a_prompt_with_a_nul_character_is_stored_and_blocks_nothing(
    sessions: Sessions,
) -> None:
    # On PostgreSQL a NUL used to fail the insert, and the retried batch every flush after it.
    writer = PromptLogWriter(
        sessions=sessions, redact=redact_emails, flush_interval_s=60, batch_size=10
    )
    writer.log(
        request_id="req_nul",
        tenant_id="ten_a",
        prompt="a\x00b",
        completion="c\x00",
        retention_days=1,
    )
    writer.log(request_id="req_ok", tenant_id="ten_a", prompt="p", completion="c", retention_days=1)
    await writer.flush()
    stored = await rows(sessions)
    assert stored["req_nul"].prompt == "a\ufffdb" and stored["req_nul"].completion == "c\ufffd"
    assert stored["req_ok"].prompt == "p"


async def test_a_full_buffer_drops_the_oldest(sessions: Sessions) -> None:
    writer = PromptLogWriter(
        sessions=sessions, redact=redact_emails, flush_interval_s=60, batch_size=100, max_buffered=3
    )
    for i in range(5):
        writer.log(
            request_id=f"req_{i}", tenant_id="ten_a", prompt="p", completion="c", retention_days=1
        )
    await writer.flush()
    assert writer.dropped == 2
    assert sorted(await rows(sessions)) == ["req_2", "req_3", "req_4"]


async def test_purge_deletes_only_expired_rows(sessions: Sessions) -> None:
    writer = PromptLogWriter(sessions=sessions, redact=str, flush_interval_s=60, batch_size=10)
    for days, request_id in ((1, "short"), (3, "medium"), (30, "long")):
        writer.log(
            request_id=request_id,
            tenant_id="ten_a",
            prompt="p",
            completion="c",
            retention_days=days,
            created_at=T0,
        )
    await writer.flush()
    purger = RetentionPurger(sessions=sessions, interval_s=3600, chunk_size=1)
    assert await purger.purge_once(now=T0 + timedelta(hours=12)) == 0
    assert await purger.purge_once(now=T0 + timedelta(days=3)) == 2  # in chunks of one
    assert sorted(await rows(sessions)) == ["long"]


async def test_purge_deletes_expired_shadow_comparisons(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        for days, request_id in ((1, "texts-kept-a-day"), (30, "figures-only")):
            session.add(
                ShadowComparison(
                    request_id=request_id,
                    model="m",
                    tenant_id="ten_a",
                    primary_pool="a",
                    shadow_pool="b",
                    created_at=T0,
                    primary={},
                    shadow={},
                    expires_at=T0 + timedelta(days=days),
                )
            )
    purger = RetentionPurger(sessions=sessions, interval_s=3600)
    assert await purger.purge_once(now=T0 + timedelta(days=2)) == 1
    async with sessions() as session:
        left = list(await session.scalars(select(ShadowComparison.request_id)))
    assert left == ["figures-only"]


async def test_the_background_purger_runs_at_start(sessions: Sessions) -> None:
    writer = PromptLogWriter(sessions=sessions, redact=str, flush_interval_s=60, batch_size=10)
    writer.log(
        request_id="old",
        tenant_id="ten_a",
        prompt="p",
        completion="c",
        retention_days=1,
        created_at=T0,  # long expired by now
    )
    await writer.flush()
    purger = RetentionPurger(sessions=sessions, interval_s=3600)
    purger.start()
    try:
        deadline = time.monotonic() + 10
        while await _count(sessions):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await purger.stop()


async def _count(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(PromptLog)) or 0)
