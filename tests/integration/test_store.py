"""Migrations on real databases: fresh, repeated, concurrent, and in step with the models."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from tidegate.store import StoreError, StoreUnavailableError, create_engine, migrate
from tidegate.store.migrate import MIGRATIONS_DIR
from tidegate.store.models import Base

HEAD = "0007"
PREVIOUS = "0006"


async def schema_state(url: str) -> tuple[list[str], list[str], list[tuple[object, ...]]]:
    """Table names, alembic versions and the differences between the models and the database."""

    def read(connection: Connection) -> tuple[list[str], list[str], list[tuple[object, ...]]]:
        tables = sorted(inspect(connection).get_table_names())
        versions = [row[0] for row in connection.execute(text("SELECT * FROM alembic_version"))]
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        return tables, versions, diff

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def test_migrate_creates_the_schema_and_is_idempotent(store_url: str) -> None:
    await migrate(store_url)
    await migrate(store_url)
    tables, versions, diff = await schema_state(store_url)
    assert tables == [
        "alembic_version",
        "api_keys",
        "audit_log",
        "batch_lines",
        "batches",
        "files",
        "leases",
        "lora_adapters",
        "model_versions",
        "prompt_logs",
        "rollout_step_stats",
        "rollouts",
        "shadow_comparisons",
        "tenants",
        "traffic_policies",
        "usage_records",
    ]
    assert versions == [HEAD]
    assert diff == [], "models and migrations disagree; add a migration"


async def test_the_latest_migration_goes_down_and_up_again(store_url: str) -> None:
    await migrate(store_url)

    def step(connection: Connection, target: str) -> None:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        (command.downgrade if target != "head" else command.upgrade)(config, target)

    engine = create_engine(store_url)
    try:
        for target in (PREVIOUS, "head"):
            async with engine.begin() as connection:
                await connection.run_sync(step, target)
    finally:
        await engine.dispose()
    _, versions, diff = await schema_state(store_url)
    assert versions == [HEAD] and diff == []


async def test_concurrent_migrations_in_one_process(store_url: str) -> None:
    await asyncio.gather(*(migrate(store_url) for _ in range(4)))
    assert (await schema_state(store_url))[1] == [HEAD]


async def test_concurrent_migrations_in_separate_processes(store_url: str) -> None:
    # Every process waits for the same moment after its imports, so the upgrades really overlap.
    script = (
        "import asyncio, sys, time; from tidegate.store import migrate; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
        "asyncio.run(migrate(sys.argv[1]))"
    )
    start_at = str(time.time() + 3.0)
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, store_url, start_at, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(4)
    ]
    for process in processes:
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
    assert (await schema_state(store_url))[1] == [HEAD]


async def test_concurrent_migrations_of_different_databases(tmp_path: Path) -> None:
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'db{i}.db'}" for i in range(3)]
    await asyncio.gather(*(migrate(url) for url in urls))
    for url in urls:
        assert (await schema_state(url))[1] == [HEAD]


async def test_migrate_creates_the_sqlite_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tidegate.db"
    await migrate(f"sqlite+aiosqlite:///{path}")
    assert path.is_file()


async def test_unreachable_database_is_a_store_error() -> None:
    with pytest.raises(StoreUnavailableError, match="unavailable"):
        await migrate("postgresql+asyncpg://postgres@127.0.0.1:1/none")


async def test_malformed_url_is_a_store_error_without_the_url() -> None:
    with pytest.raises(StoreError) as caught:
        await migrate("not a url with s3cret")
    assert "s3cret" not in str(caught.value)


def test_migrations_ship_with_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_api_keys.py").is_file()
