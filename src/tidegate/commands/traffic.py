"""``tidegate traffic``: show and change a model's traffic split and shadow, roll back, and list
its versions, in the configured store.

Uses the same services as the admin API, acting as ``cli:<user>`` (an operator), so every change
is checked against the config's routing table and audited. Running gateways apply a change
within rollouts.sync_interval_s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tidegate.commands.listing import JsonOption, print_json
from tidegate.commands.store_cli import ConfigOption, open_store, run_command, table_console, when
from tidegate.errors import InvalidRequestError

if TYPE_CHECKING:  # the services (and the store, routing under them) load when a command runs
    from tidegate.config import Config
    from tidegate.rollout.policies import RollbackResult, TrafficInfo, TrafficPolicies
    from tidegate.rollout.versions import VersionInfo, VersionService

traffic_app = typer.Typer(
    help="Show and change traffic splits and shadows, roll back, list versions.",
    no_args_is_help=True,
)

Model = Annotated[str, typer.Argument(help="The public model name clients send.")]


@asynccontextmanager
async def _services(
    config_path: Path | None,
) -> AsyncIterator[tuple[Config, TrafficPolicies, VersionService]]:
    from tidegate.rollout.adapter_sync import add_stored_adapters
    from tidegate.rollout.policies import TrafficPolicies
    from tidegate.rollout.versions import VersionService
    from tidegate.routing.build import build_routing

    async with open_store(config_path) as (config, sessions):
        try:
            routing = build_routing(config)
        except ValueError as exc:
            raise InvalidRequestError(f"invalid routing configuration: {exc}") from None
        await add_stored_adapters(config, routing, sessions)
        yield (
            config,
            TrafficPolicies(sessions=sessions, routing=routing, sync=None),
            VersionService(sessions=sessions, keep=config.rollouts.keep_versions, routing=routing),
        )


@traffic_app.command()
def show(model: Model, config: ConfigOption = None) -> None:
    """The model's split, stable pool, shadow and active rollout."""

    async def run() -> TrafficInfo:
        async with _services(config) as (_, policies, _versions):
            return await policies.get(model)

    print_traffic(run_command(run()))


@traffic_app.command()
def split(
    model: Model,
    weights: Annotated[
        list[str],
        typer.Argument(
            help="POOL=WEIGHT pairs, for example candidate=5 stable=95. The first pool takes "
            "the low end of the sticky hash space: list a candidate first.",
        ),
    ],
    sticky: Annotated[
        str | None, typer.Option("--sticky", help="session (the default) or tenant.")
    ] = None,
    stable: Annotated[
        str | None,
        typer.Option("--stable", help="Where a rollback sends everything (default: kept)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Divide the model's traffic between pools by weight."""
    pairs = [_weight(item) for item in weights]

    async def run() -> tuple[Config, TrafficInfo]:
        from tidegate.tenancy.actors import Actor

        async with _services(config) as (settings, policies, _versions):
            info = await policies.set_split(model, pairs, sticky, stable, actor=Actor.cli())
            return settings, info

    settings, info = run_command(run())
    print_traffic(info)
    _applied_note(settings)


@traffic_app.command()
def shadow(
    model: Model,
    pool: Annotated[str | None, typer.Argument(help="The pool mirrored requests go to.")] = None,
    sample: Annotated[
        float, typer.Option("--sample", help="The share of requests mirrored, 0 to 1.")
    ] = 0.1,
    off: Annotated[bool, typer.Option("--off", help="Stop mirroring.")] = False,
    config: ConfigOption = None,
) -> None:
    """Mirror a sample of the model's requests to a shadow pool (or stop with --off)."""
    if off == (pool is not None):
        raise typer.BadParameter("name a POOL to mirror to, or pass --off (not both)")

    async def run() -> tuple[Config, TrafficInfo]:
        from tidegate.tenancy.actors import Actor

        async with _services(config) as (settings, policies, _versions):
            info = await policies.set_shadow(model, pool, sample, actor=Actor.cli())
            return settings, info

    settings, info = run_command(run())
    print_traffic(info)
    _applied_note(settings)


@traffic_app.command()
def rollback(model: Model, config: ConfigOption = None) -> None:
    """Send all of the model's traffic to its stable pool; ends its active rollout."""

    async def run() -> tuple[Config, RollbackResult]:
        from tidegate.tenancy.actors import Actor

        async with _services(config) as (settings, policies, _versions):
            return settings, await policies.rollback(model, actor=Actor.cli())

    settings, result = run_command(run())
    ended = f"; rollout {', '.join(result.rolled_back)} rolled back" if result.rolled_back else ""
    Console(stderr=True).print(
        f"All traffic of {model} goes to {result.traffic.stable_pool}{ended}.", markup=False
    )
    _applied_note(settings)


@traffic_app.command()
def versions(model: Model, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The model's version records, newest first."""

    async def run() -> list[VersionInfo]:
        async with _services(config) as (_, _policies, service):
            return await service.list(model)

    infos = run_command(run())
    if as_json:
        print_json(infos)
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for header in ("id", "pool", "source", "revision", "profile", "created", "by"):
        table.add_column(header, overflow="fold" if header == "source" else "ellipsis")
    for info in infos:
        table.add_row(
            info.id,
            info.pool,
            info.source,
            info.revision or "-",
            info.profile_hash or "-",
            when(info.created_at),
            info.created_by,
        )
    table_console().print(table)


def print_traffic(info: TrafficInfo) -> None:
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for header in ("pool", "weight", "share", "role"):
        table.add_column(header)
    shares = info.shares()
    pools = [pool for pool, _ in info.weights]
    for extra in (info.stable_pool, info.shadow_pool):
        if extra and extra not in pools:
            pools.append(extra)
    weights = dict(info.weights)
    for pool in pools:
        roles = [
            role
            for role, name in (("stable", info.stable_pool), ("shadow", info.shadow_pool))
            if name == pool
        ]
        if info.rollout is not None and pool == info.rollout.candidate_pool:
            roles.append("candidate")
        weight = weights.get(pool)
        table.add_row(
            pool,
            "-" if weight is None else f"{weight:g}",
            f"{shares.get(pool, 0.0):.1%}" if shares else "-",
            ", ".join(roles),
        )
    console = table_console()
    console.print(f"{info.model}", markup=False)
    console.print(table)
    console.print(_summary(info), markup=False)


def _summary(info: TrafficInfo) -> str:
    parts = [
        f"split: {'none (the route serves)' if not info.weights else 'sticky by ' + info.sticky_by}"
    ]
    if info.shadow_pool is not None:
        parts.append(f"shadow: {info.shadow_pool} at {info.shadow_sample:.0%}")
    if info.rollout is not None:
        state = "running" if info.rollout.running else "paused"
        parts.append(f"rollout {info.rollout.id} {state} at step {info.rollout.step_index + 1}")
    parts.append(f"revision {info.revision}")
    if info.updated_by:
        parts.append(f"changed {when(info.updated_at)} by {info.updated_by}")
    return "; ".join(parts)


def _weight(item: str) -> tuple[str, float]:
    pool, sep, value = item.rpartition("=")
    try:
        if not sep or not pool:
            raise ValueError
        return pool, float(value)
    except ValueError:
        raise typer.BadParameter(f"{item!r} is not POOL=WEIGHT (for example stable=95)") from None


def _applied_note(config: Config) -> None:
    Console(stderr=True).print(
        f"Running gateways apply it within {config.rollouts.sync_interval_s:g} s.", markup=False
    )
