"""``tidegate rollout``: start, watch and steer staged rollouts in the configured store.

Uses the same RolloutService as the admin API, acting as ``cli:<user>`` (an operator); every
change is audited. Pool names are checked against the routing table the config describes. The
gateways apply a change within ``rollouts.sync_interval_s``; the controller of one of them makes
the automatic moves. ``start`` writes only the new rollout's id to stdout, so
``ROLLOUT=$(tidegate rollout start ...)`` works.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tidegate.commands.listing import JsonOption, print_json
from tidegate.commands.store_cli import ConfigOption, open_store, run_command, table_console, when
from tidegate.errors import InvalidRequestError

if TYPE_CHECKING:  # the service (and the store, routing under it) loads when a command runs
    from tidegate.rollout.gates import GateResult, Gates
    from tidegate.rollout.report import ReportFormat
    from tidegate.rollout.rollouts import Operation, RolloutService, RolloutStatus
    from tidegate.rollout.transitions import RolloutInfo

rollout_app = typer.Typer(
    help="Start, watch and steer staged model rollouts.", no_args_is_help=True
)
err = Console(stderr=True)
T = TypeVar("T")

RolloutId = Annotated[str, typer.Argument(help="The rollout's id, from `tidegate rollout list`.")]
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from ``30s``, ``10m``, ``1h`` or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"use a duration like 30s, 10m or 1h (got {text!r})")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_steps(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"use percentages like 5,25,100 (got {text!r})") from None


async def _service(config_path: Path | None, run: Callable[[RolloutService], Awaitable[T]]) -> T:
    """Run ``run`` with a RolloutService on the configured store."""
    from tidegate.rollout.adapter_sync import add_stored_adapters
    from tidegate.rollout.rollouts import RolloutService
    from tidegate.rollout.shadow_reports import ShadowReports
    from tidegate.routing.build import build_routing

    async with open_store(config_path) as (config, sessions):
        try:
            routing = build_routing(config)
        except ValueError as error:
            raise InvalidRequestError(str(error)) from None
        await add_stored_adapters(config, routing, sessions)
        service = RolloutService(
            sessions=sessions,
            routing=routing,
            sync=None,
            shadow_reports=ShadowReports(sessions=sessions),
        )
        return await run(service)


@rollout_app.command()
def start(
    model: Annotated[str, typer.Option("--model", help="The public model name.")],
    candidate: Annotated[str, typer.Option("--candidate", help="The candidate's pool.")],
    steps: Annotated[
        str, typer.Option("--steps", help="Candidate shares in percent, ending at 100.")
    ] = "5,25,100",
    hold: Annotated[
        str, typer.Option("--hold", help="How long each step's gates must hold (30s, 10m, 1h).")
    ] = "10m",
    max_error_rate_delta: Annotated[
        float | None, typer.Option(help="Candidate minus stable error rate (default 0.02).")
    ] = None,
    max_ttft_p95_ratio: Annotated[
        float | None, typer.Option(help="Candidate over stable TTFT p95 (default 1.5).")
    ] = None,
    max_itl_p95_ratio: Annotated[
        float | None, typer.Option(help="Candidate over stable ITL p95 (default 1.5).")
    ] = None,
    max_json_validity_delta: Annotated[
        float | None, typer.Option(help="Stable minus candidate JSON validity (default 0.05).")
    ] = None,
    min_samples: Annotated[
        int | None, typer.Option(help="Requests per pool before a step is judged (default 20).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Start a rollout of a candidate pool and print its id."""
    gates = {
        name: value
        for name, value in {
            "error_rate_delta": max_error_rate_delta,
            "ttft_p95_ratio": max_ttft_p95_ratio,
            "itl_p95_ratio": max_itl_p95_ratio,
            "json_validity_delta": max_json_validity_delta,
            "min_samples": min_samples,
        }.items()
        if value is not None
    }
    shares, hold_s = parse_steps(steps), parse_duration(hold)

    async def run(service: RolloutService) -> RolloutInfo:
        from tidegate.tenancy.actors import Actor

        return await service.start(
            model=model,
            candidate_pool=candidate,
            steps=shares,
            hold_s=hold_s,
            gates=gates,
            actor=Actor.cli(),
        )

    info: RolloutInfo = run_command(_service(config, run))
    typer.echo(info.id)
    err.print(
        f"Started rollout {info.id} of {info.model}: {info.candidate_pool} gets {info.share:g}% "
        f"(stable {info.stable_pool}); steps {_steps(info)}, hold {info.hold_s:g} s. "
        f"Watch it with `tidegate rollout status {info.id}`.",
        markup=False,
    )


@rollout_app.command()
def status(
    rollout_id: Annotated[str | None, typer.Argument(help="A rollout id.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="The model's latest.")] = None,
    config: ConfigOption = None,
) -> None:
    """A rollout with its current step's gate figures (default: every active rollout)."""

    async def run(service: RolloutService) -> list[RolloutStatus]:
        from tidegate.rollout.transitions import ACTIVE_STATES

        if rollout_id is not None:
            return [await service.get(rollout_id)]
        if model is not None:
            return [await service.latest(model)]
        active = [info for info in await service.list() if info.state in ACTIVE_STATES]
        return [await service.get(info.id) for info in active]

    found: list[RolloutStatus] = run_command(_service(config, run))
    if not found:
        err.print("No active rollout. `tidegate rollout list` shows the finished ones.")
    console = table_console()
    for item in found:
        console.print(_summary_table(item.rollout))
        if item.gate is not None:
            console.print(_gate_table(item.rollout, item.gate))


@rollout_app.command("list")
def list_rollouts(
    model: Annotated[str | None, typer.Option("--model", help="Only this model's.")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Rollouts, newest first."""

    async def run(service: RolloutService) -> list[RolloutInfo]:
        return await service.list(model=model)

    infos: list[RolloutInfo] = run_command(_service(config, run))
    if as_json:
        print_json(infos)
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for header in ("id", "model", "candidate", "stable", "state", "step", "started", "reason"):
        table.add_column(header, overflow="fold" if header == "reason" else "ellipsis")
    for info in infos:
        table.add_row(
            info.id,
            info.model,
            info.candidate_pool,
            info.stable_pool,
            info.state,
            f"{info.step_index + 1}/{len(info.steps)} ({info.share:g}%)",
            when(info.created_at),
            info.reason or "",
        )
    table_console().print(table)


def _operate(operation: Operation, rollout_id: str, config: Path | None) -> None:
    async def run(service: RolloutService) -> RolloutInfo:
        from tidegate.tenancy.actors import Actor

        return await service.operate(rollout_id, operation, actor=Actor.cli())

    info: RolloutInfo = run_command(_service(config, run))
    err.print(
        f"Rollout {info.id} of {info.model} is {info.state} at step {info.step_index + 1} "
        f"({info.share:g}%). Gateways apply it within rollouts.sync_interval_s.",
        markup=False,
    )


@rollout_app.command()
def pause(rollout_id: RolloutId, config: ConfigOption = None) -> None:
    """Hold at the current step: the split stays, the hold timer stops."""
    _operate("pause", rollout_id, config)


@rollout_app.command()
def resume(rollout_id: RolloutId, config: ConfigOption = None) -> None:
    """Go on from the current step (its hold time starts again)."""
    _operate("resume", rollout_id, config)


@rollout_app.command()
def abort(rollout_id: RolloutId, config: ConfigOption = None) -> None:
    """End the rollout and send all traffic back to the stable pool."""
    _operate("abort", rollout_id, config)


@rollout_app.command()
def promote(rollout_id: RolloutId, config: ConfigOption = None) -> None:
    """End the rollout now: all traffic to the candidate, which becomes the stable pool."""
    _operate("promote", rollout_id, config)


@rollout_app.command()
def report(
    rollout_id: RolloutId,
    format: Annotated[str, typer.Option("--format", help="md or html.")] = "md",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    config: ConfigOption = None,
) -> None:
    """The rollout's report: parameters, outcome, transitions, per-step comparison tables."""
    if format not in ("md", "html"):
        raise typer.BadParameter("use md or html", param_hint="--format")
    chosen: ReportFormat = "html" if format == "html" else "md"

    async def run(service: RolloutService) -> str:
        return await service.report(rollout_id, format=chosen)

    text: str = run_command(_service(config, run))
    if out is None:
        typer.echo(text)
        return
    out.write_text(text, encoding="utf-8")
    err.print(f"Wrote {out}.", markup=False)


def _steps(info: RolloutInfo) -> str:
    return ",".join(f"{step:g}" for step in info.steps)


def _summary_table(info: RolloutInfo) -> Table:
    table = Table(title=f"rollout {info.id}", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    rows = [
        ("model", info.model),
        ("candidate / stable", f"{info.candidate_pool} / {info.stable_pool}"),
        ("state", info.state),
        ("step", f"{info.step_index + 1} of {len(info.steps)}: {info.share:g}% ({_steps(info)})"),
        ("step started", when(info.step_started_at)),
        ("hold", f"{info.hold_s:g} s"),
        ("gates", _gates(info.gates)),
        ("reason", info.reason or "-"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _gates(gates: Gates) -> str:
    return " ".join(f"{name}={value:g}" for name, value in gates.to_dict().items())


_FIGURES = [
    ("requests", "requests", "{:.0f}"),
    ("error rate", "error_rate", "{:.2%}"),
    ("TTFT p50 (s)", "ttft_p50_s", "{:.3f}"),
    ("TTFT p95 (s)", "ttft_p95_s", "{:.3f}"),
    ("ITL p95 (s)", "itl_p95_s", "{:.4f}"),
    ("E2E p95 (s)", "e2e_p95_s", "{:.3f}"),
    ("JSON requests", "json_requests", "{:.0f}"),
    ("JSON validity", "json_validity", "{:.1%}"),
]


def _gate_table(info: RolloutInfo, gate: GateResult) -> Table:
    title = f"step {info.step_index + 1} gates: {gate.verdict} ({gate.reason})"
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for header in ("", f"stable {info.stable_pool}", f"candidate {info.candidate_pool}"):
        table.add_column(header)
    for label, key, shape in _FIGURES:
        cells = [gate.figures.get(f"{side}_{key}") for side in ("stable", "candidate")]
        table.add_row(label, *("-" if cell is None else shape.format(cell) for cell in cells))
    return table
