"""The GPUs the planner chooses from, smallest and cheapest first.

Memory is what ``nvidia-smi`` reports as total (the figure vLLM multiplies by
gpu_memory_utilization), not the marketing GB. ``max_batched_tokens`` is vLLM's default
``--max-num-batched-tokens`` for its OpenAI server on that class (``EngineArgs``: 16384 from
160 GiB, 8192 from 70 GiB except A100, else 2048); it sizes the profiling pass.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
TP_SIZES = (1, 2, 4, 8)
CPU_MAX_BATCHED_TOKENS = 2048


@dataclass(frozen=True, kw_only=True)
class Gpu:
    name: str
    memory_bytes: int
    nominal_gb: int
    """The class's marketed size, used to order options by what is being bought."""
    fp8: bool
    """Native fp8 tensor cores (Ada, Hopper, Blackwell). Others run fp8 weights as weight-only
    (Marlin) and fp8 KV as storage only: the memory saving holds, the speed-up does not."""
    max_batched_tokens: int


GPUS: tuple[Gpu, ...] = (
    Gpu(name="L4", memory_bytes=23034 * MIB, nominal_gb=24, fp8=True, max_batched_tokens=2048),
    Gpu(name="A10G", memory_bytes=23028 * MIB, nominal_gb=24, fp8=False, max_batched_tokens=2048),
    Gpu(name="L40S", memory_bytes=46068 * MIB, nominal_gb=48, fp8=True, max_batched_tokens=2048),
    Gpu(
        name="A100-40GB",
        memory_bytes=40960 * MIB,
        nominal_gb=40,
        fp8=False,
        max_batched_tokens=2048,
    ),
    Gpu(
        name="A100-80GB",
        memory_bytes=81920 * MIB,
        nominal_gb=80,
        fp8=False,
        max_batched_tokens=2048,
    ),
    Gpu(
        name="H100-80GB",
        memory_bytes=81559 * MIB,
        nominal_gb=80,
        fp8=True,
        max_batched_tokens=8192,
    ),
    Gpu(name="H200", memory_bytes=143771 * MIB, nominal_gb=141, fp8=True, max_batched_tokens=8192),
    Gpu(name="B200", memory_bytes=183359 * MIB, nominal_gb=192, fp8=True, max_batched_tokens=16384),
)


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def find_gpu(name: str) -> Gpu:
    """The GPU named `name` (case and dashes ignored; "H100" and "A100" alone mean 80 GB)."""
    wanted = _key(name)
    for gpu in GPUS:
        if _key(gpu.name) in (wanted, wanted + "80gb"):
            return gpu
    names = ", ".join(g.name for g in GPUS)
    raise ValueError(f"unknown GPU {name!r}; known: {names}")


def gpu_order(gpu: Gpu, tp: int) -> tuple[int, int, int]:
    """Sort key: least memory bought, then fewer GPUs, then the table's (price) order."""
    return (gpu.nominal_gb * tp, tp, GPUS.index(gpu))
