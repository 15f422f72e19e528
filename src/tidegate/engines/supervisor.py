"""EngineSupervisor: the local vLLM replicas of one gateway process.

``start()`` launches every replica concurrently and returns at once (loading takes tens of
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
from tidegate.engines.device import detect_device
from tidegate.engines.engine_metrics import EngineMetricsScraper
from tidegate.engines.errors import EngineSetupError
from tidegate.engines.install import venv_python
from tidegate.engines.model_prepare import resolve_model
from tidegate.engines.ports import free_ports
from tidegate.engines.profile import build_engine_command
from tidegate.engines.replica_runner import ReplicaRunner
from tidegate.engines.state_file import STATE_FILE_NAME, EngineSnapshot, write_state
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import REPLICA_STATES, Replica, ReplicaState, RoutingTable

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
        """Start config.engines.replicas replicas; returns before they are ready.

        Raises EngineSetupError when the engine venv or the model is missing.
        """
        engines = self.config.engines
        if engines.replicas <= 0 or self.runners:
            return
        python = venv_python(self.config.engine_venv)
        if not python.exists():
            raise EngineSetupError(
                f"No engine venv at {self.config.engine_venv}. Run `tidegate engine install`."
            )
        model = resolve_model(self.config)
        device = detect_device(engines.profile.device)
        # Probes must fail fast: a hung /health is as bad as a failed one.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        ports = free_ports(engines.replicas, _HOST)
        for index, port in enumerate(ports):
            replica = Replica(
                id=f"r{index}",
                model=engines.served_model_name,
                base_url=f"http://{_HOST}:{port}/v1",
                upstream_model=engines.served_model_name,
                priority_scheduling=self.config.scheduling.engine_priority,
            )
            self.routing.add(replica)
            self.runners.append(
                ReplicaRunner(
                    replica=replica,
                    port=port,
                    command=build_engine_command(
                        config=self.config, model=model, port=port, device=device, host=_HOST
                    ),
                    log_path=self.config.logs_dir / f"replica-{replica.id}.log",
                    settings=engines,
                    session=self._session,
                    notify=self._on_transition,
                    on_restart=self._on_restart,
                )
            )
        for runner in self.runners:
            runner.start()
        self._scraper = EngineMetricsScraper(
            metrics=self.metrics,
            replicas=lambda: self.replicas,
            interval_s=engines.metrics_interval_s,
        )
        self._scraper.start()

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
        for state in REPLICA_STATES:
            self.metrics.replica_state.labels(
                model=replica.model, replica=replica.id, state=state.value
            ).set(1 if state is replica.state else 0)
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
