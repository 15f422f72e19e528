"""The lifecycle of one local replica: start, wait ready, watch, restart; stop on request.

A new process is STARTING until /health and /v1/models answer, then READY. Three failed health
checks in a row, or no readiness within ready_timeout_s, make it UNHEALTHY; a process that exits
on its own is CRASHED. Either way its process group is killed and, after the backoff delay, a
new process starts (STARTING again). ``drain()`` sets DRAINING and ``stop()`` ends in STOPPED;
once draining, no other state is taken, so nothing routes traffic back to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import aiohttp

from tidegate.background import BackgroundTask
from tidegate.config import EnginesConfig
from tidegate.engines.backoff import RestartBackoff
from tidegate.engines.probes import is_healthy, is_ready
from tidegate.engines.process import EngineProcess
from tidegate.engines.profile import EngineCommand
from tidegate.engines.state_file import ReplicaRecord
from tidegate.routing.replicas import Replica, ReplicaState

log = logging.getLogger(__name__)
LOADING_NOTE_INTERVAL_S = 10.0

_FAILED_CHECKS_UNHEALTHY = 3
_READY_POLL_S = 0.5


class _Outcome(Enum):
    READY = "ready"
    EXITED = "exited"
    TIMEOUT = "timeout"
    UNHEALTHY = "unhealthy"


class ReplicaRunner:
    """Owns one Replica's process and state; ``notify`` is called after every transition."""

    def __init__(
        self,
        *,
        replica: Replica,
        port: int,
        command: EngineCommand,
        log_path: Path,
        settings: EnginesConfig,
        session: aiohttp.ClientSession,
        notify: Callable[[ReplicaRunner], None],
        on_restart: Callable[[ReplicaRunner], None],
    ) -> None:
        self.replica = replica
        self.port = port
        self.command = command
        self.log_path = log_path
        self.settings = settings
        self.session = session
        self.notify = notify
        self.on_restart = on_restart
        self.root_url = f"http://127.0.0.1:{port}"
        self.backoff = RestartBackoff(
            initial_s=settings.restart_backoff_s,
            max_s=settings.restart_backoff_max_s,
            reset_after_s=settings.restart_backoff_reset_s,
        )
        self.process: EngineProcess | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.load_seconds: float | None = None
        self.restarts = 0
        self._stopping = False
        self._task = BackgroundTask(f"replica-{self.replica.id}", self._run)

    # -- public ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task.start()

    def begin_drain(self) -> None:
        """Take the replica out of routing now (``drain`` then waits for in-flight work)."""
        self._set_state(ReplicaState.DRAINING)
        self._stopping = True

    async def drain(self, *, deadline: float) -> None:
        """Take the replica out of routing and wait (until ``deadline``) for in-flight work."""
        self.begin_drain()
        while self.replica.outstanding > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop supervising, then SIGTERM (SIGKILL after stop_timeout_s) the process group."""
        await self._task.stop()
        if self.process is not None:
            await self.process.stop(timeout_s=self.settings.stop_timeout_s)
        self.ready_at = None
        self._set_state(ReplicaState.STOPPED)

    def record(self) -> ReplicaRecord:
        return ReplicaRecord(
            id=self.replica.id,
            pool=self.replica.pool_name,
            model=self.replica.model,
            state=self.replica.state.value,
            port=self.port,
            pid=self.process.pid if self.process is not None else None,
            started_at=self.started_at,
            ready_at=self.ready_at,
            load_seconds=self.load_seconds,
            restarts=self.restarts,
            log=str(self.log_path),
        )

    # -- lifecycle ------------------------------------------------------------------------

    def _set_state(self, state: ReplicaState) -> None:
        if self._stopping and state not in (ReplicaState.DRAINING, ReplicaState.STOPPED):
            return  # once draining, nothing may route traffic back to the replica
        self.replica.set_state(state)
        self.notify(self)

    async def _run(self) -> None:
        rid = self.replica.id
        while True:
            try:
                outcome, ready_for_s = await self._run_once()
            except OSError as exc:  # the engine python is missing or not executable
                log.error("replica %s could not be started: %s", rid, exc)
                outcome, ready_for_s = _Outcome.EXITED, None
            if outcome is _Outcome.EXITED:
                self._set_state(ReplicaState.CRASHED)
            else:
                self._set_state(ReplicaState.UNHEALTHY)
            if self.process is not None:
                # A crashed leader may leave vLLM's engine core behind; a hung one needs killing.
                await self.process.stop(timeout_s=self.settings.stop_timeout_s)
            self.ready_at = None
            if self._stopping:
                return
            delay = self.backoff.next_delay(ready_for_s=ready_for_s)
            log.warning(
                "replica %s %s (exit code %s); restarting in %.1fs, see %s",
                rid,
                outcome.value,
                self.process.returncode if self.process is not None else None,
                delay,
                self.log_path,
            )
            await asyncio.sleep(delay)
            self.restarts += 1
            self.on_restart(self)

    async def _run_once(self) -> tuple[_Outcome, float | None]:
        """One process from start to failure; returns why it failed and how long it was ready."""
        self.process = await EngineProcess.spawn(
            argv=self.command.argv, env=self.command.env, log_path=self.log_path
        )
        self.started_at = time.time()
        started = time.monotonic()
        self._set_state(ReplicaState.STARTING)
        log.info(
            "replica %s starting: vLLM loads the model; log %s", self.replica.id, self.log_path
        )
        outcome = await self._wait_ready(self.process, started)
        if outcome is not _Outcome.READY:
            return outcome, None
        self.load_seconds = time.monotonic() - started
        self.ready_at = time.time()
        ready_since = time.monotonic()
        self._set_state(ReplicaState.READY)
        log.info(
            "replica %s ready after %.1fs on port %d", self.replica.id, self.load_seconds, self.port
        )
        outcome = await self._watch(self.process)
        return outcome, time.monotonic() - ready_since

    async def _wait_ready(self, process: EngineProcess, started: float) -> _Outcome:
        model = self.replica.upstream_model
        # Loading takes tens of seconds on a CPU: say it is still going, so a first start is
        # never silent between "starting" and "ready".
        next_note = started + LOADING_NOTE_INTERVAL_S
        while True:
            if await is_ready(self.session, self.root_url, model):
                return _Outcome.READY
            if time.monotonic() >= next_note:
                next_note += LOADING_NOTE_INTERVAL_S
                log.info(
                    "replica %s still loading (%.0fs so far)",
                    self.replica.id,
                    time.monotonic() - started,
                )
            if time.monotonic() - started > self.settings.ready_timeout_s:
                return _Outcome.TIMEOUT
            if await _exited_within(process, _READY_POLL_S):
                return _Outcome.EXITED

    async def _watch(self, process: EngineProcess) -> _Outcome:
        failures = 0
        while True:
            if await _exited_within(process, self.settings.health_interval_s):
                return _Outcome.EXITED
            if await is_healthy(self.session, self.root_url):
                failures = 0
                continue
            failures += 1
            if failures >= _FAILED_CHECKS_UNHEALTHY:
                return _Outcome.UNHEALTHY


async def _exited_within(process: EngineProcess, seconds: float) -> bool:
    done, _ = await asyncio.wait({process.exited}, timeout=seconds)
    return bool(done)
