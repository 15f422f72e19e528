"""The dtype a local engine really runs: ``auto`` means float32 on CPUs without native bf16.

vLLM's CPU backend serves bf16 checkpoints (the bundled model is one) in bf16 under ``--dtype
auto``. On CPUs without AVX512-BF16 or AMX-BF16 that arithmetic is emulated, and prefill is
measured here 5-25x slower than in float32 — most laptops and many cloud CPUs. So ``auto`` on
such a CPU is passed to vLLM as ``float32``; an explicit dtype is passed as given. The planner
sizes CPU KV caches with the same rule (float32 KV takes twice the bytes of bf16).
"""

from __future__ import annotations

import functools
from pathlib import Path

from tidegate.engines.device import Device

_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: leave vLLM's own choice alone
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(set(line.split(":", 1)[1].split()) & _NATIVE_BF16_FLAGS)
    return True


def engine_dtype(dtype: str, device: Device) -> str:
    """The --dtype a replica on ``device`` gets for the profile's ``dtype``."""
    if dtype == "auto" and device == "cpu" and not cpu_has_native_bf16():
        return "float32"
    return dtype


def cpu_kv_element_bytes() -> int:
    """Bytes per KV cache element of a CPU replica with ``dtype: auto`` on this machine."""
    return 2 if engine_dtype("auto", "cpu") == "auto" else 4
