"""Counting what a store actually runs: for tests that check a path stays off the database."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


def count_statements(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    """Every SQL statement the store runs from now on, appended as it runs."""
    seen: list[str] = []
    engine = sessions.kw["bind"]
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: seen.append(statement),
    )
    return seen
