"""What each local pool's replicas are: ids, ports, pools and vLLM commands.

Every pool of ``engines.local_pools()`` (the main one first) gets its replicas, each loading the
pool's own model under its own merged profile, all serving ``engines.served_model_name`` so
clients see one model whichever pool answers. Replica ids are unique across pools because they
name log files, engines.json entries and metric labels: the main pool keeps ``r0, r1 …``
(dashboards and scripts rely on them), another pool's are ``{pool}-r0, {pool}-r1 …``. An
autoscaling pool's replicas come and go at runtime (``ReplicaPlanner.spec`` builds one on
demand); their indices stay below the pool's max_replicas, so the ids stay a bounded set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tidegate.config import Config, LocalPool
from tidegate.engines.cpu_binding import BIND_VARIABLE, available_cores, split_cores
from tidegate.engines.device import Device, detect_device
from tidegate.engines.model_prepare import resolve_model
from tidegate.engines.profile import EngineCommand, build_engine_command

CommandFactory = Callable[[LocalPool, int], EngineCommand]
"""The command of a replica of ``pool`` listening on ``port`` (tests start stand-ins)."""


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
    """The replicas started with the gateway (an autoscaling pool's min plus standbys)."""
    return sum(pool.initial_replicas for pool in config.engines.local_pools())


class ReplicaPlanner:
    """Builds the spec of any local replica, given its pool, index and port.

    ``resolve`` maps a configured model to vLLM's --model (default ``resolve_model``, which
    raises EngineSetupError when a model is not prepared). ``command``: build the command
    this way instead (no model is resolved, no device detected, no cores bound).
    """

    def __init__(
        self,
        config: Config,
        *,
        host: str = "127.0.0.1",
        resolve: Callable[[str], str] | None = None,
        command: CommandFactory | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.main = config.engines.served_model_name
        self.pools = {pool.name: pool for pool in config.engines.local_pools()}
        self._command = command
        self._models: dict[str, str] = {}
        self._devices: dict[str, Device] = {}
        self._binds: dict[tuple[str, int], str] = {}
        if command is None:
            resolve = resolve or (lambda model: resolve_model(config, model))
            pools = self.pools.values()
            # Once per distinct value, not per replica (resolving checks disk, detecting runs
            # nvidia-smi).
            self._models = {m: resolve(m) for m in dict.fromkeys(p.model for p in pools)}
            devices = {d: detect_device(d) for d in dict.fromkeys(p.profile.device for p in pools)}
            self._devices = {p.name: devices[p.profile.device] for p in pools}
            self._binds = self._bind_cpu_replicas()

    def spec(self, pool_name: str, index: int, port: int) -> ReplicaSpec:
        pool = self.pools[pool_name]
        if self._command is not None:
            command = self._command(pool, port)
        else:
            command = build_engine_command(
                config=self.config,
                model=self._models[pool.model],
                port=port,
                host=self.host,
                device=self._devices[pool.name],
                profile=pool.profile,
                adapters=pool.adapters,
                max_loras=pool.max_loras,
                lora=pool.lora,
                max_lora_rank=pool.max_lora_rank,
            )
            bind = self._binds.get((pool.name, index))
            if bind is not None:
                command = EngineCommand(argv=command.argv, env={**command.env, BIND_VARIABLE: bind})
        return ReplicaSpec(
            id=replica_id(pool.name, index, main_pool=self.main),
            pool=pool.name,
            port=port,
            command=command,
            max_concurrency=pool.profile.max_num_seqs,
        )

    def _bind_cpu_replicas(self) -> dict[tuple[str, int], str]:
        """Each CPU replica without a binding of its own gets its share of the cores
        (``cpu_binding``); an autoscaling pool's shares are sized for its max_replicas, so a
        replica started later finds its cores free."""
        slots = [
            (pool.name, index)
            for pool in self.pools.values()
            if self._devices[pool.name] == "cpu" and BIND_VARIABLE not in pool.profile.extra_env
            for index in range(pool.most_replicas)
        ]
        binds = split_cores(available_cores(), len(slots))
        return dict(zip(slots, binds, strict=False))


def plan_replicas(
    config: Config,
    *,
    ports: Sequence[int],
    host: str = "127.0.0.1",
    resolve: Callable[[str], str] | None = None,
) -> list[ReplicaSpec]:
    """One spec per replica started with the gateway, taking ``ports`` in order
    (``replica_count`` of them)."""
    count = replica_count(config)
    if len(ports) < count:
        raise ValueError(f"{len(ports)} ports for {count} local replicas")
    if count == 0:
        return []
    planner = ReplicaPlanner(config, host=host, resolve=resolve)
    free = iter(ports)
    return [
        planner.spec(pool.name, index, next(free))
        for pool in planner.pools.values()
        for index in range(pool.initial_replicas)
    ]
