"""Store fixtures: a fresh SQLite file or a fresh PostgreSQL schema per test.

Load with ``pytest_plugins = ["store_fixtures"]`` in tests/conftest.py. PostgreSQL comes from
TIDEGATE_TEST_POSTGRES_URL (default: the local server's `test` database); each pytest session
creates its own database ``tidegate_test_<random>`` there and drops it at the end, so parallel
runs do not collide. Tests using it are marked ``postgres`` and skipped when it is unreachable,
unless TIDEGATE_TEST_REQUIRE_POSTGRES is set (CI sets it).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidegate.store import create_engine, create_sessionmaker, migrate

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
T = TypeVar("T")


def run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on its own loop, away from the test's event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _asyncpg_dsn(sqlalchemy_url: str, database: str | None = None) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a database created for this pytest session."""
    base = os.environ.get("TIDEGATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    name = f"tidegate_test_{secrets.token_hex(6)}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(base), timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        run_in_thread(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("TIDEGATE_TEST_REQUIRE_POSTGRES"):  # CI: a skip would hide a failure
            raise
        pytest.skip(f"PostgreSQL at TIDEGATE_TEST_POSTGRES_URL is unavailable: {exc}")
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    run_in_thread(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def reset_postgres(url: str) -> None:
    """Empty the session database: drop every table, the Alembic version table included."""

    async def reset() -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
        try:
            await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await connection.close()

    run_in_thread(reset())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store, not yet migrated: a SQLite file or the emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store' / 'tidegate.db'}"
    url: str = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return url


@pytest.fixture
async def sessions(store_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on a migrated, empty store."""
    await migrate(store_url)
    engine = create_engine(store_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()
