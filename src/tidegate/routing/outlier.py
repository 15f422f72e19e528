"""Passive outlier ejection: replicas that keep failing real requests leave rotation for a while.

A refused connection ejects at once (the process is gone: a dead replica must be out within
seconds); other failures (5xx, dropped streams, timeouts) eject after ``consecutive_failures`` in
a row. The ejection time doubles with each ejection that follows without a success in between,
up to ``max_ejection_s``; the replica is simply eligible again when it runs out, and its first
success resets the backoff. At most ``max_ejected_share`` of a pool's replicas (at least one) are
ejected at once, so a pool-wide problem cannot empty the pool by ejection alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tidegate.config import HealthConfig
from tidegate.routing.replica import Replica

EjectHook = Callable[[str, Replica], None]
"""Called with the pool name and the replica just ejected (metrics, logs)."""


class OutlierDetector:
    def __init__(
        self,
        config: HealthConfig,
        *,
        on_eject: EjectHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = config.consecutive_failures
        self._base_s = config.base_ejection_s
        self._max_s = config.max_ejection_s
        self._share = config.max_ejected_share
        self._on_eject = on_eject
        self._clock = clock

    @staticmethod
    def record_success(replica: Replica) -> None:
        replica.record_success()

    def record_failure(
        self, pool: str, replicas: list[Replica], replica: Replica, *, decisive: bool
    ) -> bool:
        """Count a failed request; True when it ejected the replica. ``replicas``: the pool's."""
        failures = replica.record_failure()
        if not decisive and failures < self._threshold:
            return False
        now = self._clock()
        if replica.ejected(now):
            return False
        ejected = sum(1 for r in replicas if r.ejected(now))
        if ejected + 1 > max(1, int(len(replicas) * self._share)):
            return False
        # Doubles with each ejection since the last success (``ejections`` counts them).
        replica.eject(now + min(self._max_s, self._base_s * 2**replica.ejections))
        if self._on_eject is not None:
            self._on_eject(pool, replica)
        return True
