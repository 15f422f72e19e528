"""What the store-backed commands (``keys``, ``tenants``) share: opening the configured store,
running a command's coroutine with errors as one line on stderr, and date formatting.

Each command loads the config and migrates the store first, so it works before the first
``tidegate up``. The CLI acts as the operator: whoever can run it holds the store's credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from tidegate.commands import listing
from tidegate.errors import TidegateError

if TYPE_CHECKING:  # the store, the config and rich load when a command runs, not for --help
    from rich.console import Console
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from tidegate.config import Config

T = TypeVar("T")

SYSTEM_TENANT_ID = "ten_system"
"""tidegate.store.models.SYSTEM_TENANT_ID (a test keeps them equal), without the store's import:
it is an option's default, needed to build the command."""

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML config file (default: TIDEGATE_CONFIG, else none)."),
]


@asynccontextmanager
async def open_store(
    config_path: Path | None,
) -> AsyncIterator[tuple[Config, async_sessionmaker[AsyncSession]]]:
    from tidegate.config import load_config
    from tidegate.store import create_engine, create_sessionmaker, migrate

    config = load_config(config_path)
    await migrate(config.store_url)
    engine = create_engine(config.store_url)
    try:
        yield config, create_sessionmaker(engine)
    finally:
        await engine.dispose()


def run_command(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; known failures become one line on stderr and exit code 1."""
    from pydantic import ValidationError
    from rich.console import Console

    try:
        return asyncio.run(coro)
    except TidegateError as exc:
        message = exc.message
    except FileNotFoundError as exc:
        message = str(exc)
    except ValidationError as exc:
        message = f"invalid configuration: {exc}"
    Console(stderr=True).print(f"error: {message}", markup=False, style="red")
    raise typer.Exit(1)


def table_console() -> Console:
    # Piped output keeps whole rows instead of wrapping at the default 80 columns.
    return listing.table_console()


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def day(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment is not None else "-"
