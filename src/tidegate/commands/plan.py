"""``tidegate plan``: which GPU, how many, and the engine profile to run a model with; and
``tidegate plan simulate``: a traffic trace replayed against scaling policies.

Mounted in cli.py as the group ``plan_app``: ``plan --model ...`` is its callback
(``plan_command``), ``simulate`` its one sub-command (in ``commands.plan_simulate``).
The table and YAML go to stdout (``--json``: one JSON object instead); errors go to stderr.
Exit status: 0 with a recommendation, 1 when nothing fits, 2 on bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tidegate.commands.listing import table_console
from tidegate.commands.plan_simulate import simulate_command
from tidegate.engines.dtype import cpu_kv_element_bytes
from tidegate.plan.errors import PlanError, PlanInputError
from tidegate.plan.gpus import find_gpu
from tidegate.plan.memory import GIB
from tidegate.plan.model_source import load_model_spec
from tidegate.plan.model_spec import ModelSpec
from tidegate.plan.recommend import PlanRequest, Recommendation, recommend, recommend_cpu
from tidegate.plan.report import describe_model, plan_json, plan_table


def _spec(model: str, config_path: Path | None) -> ModelSpec:
    # The config (and pydantic under it) only for bundled models; `plan --help` needs neither.
    from tidegate.config import load_config
    from tidegate.engines.model_prepare import bundled_name

    name = bundled_name(model)
    if name is None:
        return load_model_spec(model)
    directory = load_config(config_path).models_dir / name
    if not (directory / "config.json").is_file():
        raise PlanInputError(f"{model} is not prepared ({directory}); run `tidegate model prepare`")
    return load_model_spec(str(directory))


def _plan(
    spec: ModelSpec,
    request: PlanRequest,
    *,
    cpu: bool,
    kv_space_gib: int | None,
    gpu: str | None,
    tp: int | None,
) -> Recommendation:
    if cpu:
        import psutil

        if request.weights_dtype == "fp8" or gpu or tp:
            raise PlanInputError("--cpu takes neither --dtype fp8, --gpu nor --tp")
        # dtype auto on this machine's CPU engine: float32 (4-byte KV) where bf16 is emulated.
        element_bytes = cpu_kv_element_bytes() if request.weights_dtype == "auto" else 2
        plan = recommend_cpu(
            spec, request, kv_space_gib=kv_space_gib, kv_element_bytes=element_bytes
        )
        weights = plan.weights_bytes
        if weights + plan.options[0].kv_budget_per_device > psutil.virtual_memory().total:
            raise PlanInputError(
                f"weights {weights / GIB:.1f} GiB + KV cache {plan.options[0].cpu_kv_space_gib} "
                f"GiB exceed this machine's memory"
            )
        return plan
    try:
        device = find_gpu(gpu) if gpu else None
    except ValueError as exc:
        raise PlanInputError(str(exc)) from exc
    return recommend(spec, request, gpu=device, tp=tp)


def plan_command(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model directory, config.json, hub id, or bundled:NAME (required).",
            show_default=False,
        ),
    ] = None,
    context: Annotated[int, typer.Option(help="Context length per sequence (tokens).")] = 8192,
    concurrency: Annotated[int, typer.Option(help="Sequences served at once.")] = 32,
    dtype: Annotated[str, typer.Option(help="Weights: auto, bf16, or fp8 (quantized).")] = "auto",
    kv_dtype: Annotated[str, typer.Option(help="KV cache: auto or fp8.")] = "auto",
    gpu: Annotated[str | None, typer.Option(help="Only this GPU (e.g. H100-80GB).")] = None,
    tp: Annotated[int | None, typer.Option(help="Only this tensor-parallel size.")] = None,
    gpu_memory_utilization: Annotated[
        float, typer.Option(help="vLLM's share of GPU memory.")
    ] = 0.9,
    headroom: Annotated[float, typer.Option(help="Spare KV capacity over the target.")] = 0.2,
    enforce_eager: Annotated[
        bool, typer.Option(help="No CUDA graphs (saves their memory).")
    ] = False,
    block_size: Annotated[
        int | None, typer.Option(help="KV block size (default: vLLM's for the device).")
    ] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Plan the embedded vLLM CPU engine.")] = False,
    kv_space_gib: Annotated[
        int | None, typer.Option(help="CPU KV cache GiB (default: the least that fits).")
    ] = None,
    served_model_name: Annotated[str | None, typer.Option(help="Name clients use.")] = None,
    adapters: Annotated[
        int, typer.Option(help="LoRA adapter slots per replica (vLLM --max-loras); 0: none.")
    ] = 0,
    lora_rank: Annotated[int, typer.Option(help="The largest LoRA adapter rank.")] = 16,
    out: Annotated[Path | None, typer.Option(help="Write the engine profile YAML here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Config, to find bundled models.")
    ] = None,
) -> None:
    """Size GPUs (or the CPU engine) for a model, a context length and a concurrency."""
    from tidegate.plan.profile_yaml import engines_section, render_yaml

    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        raise typer.BadParameter("Missing option '--model'.", param_hint="'--model'")

    console, err = table_console(), Console(stderr=True)
    request = PlanRequest(
        context=context,
        concurrency=concurrency,
        weights_dtype=dtype,
        kv_dtype=kv_dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        headroom=headroom,
        enforce_eager=enforce_eager,
        block_size=block_size,
        adapters=adapters,
        lora_rank=lora_rank,
    )
    try:
        plan = _plan(
            _spec(model, config), request, cpu=cpu, kv_space_gib=kv_space_gib, gpu=gpu, tp=tp
        )
    except PlanError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")  # "tidegate[hub]" is no markup
        raise typer.Exit(2) from exc
    section, text = None, ""
    if plan.chosen is not None:
        section = engines_section(
            plan, plan.chosen, model=model, served_model_name=served_model_name
        )
        text = render_yaml(plan, plan.chosen, section)
        if out is not None:
            out.write_text(text, encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(plan_json(plan, profile=section), indent=2))
    else:
        console.print(describe_model(plan), soft_wrap=True)
        console.print(plan_table(plan))
        if out is None:
            console.print(text, markup=False, highlight=False, end="")
    if plan.chosen is None:
        err.print(f"[red]{plan.refusal}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    if out is not None:
        err.print(f"engine profile written to {out} (use: tidegate up --config {out})")


plan_app = typer.Typer(add_completion=False)
plan_app.callback(invoke_without_command=True)(plan_command)
plan_app.command("simulate")(simulate_command)
