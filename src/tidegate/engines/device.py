"""Which vLLM build a machine gets: CUDA when nvidia-smi lists a GPU, CPU otherwise."""

from __future__ import annotations

import shutil
import subprocess
from typing import Literal

Device = Literal["cpu", "cuda"]


def detect_device(requested: Literal["auto", "cpu", "cuda"] = "auto") -> Device:
    if requested != "auto":
        return requested
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "cpu"
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    # nvidia-smi exists on some GPU-less hosts (drivers installed, no card): trust the listing.
    return "cuda" if done.returncode == 0 and b"GPU" in done.stdout else "cpu"
