"""The dtype a local engine really runs: ``auto`` on a CPU means float32.

vLLM's CPU backend serves bf16 checkpoints (the bundled model is one) in bf16 under ``--dtype
auto``. Two measurements on this project's hosts rule that out as a default:
- on CPUs without AVX512-BF16 or AMX-BF16 the arithmetic is emulated, and prefill is 5-25x
  slower than in float32 (most laptops and many cloud CPUs);
- on a CPU with AMX-BF16 (2026-12-02) the bundled SmolLM2-135M answered "What is the capital
  of France?" with "L'Étoile, la Marseillaise, la femme, ..." in bf16, and "The capital of France
  is Paris." in float32: a model this small does not survive bf16 rounding.
So ``auto`` on a CPU is passed to vLLM as ``float32``; an explicit dtype (``bfloat16`` for a
larger model on an AMX host) is passed as given, and GPUs keep vLLM's choice. The planner sizes
CPU KV caches with the same rule (float32 KV takes twice the bytes of bf16).
"""

from __future__ import annotations

from tidegate.engines.device import Device


def engine_dtype(dtype: str, device: Device) -> str:
    """The --dtype a replica on ``device`` gets for the profile's ``dtype``."""
    if dtype == "auto" and device == "cpu":
        return "float32"
    return dtype


def cpu_kv_element_bytes() -> int:
    """Bytes per KV cache element of a CPU replica with ``dtype: auto``: float32's."""
    return 4
