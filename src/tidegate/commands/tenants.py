"""``tidegate tenants``: create, list, update and delete tenants in the configured store.

Uses the same TenantService as the admin API, acting as ``cli:<user>`` (an operator); every
change is audited. ``create`` writes only the new tenant's id to stdout, so
``TENANT=$(tidegate tenants create acme)`` works; everything else goes to stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tidegate.commands.listing import JsonOption, print_json
from tidegate.commands.policy_options import (
    NO_LIMITS,
    Extensions,
    LimitValues,
    LogPrompts,
    MaxPromptTokens,
    Models,
    SafetyPolicy,
    limit_options,
    tenant_settings_patch,
)
from tidegate.commands.store_cli import ConfigOption, day, open_store, run_command, table_console

if TYPE_CHECKING:  # the services (and the store under them) load when a command runs
    from tidegate.tenancy.policy import TenantSettings
    from tidegate.tenancy.tenants import TenantInfo

tenants_app = typer.Typer(help="Create, list, update and delete tenants.", no_args_is_help=True)

TierOption = Annotated[str | None, typer.Option("--tier", help="interactive, batch or internal.")]
TenantId = Annotated[str, typer.Argument(help="The tenant's id, from `tidegate tenants list`.")]


@tenants_app.command()
@limit_options(budgets=True)
def create(
    name: Annotated[str, typer.Argument(help="A unique name for the team or product.")],
    tier: TierOption = None,
    limits: LimitValues = NO_LIMITS,  # one option per limit kind (limit_options)
    models: Models = None,
    max_prompt_tokens: MaxPromptTokens = None,
    log_prompts: LogPrompts = None,
    extensions: Extensions = None,
    safety_policy: SafetyPolicy = None,
    config: ConfigOption = None,
) -> None:
    """Create a tenant and print its id."""
    patch = tenant_settings_patch(
        limits,
        models=models,
        max_prompt_tokens=max_prompt_tokens,
        log_prompts=log_prompts,
        extensions=extensions,
        safety_policy=safety_policy,
    )

    async def run() -> TenantInfo:
        from tidegate.tenancy.actors import Actor
        from tidegate.tenancy.tenants import DEFAULT_TIER, TenantService, merge_patch

        async with open_store(config) as (loaded, sessions):
            tenants = TenantService(
                sessions=sessions, safety_policies=loaded.safety.policies.keys()
            )
            return await tenants.create(
                name, tier or DEFAULT_TIER, merge_patch({}, patch), actor=Actor.cli()
            )

    info = run_command(run())
    typer.echo(info.id)
    Console(stderr=True).print(
        f"Created tenant {info.id} ({info.name!r}, tier {info.tier}); {_summary(info.settings)}. "
        f"Give it a key with `tidegate keys create --tenant {info.id} --name NAME`.",
        markup=False,
    )


@tenants_app.command("list")
def list_tenants(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """List tenants with their tier and limits."""

    async def run() -> list[TenantInfo]:
        from tidegate.tenancy.actors import Actor
        from tidegate.tenancy.tenants import TenantService

        async with open_store(config) as (_, sessions):
            return await TenantService(sessions=sessions).list(actor=Actor.cli())

    infos = run_command(run())
    if as_json:
        print_json(infos)
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for header in ("id", "name", "tier", "created"):
        table.add_column(header, no_wrap=header != "name", min_width=len(header))
    table.add_column("settings", overflow="fold")
    for info in infos:
        table.add_row(info.id, info.name, info.tier, day(info.created_at), _summary(info.settings))
    table_console().print(table)


@tenants_app.command()
@limit_options(budgets=True)
def update(
    tenant_id: TenantId,
    name: Annotated[str | None, typer.Option("--name", help="A new unique name.")] = None,
    tier: TierOption = None,
    limits: LimitValues = NO_LIMITS,  # one option per limit kind (limit_options)
    models: Models = None,
    max_prompt_tokens: MaxPromptTokens = None,
    log_prompts: LogPrompts = None,
    extensions: Extensions = None,
    safety_policy: SafetyPolicy = None,
    config: ConfigOption = None,
) -> None:
    """Change a tenant; options left out keep their value. Gateways apply it within
    store.key_cache_ttl_s."""
    patch = tenant_settings_patch(
        limits,
        models=models,
        max_prompt_tokens=max_prompt_tokens,
        log_prompts=log_prompts,
        extensions=extensions,
        safety_policy=safety_policy,
    )

    async def run() -> TenantInfo:
        from tidegate.tenancy.actors import Actor
        from tidegate.tenancy.tenants import TenantService

        async with open_store(config) as (loaded, sessions):
            return await TenantService(
                sessions=sessions, safety_policies=loaded.safety.policies.keys()
            ).update(tenant_id, name=name, tier=tier, settings=patch, actor=Actor.cli())

    info = run_command(run())
    Console(stderr=True).print(
        f"Updated tenant {info.id} ({info.name!r}, tier {info.tier}); {_summary(info.settings)}.",
        markup=False,
    )


@tenants_app.command()
def delete(tenant_id: TenantId, config: ConfigOption = None) -> None:
    """Delete a tenant that has no active keys (revoke them first)."""

    async def run() -> TenantInfo:
        from tidegate.tenancy.actors import Actor
        from tidegate.tenancy.tenants import TenantService

        async with open_store(config) as (_, sessions):
            return await TenantService(sessions=sessions).delete(tenant_id, actor=Actor.cli())

    info = run_command(run())
    Console(stderr=True).print(f"Deleted tenant {info.id} ({info.name!r}).", markup=False)


def _summary(settings: TenantSettings) -> str:
    """The settings that differ from the defaults, as `a.b=value` pairs."""
    changed = settings.model_dump(mode="json", exclude_defaults=True)
    pairs: list[str] = []
    for name, value in changed.items():
        if isinstance(value, dict):
            pairs += [f"{name}.{inner}={shown}" for inner, shown in value.items()]
        elif isinstance(value, list):
            pairs.append(f"{name}={','.join(str(item) for item in value)}")
        else:
            pairs.append(f"{name}={value}")
    return " ".join(pairs) or "no limits"
