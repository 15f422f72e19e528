"""``tidegate keys``: create, list and revoke API keys in the configured store.

Uses the same KeyService as the gateway, acting as ``cli:<user>`` (an operator); every change
is audited. ``create`` writes only the key to stdout, so ``KEY=$(tidegate keys create --name
ci)`` works; everything else goes to stderr.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from tidegate.commands.listing import JsonOption, print_json
from tidegate.commands.policy_options import (
    NO_LIMITS,
    LimitValues,
    Models,
    key_settings_patch,
    limit_options,
)
from tidegate.commands.store_cli import (
    SYSTEM_TENANT_ID,
    ConfigOption,
    day,
    open_store,
    run_command,
    table_console,
    when,
)

if TYPE_CHECKING:  # the services (and the store under them) load when a command runs
    from tidegate.tenancy.keys import ApiKeyInfo

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


class RoleChoice(StrEnum):
    member = "member"
    admin = "admin"


@keys_app.command()
@limit_options(budgets=False)
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    role: Annotated[
        RoleChoice, typer.Option("--role", help="Admins may manage their tenant's keys.")
    ] = RoleChoice.member,
    tenant: Annotated[
        str,
        typer.Option(
            "--tenant",
            help="The tenant's id (`tidegate tenants list`). Default: the system tenant, whose "
            "admin keys manage every tenant.",
        ),
    ] = SYSTEM_TENANT_ID,
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Days until the key expires.")
    ] = None,
    limits: LimitValues = NO_LIMITS,  # one option per rate kind (limit_options)
    models: Models = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from tidegate.tenancy.actors import Actor
    from tidegate.tenancy.keys import KeyService
    from tidegate.tenancy.tenants import merge_patch

    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    settings = merge_patch({}, key_settings_patch(limits, models=models))

    async def run() -> tuple[ApiKeyInfo, str]:
        async with open_store(config) as (cfg, sessions):
            keys = KeyService(sessions=sessions, cache_ttl_s=cfg.store.key_cache_ttl_s)
            return await keys.create(
                name, role.value, tenant, expires_at, settings, actor=Actor.cli()
            )

    info, plaintext = run_command(run())
    typer.echo(plaintext)
    err = Console(stderr=True)
    err.print(
        f"Created {info.id} ({info.role}) for {info.name!r} in tenant {info.tenant_id}.",
        markup=False,
    )
    err.print("Store the key now: tidegate keeps only its hash and cannot show it again.")


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's keys.")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List keys (never the keys themselves: only their first characters)."""
    from rich import box
    from rich.table import Table

    from tidegate.tenancy.actors import Actor
    from tidegate.tenancy.keys import KeyService

    async def run() -> list[ApiKeyInfo]:
        async with open_store(config) as (cfg, sessions):
            keys = KeyService(sessions=sessions, cache_ttl_s=cfg.store.key_cache_ttl_s)
            return await keys.list(tenant_id=tenant, actor=Actor.cli())

    infos = run_command(run())
    now = datetime.now(UTC)
    if as_json:
        print_json([{**_fields(info), "status": info.status(now)} for info in infos])
        return
    console = table_console()
    if not infos:
        console.print("No keys yet. Create one with `tidegate keys create --name NAME`.")
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for header in ("id", "name", "tenant", "prefix", "role", "created", "expires", "revoked"):
        table.add_column(header, no_wrap=header != "name", min_width=len(header), overflow="fold")
    table.add_column("last used", no_wrap=True, min_width=10)
    for info in infos:
        table.add_row(
            info.id,
            info.name,
            info.tenant_id,
            info.prefix,
            info.role,
            day(info.created_at),
            day(info.expires_at) + (" (expired)" if info.status(now) == "expired" else ""),
            day(info.revoked_at),
            day(info.last_used_at),
        )
    console.print(table)


@keys_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `tidegate keys list`.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key; gateways stop accepting it within store.key_cache_ttl_s."""
    from tidegate.tenancy.actors import Actor
    from tidegate.tenancy.keys import KeyService

    async def run() -> ApiKeyInfo:
        async with open_store(config) as (cfg, sessions):
            keys = KeyService(sessions=sessions, cache_ttl_s=cfg.store.key_cache_ttl_s)
            return await keys.revoke(key_id, actor=Actor.cli())

    info = run_command(run())
    Console(stderr=True).print(
        f"Revoked {info.id} ({info.name!r}) at {when(info.revoked_at)} UTC.", markup=False
    )


def _fields(info: ApiKeyInfo) -> dict[str, object]:
    return {name: getattr(info, name) for name in type(info).__dataclass_fields__}
