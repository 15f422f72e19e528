"""Engines, sessions and transactions for SQLite and PostgreSQL.

SQLite: every transaction starts with ``BEGIN IMMEDIATE``, so writers queue on the busy timeout
instead of failing when a deferred read lock cannot be upgraded, and DDL is transactional (the
pysqlite driver's own transaction handling is switched off, as SQLAlchemy's docs recommend).
WAL lets readers run while one process writes.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tidegate.store.errors import StoreError, translating_errors

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's write transaction to finish."""


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url` (sqlite+aiosqlite:// or postgresql+asyncpg://).

    Creates the parent directory of a SQLite file. Statement parameters are never rendered into
    logs or error messages (they can hold key hashes).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # The URL is not echoed: it may carry a password.
        raise StoreError(
            "store.url is not a SQLAlchemy URL; use sqlite+aiosqlite:///PATH or "
            "postgresql+asyncpg://USER@HOST:5432/DB."
        ) from exc
    is_sqlite = parsed.get_backend_name() == "sqlite"
    with translating_errors("open the store"):
        if is_sqlite:
            _make_parent_dir(parsed.database)
            kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: values read in a transaction stay usable after it commits.
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession], action: str
) -> AsyncIterator[AsyncSession]:
    """One committed transaction; store failures inside it surface as StoreError.

    `action` completes "while trying to ..." in the error message.
    """
    with translating_errors(action):
        async with sessions.begin() as session:
            yield session


async def lock(session: AsyncSession, name: str) -> None:
    """Serialise transactions that use the same `name` until the current one ends.

    PostgreSQL takes a transaction-scoped advisory lock; SQLite needs nothing more because
    ``BEGIN IMMEDIATE`` already admits one writer at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})


def _make_parent_dir(database: str | None) -> None:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def lock_key(name: str) -> int:
    return zlib.crc32(f"tidegate:{name}".encode())


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see _sqlite_on_begin
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
