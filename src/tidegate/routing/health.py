"""Active health checks of static remote replicas (upstreams with a ``health_check_path``).

Every ``interval_s`` each replica with a ``health_url`` is sent a GET, all at once, each bounded
by ``timeout_s``; a 2xx passes. ``unhealthy_threshold`` failures in a row take a ``READY``
replica out of rotation (``UNHEALTHY``); ``healthy_threshold`` passes in a row bring it back.
Rounds start on a fixed cadence rather than ``interval_s`` after the previous one ended, so a
hung replica cannot stretch the time until a dead one is noticed.

Local replicas have no ``health_url`` (the engine supervisor owns their state) and neither have
DNS-discovered ones (discovery owns theirs), so this checker never fights another owner over
``state``. It only moves replicas between ``READY`` and ``UNHEALTHY``: a replica some owner set
``DRAINING`` or ``STOPPED`` is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp

from tidegate.background import BackgroundTask
from tidegate.config import HealthConfig
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.metrics import export_replica_state
from tidegate.routing.replicas import Replica, ReplicaState, RoutingTable

log = logging.getLogger(__name__)

# The states this checker moves a replica out of; anything else belongs to another owner.
_CHECKED_STATES = (ReplicaState.READY, ReplicaState.UNHEALTHY, ReplicaState.STARTING)


@dataclass(slots=True)
class _Streak:
    """Check results in a row for one replica (only one of the two is non-zero)."""

    passed: int = 0
    failed: int = 0


class HealthChecker:
    """Polls the health URL of every replica in the routing table that has one."""

    def __init__(
        self,
        *,
        routing: RoutingTable,
        session: aiohttp.ClientSession,
        config: HealthConfig,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._routing = routing
        self._session = session
        self._interval_s = config.interval_s
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._unhealthy_threshold = config.unhealthy_threshold
        self._healthy_threshold = config.healthy_threshold
        self._metrics = metrics
        self._streaks: dict[Replica, _Streak] = {}
        self._task = BackgroundTask("health-checks", self._run)

    async def start(self) -> None:
        """Start polling (the first round runs at once). Nothing to do when no replica has a
        health URL: no task is started."""
        checked = self._checked()
        if not checked:
            return
        for replica in checked:
            self._export_state(replica)
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def check_all(self) -> None:
        """One round: check every replica with a health URL concurrently and apply results."""
        replicas = self._checked()
        results = await asyncio.gather(*(self._probe(r) for r in replicas))
        for replica, ok in zip(replicas, results, strict=True):
            self._record(replica, ok)

    def _checked(self) -> list[Replica]:
        return [r for r in self._routing.replicas() if r.health_url is not None]

    async def _probe(self, replica: Replica) -> bool:
        assert replica.health_url is not None
        try:
            async with self._session.get(replica.health_url, timeout=self._timeout) as response:
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _record(self, replica: Replica, ok: bool) -> None:
        streak = self._streaks.setdefault(replica, _Streak())
        if ok:
            streak.passed += 1
            streak.failed = 0
        else:
            streak.failed += 1
            streak.passed = 0
        state = replica.state
        if state not in _CHECKED_STATES:
            return
        if ok and state is not ReplicaState.READY and streak.passed >= self._healthy_threshold:
            log.info("replica %s passes its health checks again", replica.id)
            # It failed its checks, so a passive ejection during the outage was most likely for
            # the same cause; the checks now say it is back, so it need not sit out the rest.
            replica.readmit()
            self._set_state(replica, ReplicaState.READY)
        elif (
            not ok
            and state is not ReplicaState.UNHEALTHY
            and streak.failed >= self._unhealthy_threshold
        ):
            log.warning("replica %s failed %d health checks in a row", replica.id, streak.failed)
            self._set_state(replica, ReplicaState.UNHEALTHY)

    def _set_state(self, replica: Replica, state: ReplicaState) -> None:
        replica.set_state(state)
        self._export_state(replica)

    def _export_state(self, replica: Replica) -> None:
        if self._metrics is not None:
            export_replica_state(self._metrics, replica)

    async def _check_all_logged(self) -> None:
        try:
            await self.check_all()
        except Exception:  # the loop must outlive any one bad round
            log.exception("health check round failed")

    async def _run(self) -> None:
        next_round = time.monotonic()
        while True:
            await self._check_all_logged()
            next_round += self._interval_s
            # A round slower than the interval (hung replicas) starts the next one at once.
            next_round = max(next_round, time.monotonic())
            await asyncio.sleep(next_round - time.monotonic())
