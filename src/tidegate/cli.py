"""The `tidegate` command: one Typer app with a sub-command per area."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tidegate.commands.lazy import LazyCommand, LazyGroup

if TYPE_CHECKING:
    from rich.console import Console

    from tidegate.config import Config, EnginesConfig


class _Root(LazyGroup):
    # Imported on first use, so `tidegate --help` and `config show` never load the store, the
    # HTTP stack or the load tester. Typer lists commands before groups; the order is the old one.
    lazy_commands = (
        LazyCommand(
            "plan",
            "tidegate.commands.plan:plan_app",
            "Size GPUs for a model and write the engine profile; simulate scaling policies.",
        ),
    )
    lazy_groups = (
        LazyCommand(
            "engine",
            "tidegate.commands.engine:engine_app",
            "Install and inspect the local vLLM engines.",
        ),
        LazyCommand(
            "model", "tidegate.commands.engine:model_app", "Prepare models for the local engines."
        ),
        LazyCommand("keys", "tidegate.commands.keys:keys_app", "Create, list and revoke API keys."),
        LazyCommand(
            "tenants",
            "tidegate.commands.tenants:tenants_app",
            "Create, list, update and delete tenants.",
        ),
        LazyCommand("usage", "tidegate.commands.usage:usage_app", "Usage rollups and CSV export."),
        LazyCommand(
            "traffic",
            "tidegate.commands.traffic:traffic_app",
            "Traffic splits, shadows, rollback and model versions.",
        ),
        LazyCommand(
            "adapters",
            "tidegate.commands.adapters:adapters_app",
            "Add, remove and list LoRA adapters.",
        ),
        LazyCommand(
            "shadow",
            "tidegate.commands.shadow:shadow_app",
            "The shadow traffic comparison per model.",
        ),
        LazyCommand(
            "rollout",
            "tidegate.commands.rollout:rollout_app",
            "Start, watch and steer staged model rollouts.",
        ),
        LazyCommand(
            "batch",
            "tidegate.commands.batch:batch_app",
            "Submit and follow OpenAI batches through a gateway.",
        ),
        LazyCommand(
            "bench",
            "tidegate_bench.cli:bench_app",
            "Load-test OpenAI-compatible endpoints side by side.",
        ),
    )


app = typer.Typer(
    name="tidegate",
    help="Production LLM serving: one OpenAI-compatible endpoint in front of vLLM and APIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Root,
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect the effective configuration.")
app.add_typer(config_app, name="config")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (else TIDEGATE_CONFIG, else defaults)."),
]


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _parse_upstream(spec: str, model: str | None) -> dict[str, Any]:
    if not spec.startswith(("http://", "https://")):
        raise typer.BadParameter(f"--upstream must be a URL like http://HOST:PORT/v1, got {spec!r}")
    if not model:
        raise typer.BadParameter("each --upstream needs a --model naming what it serves")
    return {"url": spec, "model": model}


@app.command()
def up(
    config_path: ConfigOption = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream",
            help="An already-running OpenAI-compatible server (http://HOST:PORT/v1); repeatable. "
            "With --upstream no local engine is started unless --replicas says so.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Model name served by the --upstream at the same position."),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Local vLLM replicas to start (overrides config).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Listen address (overrides config).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (overrides config).")] = None,
) -> None:
    """Start the gateway, and the local vLLM replicas it supervises."""
    from tidegate.config import Config, load_config

    base = load_config(config_path)
    upstreams = upstream or []
    models = model or []
    if len(models) != len(upstreams):
        raise typer.BadParameter("give one --model per --upstream, in the same order")
    data = base.model_dump()  # env and file already applied; command-line flags go on top
    if upstreams:
        data["upstreams"] += [_parse_upstream(u, m) for u, m in zip(upstreams, models, strict=True)]
        data["engines"]["replicas"] = 0
    if replicas is not None:
        data["engines"]["replicas"] = replicas
    if host is not None:
        data["server"]["host"] = host
    if port is not None:
        data["server"]["port"] = port
    config = Config.model_validate(data)
    _serve(config)


def _serve(config: Config) -> None:
    err = _err()
    _check_extras(config, err)

    from tidegate.app import build_app
    from tidegate.commands import serve_console
    from tidegate.observability.logging import configure_logging

    for line in serve_console.where_lines(config):
        err.print(line, soft_wrap=True, markup=False, highlight=False)
    if config.engines.replicas > 0:
        from tidegate.engines.install import EngineInstaller
        from tidegate.engines.model_prepare import ModelPreparer

        EngineInstaller(config=config, console=err).install()
        preparer = ModelPreparer(config=config, console=err)
        for model in dict.fromkeys(pool.model for pool in config.engines.local_pools()):
            preparer.prepare(model)

    def announce(key: str | None) -> None:
        if key is None:
            err.print(serve_console.existing_key_message(config), soft_wrap=True, markup=False)
            return
        err.print(
            "\n[bold]Admin API key[/bold] (shown once, store it now; it is kept only as a hash):"
            f"\n  [green]{key}[/green]\n"
            f"  export OPENAI_BASE_URL=http://{config.server.host}:{config.server.port}/v1 "
            f"OPENAI_API_KEY={key}\n",
            soft_wrap=True,
        )

    configure_logging(config.server.log_level)
    err.print(
        f"tidegate listening on http://{config.server.host}:{config.server.port} "
        f"(models: {', '.join(_model_names(config)) or 'none'})"
    )
    err.print(_metrics_hint(config), soft_wrap=True, markup=False)
    serve_console.run_server(
        build_app(config, announce_admin_key=announce),
        config=config,
        console=err,
        host=config.server.host,
        port=config.server.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def _check_extras(config: Config, err: Console) -> None:
    """Refuse, before anything starts, a configuration whose optional dependency is missing."""
    from importlib.util import find_spec

    from tidegate.batch.storage import S3_EXTRA_MISSING

    if config.batch.enabled and config.batch.storage == "s3" and find_spec("boto3") is None:
        err.print(
            f"error: {S3_EXTRA_MISSING}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)


def _metrics_hint(config: Config) -> str:
    server = config.server
    if server.metrics_port is not None:
        port = server.metrics_port or "PORT"  # 0: picked at start, logged then
        return f"metrics: http://{server.metrics_host}:{port}/metrics (no token)"
    token = "server.metrics_token" if server.metrics_token else "the admin key"
    return (
        f"metrics: curl -H 'Authorization: Bearer <{token}>' "
        f"http://{server.host}:{server.port}/metrics (or set server.metrics_port for a "
        "listener without a token)"
    )


def _model_names(config: Config) -> list[str]:
    names = [u.model for u in config.upstreams]
    if config.engines.replicas > 0:
        names.append(config.engines.served_model_name)
    return sorted(set(names))


@config_app.command("show")
def config_show(config_path: ConfigOption = None) -> None:
    """Print the effective configuration as YAML, secrets masked."""
    import yaml

    from tidegate.config import load_config

    config = load_config(config_path)
    data = config.model_dump(mode="json")
    data["engines"]["pools"] = _effective_pools(config.engines)
    typer.echo(yaml.safe_dump(data, sort_keys=False))


def _effective_pools(engines: EnginesConfig) -> list[dict[str, Any]]:
    # A pool's profile holds overrides only: shown as dumped, its defaults would read as set
    # (and override engines.profile if the output were used as a config). Show what runs.
    return [
        {
            **pool.model_dump(mode="json"),
            "model": pool.model or engines.model,
            "profile": engines.pool_profile(pool).model_dump(mode="json"),
        }
        for pool in engines.pools
    ]


def main(argv: list[str] | None = None) -> None:
    """The console script. ``tidegate bench --target ...`` is short for ``tidegate bench run``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "bench" and args[1].startswith("-") and args[1] != "--help":
        args.insert(1, "run")
    app(args, prog_name="tidegate")
