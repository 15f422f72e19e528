"""The engine profile a plan leads to, as the ``engines`` section of tidegate's config.

The section is built through ``EnginesConfig`` so a plan can never write a key `tidegate up`
would reject; the Helm chart's ``engines.profile`` values take the same keys.
"""

from __future__ import annotations

from typing import Any

import yaml

from tidegate.config import EngineProfile, EnginesConfig
from tidegate.plan.memory import GIB
from tidegate.plan.recommend import Option, PlanRequest, Recommendation

PROFILE_KEYS = (
    "device",
    "max_model_len",
    "max_num_seqs",
    "cpu_kvcache_space_gib",
    "gpu_memory_utilization",
    "enforce_eager",
    "tensor_parallel_size",
    "dtype",
    "extra_args",
)


def served_name(model: str) -> str:
    """A client-facing name: the bundled model's name, a directory's, or a hub id's last part."""
    name = model.removeprefix("bundled:").rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".json").lower()


def _extra_args(request: PlanRequest, *, quantized: bool) -> list[str]:
    args: list[str] = []
    if request.weights_dtype == "fp8" and not quantized:
        args += ["--quantization", "fp8"]  # vLLM quantizes the bf16 checkpoint at load time
    if request.kv_dtype == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    if request.block_size is not None:
        args += ["--block-size", str(request.block_size)]
    return args


def engine_profile(option: Option, request: PlanRequest, *, quantized: bool) -> EngineProfile:
    on_cpu = option.device == "CPU"
    return EngineProfile(
        device="cpu" if on_cpu else "cuda",
        max_model_len=request.context,
        max_num_seqs=request.concurrency,
        cpu_kvcache_space_gib=option.cpu_kv_space_gib or EngineProfile().cpu_kvcache_space_gib,
        gpu_memory_utilization=request.gpu_memory_utilization,
        enforce_eager=on_cpu or request.enforce_eager,
        tensor_parallel_size=option.tp,
        dtype="bfloat16" if request.weights_dtype == "bf16" else "auto",
        extra_args=_extra_args(request, quantized=quantized),
    )


def engines_section(
    plan: Recommendation, option: Option, *, model: str, served_model_name: str | None = None
) -> dict[str, Any]:
    """``{"engines": {...}}`` for `option`, validated by EnginesConfig."""
    profile = engine_profile(option, plan.request, quantized=plan.spec.quantization is not None)
    engines = EnginesConfig(
        model=model,
        served_model_name=served_model_name or served_name(model),
        replicas=1,
        profile=profile,
    )
    data = engines.model_dump(mode="json", include={"model", "served_model_name", "replicas"})
    data["profile"] = profile.model_dump(mode="json", include=set(PROFILE_KEYS))
    data["profile"] = {key: data["profile"][key] for key in PROFILE_KEYS}
    if plan.request.adapters:
        data["max_loras"] = plan.request.adapters  # the slots the plan counted
    return {"engines": data}


def render_yaml(plan: Recommendation, option: Option, section: dict[str, Any]) -> str:
    """The section as YAML under a comment that says what it was planned for."""
    request = plan.request
    where = "CPU" if option.device == "CPU" else f"{option.tp}×{option.device}"
    header = (
        f"# tidegate plan: {plan.spec.name} on {where}, {request.concurrency} sequences of "
        f"{request.context:,} tokens\n"
        f"# weights {plan.weights_bytes / GIB:.2f} GiB, KV {option.kv_bytes_per_token:,} B/token, "
        f"KV cache {option.capacity.tokens:,} tokens, fits {option.capacity.max_sequences} "
        f"sequences (target {option.required_sequences} with headroom)\n"
    )
    return header + yaml.safe_dump(section, sort_keys=False)
