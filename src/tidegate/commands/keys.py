"""``tidegate keys``: create, list and revoke API keys in the configured store.

Each command loads the config, migrates the store (so it works before the first ``tidegate
up``) and uses the same KeyService the gateway does. ``create`` writes only the key to stdout,
so ``KEY=$(tidegate keys create --name ci)`` works; everything else goes to stderr.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table

from tidegate.config import load_config
from tidegate.errors import TidegateError
from tidegate.gateway.keys import ApiKeyInfo, KeyService
from tidegate.store import create_engine, create_sessionmaker, migrate

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

T = TypeVar("T")


class RoleChoice(StrEnum):
    member = "member"
    admin = "admin"


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML config file (default: TIDEGATE_CONFIG, else none)."),
]


@keys_app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    role: Annotated[RoleChoice, typer.Option("--role", help="Admins may manage keys.")] = (
        RoleChoice.member
    ),
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Days until the key expires.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None

    async def run() -> tuple[ApiKeyInfo, str]:
        async with _key_service(config) as keys:
            return await keys.create(name, role.value, expires_at)

    info, plaintext = _run(run())
    typer.echo(plaintext)
    err = Console(stderr=True)
    err.print(f"Created {info.id} ({info.role}) for {info.name!r}.", markup=False)
    err.print("Store the key now: tidegate keeps only its hash and cannot show it again.")


@keys_app.command("list")
def list_keys(config: ConfigOption = None) -> None:
    """List keys (never the keys themselves: only their first characters)."""

    async def run() -> list[ApiKeyInfo]:
        async with _key_service(config) as keys:
            return await keys.list()

    infos = _run(run())
    # Piped output keeps whole rows instead of wrapping at the default 80 columns.
    console = Console() if Console().is_terminal else Console(width=200)
    if not infos:
        console.print("No keys yet. Create one with `tidegate keys create --name NAME`.")
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for header in ("id", "name", "prefix", "role", "created", "expires", "revoked"):
        table.add_column(header, no_wrap=header != "name", min_width=len(header), overflow="fold")
    table.add_column("last used", no_wrap=True, min_width=10)
    now = datetime.now(UTC)
    for info in infos:
        table.add_row(
            info.id,
            info.name,
            info.prefix,
            info.role,
            _day(info.created_at),
            _day(info.expires_at) + (" (expired)" if info.status(now) == "expired" else ""),
            _day(info.revoked_at),
            _day(info.last_used_at),
        )
    console.print(table)


@keys_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `tidegate keys list`.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key; gateways stop accepting it within store.key_cache_ttl_s."""

    async def run() -> ApiKeyInfo:
        async with _key_service(config) as keys:
            return await keys.revoke(key_id)

    info = _run(run())
    Console(stderr=True).print(
        f"Revoked {info.id} ({info.name!r}) at {_when(info.revoked_at)} UTC.", markup=False
    )


@asynccontextmanager
async def _key_service(config_path: Path | None) -> AsyncIterator[KeyService]:
    config = load_config(config_path)
    await migrate(config.store_url)
    engine = create_engine(config.store_url)
    try:
        yield KeyService(
            sessions=create_sessionmaker(engine), cache_ttl_s=config.store.key_cache_ttl_s
        )
    finally:
        await engine.dispose()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; known failures become one line on stderr and exit code 1."""
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


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def _day(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment is not None else "-"
