"""EngineSupervisor: the local vLLM replicas of one gateway process.

The replicas of every local pool (``engines.local_pools()``: the main one, then
``engines.pools``; see ``pools`` for their ids and commands). ``start()`` launches every replica
concurrently and returns at once (loading takes tens of
seconds); each replica's ``ReplicaRunner`` moves it through its states, and the supervisor turns
each transition into routing state, metrics and the engines.json state file. ``stop()`` drains
first, so no request is cut off while a replica still has time to finish it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from tidegate.config import Config
from tidegate.engines.engine_metrics import EngineMetricsScraper
from tidegate.engines.errors import EngineSetupError
from tidegate.engines.install import venv_python
from tidegate.engines.pools import ReplicaSpec, plan_replicas, replica_count
from tidegate.engines.ports import free_ports
from tidegate.engines.replica_runner import ReplicaRunner
from tidegate.engines.state_file import STATE_FILE_NAME, EngineSnapshot, write_state
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.metrics import export_replica_state
from tidegate.routing.replicas import Replica, ReplicaState, RoutingTable

_HOST = "127.0.0.1"


class EngineSupervisor:
    def __init__(self, *, config: Config, routing: RoutingTable, metrics: GatewayMetrics) -> None:
        self.config = config
        self.routing = routing
        self.metrics = metrics
        self.state_path: Path = config.state_dir / STATE_FILE_NAME
        self.runners: list[ReplicaRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self._scraper: EngineMetricsScraper | None = None

    @property
    def replicas(self) -> list[Replica]:
        return [runner.replica for runner in self.runners]

    async def start(self) -> None:
        """Start every local pool's replicas; returns before they are ready.

        Raises EngineSetupError when the engine venv or a pool's model is missing.
        """
        engines = self.config.engines
        count = replica_count(self.config)
        if count <= 0 or self.runners:
            return
        python = venv_python(self.config.engine_venv)
        if not python.exists():
            raise EngineSetupError(
                f"No engine venv at {self.config.engine_venv}. Run `tidegate engine install`."
            )
        specs = plan_replicas(self.config, ports=free_ports(count, _HOST), host=_HOST)
        # Probes must fail fast: a hung /health is as bad as a failed one.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        for spec in specs:
            self.runners.append(self._runner(spec, self._session))
        for runner in self.runners:
            runner.start()
        self._scraper = EngineMetricsScraper(
            metrics=self.metrics,
            replicas=lambda: self.replicas,
            interval_s=engines.metrics_interval_s,
        )
        self._scraper.start()

    def _runner(self, spec: ReplicaSpec, session: aiohttp.ClientSession) -> ReplicaRunner:
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
        self.routing.add(replica)
        return ReplicaRunner(
            replica=replica,
            port=spec.port,
            command=spec.command,
            log_path=self.config.logs_dir / f"replica-{replica.id}.log",
            settings=engines,
            session=session,
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
        """Drain (up to drain_grace_s), then stop every replica's process group."""
        if self._scraper is not None:
            await self._scraper.stop()
            self._scraper = None
        deadline = time.monotonic() + self.config.engines.drain_grace_s
        await asyncio.gather(*(runner.drain(deadline=deadline) for runner in self.runners))
        await asyncio.gather(*(runner.stop() for runner in self.runners))
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
        self._write_state()

    def _on_restart(self, runner: ReplicaRunner) -> None:
        replica = runner.replica
        self.metrics.replica_restarts.labels(model=replica.model, replica=replica.id).inc()

    def _write_state(self) -> None:
        write_state(
            self.state_path,
            EngineSnapshot(
                supervisor_pid=os.getpid(),
                updated_at=time.time(),
                replicas=tuple(runner.record() for runner in self.runners),
            ),
        )
