"""What each local pool's replicas are: ids, ports, pools and vLLM commands, before any starts.

Every pool of ``engines.local_pools()`` (the main one first) gets its replicas, each loading the
pool's own model under its own merged profile, all serving ``engines.served_model_name`` so
clients see one model whichever pool answers. Replica ids are unique across pools because they
name log files, engines.json entries and metric labels: the main pool keeps ``r0, r1 …``
(dashboards and scripts rely on them), another pool's are ``{pool}-r0, {pool}-r1 …``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from tidegate.config import Config
from tidegate.engines.cpu_binding import BIND_VARIABLE, available_cores, split_cores
from tidegate.engines.device import Device, detect_device
from tidegate.engines.model_prepare import resolve_model
from tidegate.engines.profile import EngineCommand, build_engine_command


@dataclass(frozen=True)
class ReplicaSpec:
    id: str
    pool: str
    port: int
    command: EngineCommand
    max_concurrency: int
    """The pool profile's max_num_seqs: admission and capacity count it per replica."""


def replica_id(pool: str, index: int, *, main_pool: str) -> str:
    return f"r{index}" if pool == main_pool else f"{pool}-r{index}"


def replica_count(config: Config) -> int:
    return sum(pool.replicas for pool in config.engines.local_pools())


def plan_replicas(
    config: Config,
    *,
    ports: Sequence[int],
    host: str = "127.0.0.1",
    resolve: Callable[[str], str] | None = None,
) -> list[ReplicaSpec]:
    """One spec per local replica, taking ``ports`` in order (``replica_count`` of them).

    ``resolve`` maps a configured model to vLLM's --model (default ``resolve_model``, which
    raises EngineSetupError when a model is not prepared).
    """
    pools = config.engines.local_pools()
    if len(ports) < sum(pool.replicas for pool in pools):
        raise ValueError(f"{len(ports)} ports for {replica_count(config)} local replicas")
    resolve = resolve or (lambda model: resolve_model(config, model))
    # Once per distinct value, not per replica (resolving checks disk, detecting runs nvidia-smi).
    models = {model: resolve(model) for model in dict.fromkeys(p.model for p in pools)}
    devices = {d: detect_device(d) for d in dict.fromkeys(p.profile.device for p in pools)}
    main = config.engines.served_model_name
    free = iter(ports)
    specs = []
    for pool in pools:
        for index in range(pool.replicas):
            port = next(free)
            command = build_engine_command(
                config=config,
                model=models[pool.model],
                port=port,
                host=host,
                device=devices[pool.profile.device],
                profile=pool.profile,
                adapters=pool.adapters,
                max_loras=pool.max_loras,
            )
            specs.append(
                ReplicaSpec(
                    id=replica_id(pool.name, index, main_pool=main),
                    pool=pool.name,
                    port=port,
                    command=command,
                    max_concurrency=pool.profile.max_num_seqs,
                )
            )
    return _bind_cpu_replicas(specs, devices={p.name: devices[p.profile.device] for p in pools})


def _bind_cpu_replicas(
    specs: list[ReplicaSpec], *, devices: dict[str, Device]
) -> list[ReplicaSpec]:
    """Each CPU replica without a binding of its own gets its share of the cores
    (``cpu_binding``)."""
    unbound = [
        index
        for index, spec in enumerate(specs)
        if devices[spec.pool] == "cpu" and BIND_VARIABLE not in spec.command.env
    ]
    binds = split_cores(available_cores(), len(unbound))
    for index, bind in zip(unbound, binds, strict=False):
        command = specs[index].command
        env = {**command.env, BIND_VARIABLE: bind}
        specs[index] = replace(specs[index], command=replace(command, env=env))
    return specs
