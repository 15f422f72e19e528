"""Metering for the app's lifespan: the usage meter (replaying what a crashed process left),
the prompt log writer and the retention purger. First in, last out: every request served is
metered and flushed before the store closes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.config import Config
from tidegate.metering.meter import UsageMeter
from tidegate.metering.prompt_logs import PromptLogWriter
from tidegate.metering.queries import UsageQueries
from tidegate.metering.retention import RetentionPurger


@dataclass(frozen=True, slots=True)
class Metering:
    meter: UsageMeter
    prompt_logs: PromptLogWriter
    usage: UsageQueries


async def wire_metering(
    config: Config,
    stack: contextlib.AsyncExitStack,
    sessions: async_sessionmaker[AsyncSession],
    *,
    redact: Callable[[str], str],
) -> Metering:
    """``redact``: applied to prompts before they are logged."""
    settings = config.metering
    meter = UsageMeter(
        sessions=sessions,
        wal_dir=config.wal_dir,
        flush_interval_s=settings.flush_interval_s,
        batch_size=settings.batch_size,
        max_backlog_bytes=settings.wal_max_bytes,
    )
    await meter.start()
    stack.push_async_callback(meter.stop)
    prompt_logs = PromptLogWriter(
        sessions=sessions,
        redact=redact,
        flush_interval_s=settings.flush_interval_s,
        batch_size=settings.batch_size,
    )
    prompt_logs.start()
    stack.push_async_callback(prompt_logs.stop)
    purger = RetentionPurger(sessions=sessions, interval_s=settings.purge_interval_s)
    purger.start()
    stack.push_async_callback(purger.stop)
    return Metering(meter=meter, prompt_logs=prompt_logs, usage=UsageQueries(sessions=sessions))
