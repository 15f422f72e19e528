"""Bring a database to the newest schema with the Alembic migrations shipped in this package.

``migrate(url)`` runs at every start and from every CLI command that touches the store, so it
must be cheap when there is nothing to do and safe when several processes start at once: the
upgrade runs inside one transaction that first takes a lock (a PostgreSQL advisory lock; on
SQLite, ``BEGIN IMMEDIATE``), and the loser of the race then finds the version table at head.
Transient failures are retried a few times.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tidegate.store.db import create_engine, lock_key
from tidegate.store.errors import StoreError, StoreUnavailableError, translating_errors

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
ATTEMPTS = 3

# Alembic keeps the running migration context in module globals, so two upgrades interleaved in
# one process (even on different databases) corrupt each other: run them one at a time.
_ALEMBIC_LOCK = threading.Lock()


async def migrate(url: str) -> None:
    """Upgrade the database at `url` to the newest revision (alembic upgrade head).

    Creates a SQLite file and its directory when missing. Raises StoreUnavailableError when the
    database cannot be reached, StoreError when the schema cannot be brought up to date.
    """
    # A worker thread with its own loop may block on the lock without stalling the caller's loop.
    await asyncio.to_thread(_migrate_in_thread, url)


def _migrate_in_thread(url: str) -> None:
    with _ALEMBIC_LOCK:
        asyncio.run(_migrate(url))


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await _upgrade(engine)
                return
            except StoreUnavailableError:
                if attempt == ATTEMPTS:
                    raise
                await asyncio.sleep(0.2 * attempt)
    finally:
        await engine.dispose()


async def _upgrade(engine: AsyncEngine) -> None:
    with translating_errors("migrate the schema"):
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key("migrate")}
                )
            await connection.run_sync(_upgrade_sync)


def _upgrade_sync(connection: Connection) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection  # env.py runs on this connection
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        # Typically a database written by a newer tidegate, at a revision this one lacks.
        raise StoreError(
            f"Cannot migrate the store: {exc}. Run the tidegate version that last used this "
            "database, or a newer one."
        ) from exc
