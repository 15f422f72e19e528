"""Disjoint cores for the local CPU replicas of one host.

vLLM's automatic binding (``VLLM_CPU_OMP_THREADS_BIND=auto``) picks cores as if its replica were
alone on the machine, so two replicas bind their compute threads to the same cores and fight
for them while other cores idle: on a 2-core host, two replicas served 52 and 8 of 60 requests
under least-outstanding balancing. With two or more CPU replicas the supervisor therefore
splits the cores this process may use into one contiguous share per replica. A profile that sets
``VLLM_CPU_OMP_THREADS_BIND`` in ``extra_env`` keeps its own binding; a single replica keeps
vLLM's (which also leaves a core to its scheduler process).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"


def available_cores() -> list[int]:
    """The cores this process may run on, in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def split_cores(cores: Sequence[int], replicas: int) -> list[str]:
    """One ``VLLM_CPU_OMP_THREADS_BIND`` value per replica: contiguous, disjoint shares of
    ``cores``, the first replicas taking one more when they do not divide evenly. Empty when
    there are fewer cores than replicas (they must share; vLLM's binding is left alone)."""
    if replicas < 2 or len(cores) < replicas:
        return []
    share, extra = divmod(len(cores), replicas)
    binds, start = [], 0
    for index in range(replicas):
        size = share + (1 if index < extra else 0)
        binds.append(",".join(str(core) for core in cores[start : start + size]))
        start += size
    return binds
