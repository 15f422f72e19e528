"""A plan for people (a Rich table) and for machines (a JSON-ready dict)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.table import Table

from tidegate.plan.memory import GIB
from tidegate.plan.recommend import Option, Recommendation


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def describe_model(plan: Recommendation) -> str:
    spec = plan.spec
    parts = [
        f"{spec.name} ({spec.model_type}): {plan.params.total / 1e9:.2f} B parameters, "
        f"weights {_gib(plan.weights_bytes)}",
        f"{spec.num_layers} layers, {spec.num_attention_heads} heads"
        + ("" if spec.mla else f", {spec.num_kv_heads} KV heads × {spec.head_dim}"),
    ]
    if spec.moe:
        parts.append(f"MoE {spec.moe.experts_per_token} of {spec.moe.num_experts} experts")
    if spec.mla:
        parts.append(f"MLA latent {spec.mla.kv_lora_rank}+{spec.mla.qk_rope_head_dim}")
    if spec.sliding_window:
        window = spec.sliding_window
        parts.append(f"sliding window {window.window:,} on {window.num_layers} layers")
    if spec.quantization:
        parts.append(f"{spec.quantization.method} {spec.quantization.bits}-bit")
    request = plan.request
    if request.adapters:
        parts.append(
            f"LoRA {request.adapters} slots × rank {request.lora_rank}: "
            f"{plan.lora_bytes / (1 << 20):,.0f} MiB (in overhead/dev)"
        )
    return "; ".join(parts)


def _more(option: Option, than: Option) -> bool:
    return (option.capacity.max_sequences, option.kv_budget_per_device) > (
        than.capacity.max_sequences,
        than.kv_budget_per_device,
    )


def table_rows(plan: Recommendation) -> list[Option]:
    """One row per device: its first option that fits, else its most capable one."""
    rows: dict[str, Option] = {}
    for option in plan.options:
        current = rows.get(option.device)
        if current is None or (not current.fits and (option.fits or _more(option, current))):
            rows[option.device] = option
    if len({o.device for o in plan.options}) == 1:
        return list(plan.options)  # one device asked for: show each TP size
    return sorted(rows.values(), key=lambda o: plan.options.index(o))


def plan_table(plan: Recommendation) -> Table:
    request = plan.request
    table = Table(
        title=f"{request.concurrency} sequences × {request.context:,} tokens "
        f"(+{request.headroom:.0%} headroom → {request.required_sequences})"
    )
    for column in ("option", "weights/dev", "overhead/dev", "KV space/dev", "KV B/token"):
        table.add_column(column, justify="right")
    for column in ("KV tokens", "max seqs"):
        table.add_column(column, justify="right")
    table.add_column("verdict", overflow="fold")
    for option in table_rows(plan):
        name = option.device if option.device == "CPU" else f"{option.tp}×{option.device}"
        if option is plan.chosen:
            verdict = "[bold green]recommended[/bold green]"
        elif option.fits:
            verdict = "[green]fits[/green]"
        else:
            verdict = f"[red]{option.reason}[/red]"
        table.add_row(
            name,
            _gib(option.weights_per_device),
            _gib(option.overhead_per_device),
            _gib(max(0, option.kv_budget_per_device)),
            f"{option.kv_bytes_per_token:,}",
            f"{option.capacity.tokens:,}",
            str(option.capacity.max_sequences),
            verdict,
        )
    return table


def plan_json(plan: Recommendation, *, profile: dict[str, Any] | None) -> dict[str, Any]:
    def option_json(option: Option) -> dict[str, Any]:
        return {**asdict(option), "fits": option.fits}

    return {
        "model": asdict(plan.spec),
        "parameters": {**asdict(plan.params), "total": plan.params.total},
        "weights_bytes": plan.weights_bytes,
        "request": asdict(plan.request),
        "options": [option_json(o) for o in plan.options],
        "chosen": None if plan.chosen is None else option_json(plan.chosen),
        "refusal": plan.refusal or None,
        "lora_bytes": plan.lora_bytes,
        "profile": profile,
    }
