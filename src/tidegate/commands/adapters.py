"""``tidegate adapters``: add, remove and list LoRA adapters in the configured store.

Uses the adapter service the admin API uses, acting as ``cli:<user>`` (an operator), so every
change is checked against the config's routing table and audited. Running gateways load an
added adapter on their replicas (and unload a removed one) within rollouts.sync_interval_s;
``POST /admin/adapters`` does it at once and reports each replica's load.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tidegate.commands.listing import JsonOption, print_json
from tidegate.commands.store_cli import ConfigOption, open_store, run_command, table_console
from tidegate.errors import InvalidRequestError

if TYPE_CHECKING:
    from tidegate.rollout.adapters import AdapterInfo, AdapterService

adapters_app = typer.Typer(help="Add, remove and list LoRA adapters.", no_args_is_help=True)


@asynccontextmanager
async def _service(config_path: Path | None) -> AsyncIterator[AdapterService]:
    from tidegate.rollout.adapter_sync import add_stored_adapters
    from tidegate.rollout.adapters import AdapterService
    from tidegate.routing.build import build_routing

    async with open_store(config_path) as (config, sessions):
        try:
            routing = build_routing(config)
        except ValueError as exc:
            raise InvalidRequestError(f"invalid routing configuration: {exc}") from None
        await add_stored_adapters(config, routing, sessions)
        yield AdapterService(config=config, sessions=sessions, routing=routing, sync=None)


def _row(info: AdapterInfo) -> dict[str, Any]:
    spec = info.spec
    return {
        "id": spec.target,
        "name": spec.name,
        "version": spec.version,
        "pool": spec.pool,
        "source": spec.source,
        "configured": spec.configured,
    }


@adapters_app.command()
def add(
    name: Annotated[str, typer.Argument(help="The public model name clients will send.")],
    path: Annotated[
        str | None, typer.Option("--path", help="The adapter directory, as engines see it.")
    ] = None,
    hub_id: Annotated[str | None, typer.Option("--hub-id", help="A hub id instead.")] = None,
    version: Annotated[str, typer.Option("--version", help="A version label.")] = "",
    pool: Annotated[str | None, typer.Option("--pool", help="The base pool.")] = None,
    config: ConfigOption = None,
) -> None:
    """Add an adapter version (served by every gateway within its sync interval)."""
    from tidegate.protocol.adapters import parse_adapter
    from tidegate.protocol.requests import RequestValidationFailure

    body: dict[str, Any] = {"name": name, "version": version, "pool": pool}
    body.update(path=path, hub_id=hub_id)
    try:
        change = parse_adapter({k: v for k, v in body.items() if v is not None})
    except RequestValidationFailure as failure:
        raise typer.BadParameter(failure.message) from None

    async def run() -> AdapterInfo:
        from tidegate.tenancy.actors import Actor

        async with _service(config) as service:
            return await service.add(change, actor=Actor.cli())

    info = run_command(run())
    typer.echo(f"added {info.spec.target} on pool {info.spec.pool} ({info.spec.source})")


@adapters_app.command()
def remove(
    name: Annotated[str, typer.Argument(help="The adapter version: NAME or NAME@VERSION.")],
    config: ConfigOption = None,
) -> None:
    """Remove a runtime adapter version (engines unload it within the sync interval)."""

    async def run() -> str:
        from tidegate.tenancy.actors import Actor

        async with _service(config) as service:
            return (await service.remove(name, actor=Actor.cli())).target

    typer.echo(f"removed {run_command(run())}")


@adapters_app.command("list")
def list_adapters(config: ConfigOption = None, json: JsonOption = False) -> None:
    """The configured and runtime adapter versions."""

    async def run() -> list[AdapterInfo]:
        async with _service(config) as service:
            return await service.list()

    rows = [_row(info) for info in run_command(run())]
    if json:
        print_json(rows)
        return
    from rich.table import Table

    columns = ("id", "name", "version", "pool", "source", "configured")
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[key]) for key in columns))
    table_console().print(table)
