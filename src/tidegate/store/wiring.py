"""Opening the store for the app's lifespan: migrate, connect, and dispose at shutdown."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tidegate.store.db import create_engine, create_sessionmaker
from tidegate.store.migrate import migrate


@dataclass(frozen=True, slots=True)
class Store:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


async def open_store(store_url: str, stack: contextlib.AsyncExitStack) -> Store:
    """Migrated to the latest schema before anything reads it."""
    await migrate(store_url)
    engine = create_engine(store_url)
    stack.push_async_callback(engine.dispose)
    return Store(engine=engine, sessions=create_sessionmaker(engine))
