"""EngineSupervisor: the local vLLM replicas of one gateway process.

The replicas of every local pool (``engines.local_pools()``: the main one, then
``engines.pools``; see ``pools`` for their ids and commands), one ``PoolReplicas`` set per
pool. ``start()`` launches a fixed pool's replicas, or an autoscaling pool's min_replicas routed
plus its warm standbys with the pool's ``PoolAutoscaler``, concurrently, and returns at once
(loading takes tens of seconds); each replica's ``ReplicaRunner`` moves it through its states,
and the supervisor turns each transition into routing state, metrics and the engines.json state
file. ``stop()`` stops the autoscalers, then drains, so no request is cut off while a replica
still has time to finish it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tidegate.autoscaling.policy import effective_target
from tidegate.config import Config
from tidegate.engines.autoscaler import PoolAutoscaler, ScaleAudit
from tidegate.engines.engine_metrics import EngineMetricsScraper
from tidegate.engines.errors import EngineSetupError
from tidegate.engines.install import venv_python
from tidegate.engines.pools import CommandFactory, ReplicaPlanner, ReplicaSpec
from tidegate.engines.replica_runner import ReplicaRunner
from tidegate.engines.replica_set import PoolReplicas, Role
from tidegate.engines.scaling_metrics import ScalingMetrics
from tidegate.engines.state_file import STATE_FILE_NAME, EngineSnapshot, write_state
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.metrics import export_replica_state
from tidegate.routing.replicas import Replica, ReplicaState, RoutingTable
from tidegate.scheduling.scheduler import Scheduler

_HOST = "127.0.0.1"


class EngineSupervisor:
    def __init__(
        self,
        *,
        config: Config,
        routing: RoutingTable,
        metrics: GatewayMetrics,
        scheduler: Scheduler | None = None,
        audit: ScaleAudit | None = None,
        command: CommandFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``scheduler``: where autoscaling pools read their queue (None: from the replicas);
        ``audit``: records scale events; ``command``: builds replica commands instead of the
        engine venv's vLLM (tests start stand-in servers); ``clock``: the autoscalers'."""
        self.config = config
        self.routing = routing
        self.metrics = metrics
        self.scheduler = scheduler
        self.audit = audit
        self.command = command
        self.clock = clock
        self.state_path: Path = config.state_dir / STATE_FILE_NAME
        self.pools: list[PoolReplicas] = []
        self.autoscalers: dict[str, PoolAutoscaler] = {}
        self.scaling_metrics = ScalingMetrics(metrics.registry)
        self._session: aiohttp.ClientSession | None = None
        self._scraper: EngineMetricsScraper | None = None

    @property
    def runners(self) -> list[ReplicaRunner]:
        return [runner for pool in self.pools for runner in pool.runners]

    @property
    def replicas(self) -> list[Replica]:
        return [runner.replica for runner in self.runners]

    async def start(self) -> None:
        """Start every local pool's replicas (and autoscalers); returns before they are ready.

        Raises EngineSetupError when the engine venv or a pool's model is missing.
        """
        engines = self.config.engines
        if not engines.local_pools() or self.pools:
            return
        if self.command is None:
            python = venv_python(self.config.engine_venv)
            if not python.exists():
                raise EngineSetupError(
                    f"No engine venv at {self.config.engine_venv}. Run `tidegate engine install`."
                )
        planner = ReplicaPlanner(self.config, host=_HOST, command=self.command)
        # Probes must fail fast: a hung /health is as bad as a failed one.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        for pool in planner.pools.values():
            replicas = PoolReplicas(
                pool=pool,
                planner=planner,
                routing=self.routing,
                make_runner=self._runner,
                settings=engines,
                on_change=self._on_pool_change,
                ports_in_use=lambda: {runner.port for runner in self.runners},
                host=_HOST,
            )
            self.pools.append(replicas)
            policy = pool.autoscaling
            routed = policy.min_replicas if policy.enabled else pool.replicas
            for _ in range(routed):
                replicas.start(Role.ROUTED)
            for _ in range(policy.warm_standby if policy.enabled else 0):
                replicas.start(Role.STANDBY)
            if policy.enabled:
                ttft = self.config.scheduling.interactive.ttft_target_s
                self.autoscalers[pool.name] = PoolAutoscaler(
                    replicas=replicas,
                    policy=policy,
                    target=effective_target(policy, ttft),
                    pool=self.routing.ensure_pool(pool.name, model=engines.served_model_name),
                    scheduler=self.scheduler,
                    metrics=self.scaling_metrics,
                    audit=self.audit,
                    clock=self.clock,
                )
        self._on_pool_change()
        for autoscaler in self.autoscalers.values():
            autoscaler.start()
        self._scraper = EngineMetricsScraper(
            metrics=self.metrics,
            replicas=lambda: self.replicas,
            interval_s=engines.metrics_interval_s,
        )
        self._scraper.start()

    def _runner(self, spec: ReplicaSpec) -> ReplicaRunner:
        assert self._session is not None
        engines = self.config.engines
        replica = Replica(
            id=spec.id,
            model=engines.served_model_name,
            pool=spec.pool,
            base_url=f"http://{_HOST}:{spec.port}/v1",
            upstream_model=engines.served_model_name,
            max_concurrency=spec.max_concurrency,
            priority_scheduling=self.config.scheduling.engine_priority,
        )
        return ReplicaRunner(
            replica=replica,
            port=spec.port,
            command=spec.command,
            log_path=self.config.logs_dir / f"replica-{replica.id}.log",
            settings=engines,
            session=self._session,
            notify=self._on_transition,
            on_restart=self._on_restart,
        )

    async def wait_ready(self, timeout: float) -> bool:
        """True once every replica is READY; False if ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not all(r.state is ReplicaState.READY for r in self.replicas):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    async def stop(self) -> None:
        """Stop scaling, drain (up to drain_grace_s), then stop every replica's process group."""
        for autoscaler in self.autoscalers.values():
            await autoscaler.stop()
        for pool in self.pools:
            await pool.stop()
        if self._scraper is not None:
            await self._scraper.stop()
            self._scraper = None
        deadline = time.monotonic() + self.config.engines.drain_grace_s
        runners = self.runners
        await asyncio.gather(*(runner.drain(deadline=deadline) for runner in runners))
        await asyncio.gather(*(runner.stop() for runner in runners))
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- transitions ----------------------------------------------------------------------

    def _on_transition(self, runner: ReplicaRunner) -> None:
        replica = runner.replica
        export_replica_state(self.metrics, replica)
        if replica.state is ReplicaState.READY and runner.load_seconds is not None:
            self.metrics.model_load_seconds.labels(model=replica.model, replica=replica.id).set(
                runner.load_seconds
            )
        self._on_pool_change()

    def _on_restart(self, runner: ReplicaRunner) -> None:
        replica = runner.replica
        self.metrics.replica_restarts.labels(model=replica.model, replica=replica.id).inc()

    def _on_pool_change(self) -> None:
        for pool in self.pools:
            self.scaling_metrics.replicas(pool.name, pool.counts().by_state(), pool.desired_routed)
        self._write_state()

    def _write_state(self) -> None:
        write_state(
            self.state_path,
            EngineSnapshot(
                supervisor_pid=os.getpid(),
                updated_at=time.time(),
                replicas=tuple(record for pool in self.pools for record in pool.records()),
                pools=tuple(pool.record() for pool in self.pools),
            ),
        )
