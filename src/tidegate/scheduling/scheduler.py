"""The scheduler: one ``PoolQueue`` per model pool, and a tick that keeps them moving.

Slots are normally handed on when one is released; the tick (every ``tick_s``) also dispatches
when capacity appears without a release (a replica became ready), promotes aged batch requests and
gives up waiters past their deadline even if their own timer was late.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tidegate.background import BackgroundTask
from tidegate.config import SchedulingConfig
from tidegate.routing.replicas import Pool
from tidegate.scheduling.classes import PriorityClass
from tidegate.scheduling.pool_queue import Clock, PoolQueue, Slot

if TYPE_CHECKING:
    from tidegate.observability.metrics import GatewayMetrics


class Scheduler:
    def __init__(
        self,
        *,
        config: SchedulingConfig,
        default_concurrency: int,
        metrics: GatewayMetrics | None = None,
        clock: Clock = time.monotonic,
        tick_s: float = 0.25,
        shared: bool = False,
    ) -> None:
        """``default_concurrency``: per-replica capacity of replicas that do not state one (the
        engine profile's max_num_seqs; local replicas state their own pool's). ``shared``: the
        capacity is shared with other gateways (``cluster``), so a pool's queue admits nothing
        until the cluster's heartbeat gives it a share."""
        self._shared = shared
        self._config = config
        self._default = default_concurrency
        self._metrics = metrics
        self._clock = clock
        self._tick_s = tick_s
        self._queues: dict[Pool, PoolQueue] = {}
        self._ticker = BackgroundTask("scheduler-ticker", self._run)

    def queue(self, pool: Pool) -> PoolQueue:
        # An adapter pool shares its base pool's replicas, so their capacity is queued once.
        if pool.base is not None:
            pool = pool.base
        queue = self._queues.get(pool)
        if queue is None:
            queue = self._queues[pool] = PoolQueue(
                pool=pool,
                config=self._config,
                default_concurrency=self._default,
                clock=self._clock,
                metrics=self._metrics,
            )
            if self._shared:
                queue.set_share(0)
        return queue

    def try_acquire(self, pool: Pool, klass: PriorityClass) -> Slot | None:
        """A slot at once when the pool has room and nobody waits ahead; None: ``wait``."""
        queue = (self._queues.get(pool) if pool.base is None else None) or self.queue(pool)
        return queue.try_acquire(klass)

    def predicted_wait_s(self, pool: Pool, klass: PriorityClass) -> float:
        return self.queue(pool).predicted_wait_s(klass)

    def expected_wait_s(self, pool: Pool, klass: PriorityClass) -> float:
        """The wait a request of the class arriving now would see: 0 with a free slot."""
        return self.queue(pool).expected_wait_s(klass)

    async def wait(
        self,
        pool: Pool,
        klass: PriorityClass,
        *,
        tenant: str,
        cost: int,
        deadline_s: float | None = None,
    ) -> Slot:
        """Queue for a slot: it comes, or an error does (429 queue full, 503 queue timeout or
        deadline)."""
        return await self.queue(pool).wait(klass, tenant=tenant, cost=cost, deadline_s=deadline_s)

    async def acquire(
        self,
        pool: Pool,
        klass: PriorityClass,
        *,
        tenant: str,
        cost: int,
        deadline_s: float | None = None,
    ) -> Slot:
        """``try_acquire``, else ``wait``. 503 at once when no replica of the pool is ready."""
        slot = self.try_acquire(pool, klass)
        if slot is not None:
            return slot
        return await self.wait(pool, klass, tenant=tenant, cost=cost, deadline_s=deadline_s)

    def tick(self) -> None:
        for queue in self._queues.values():
            queue.expire_due()
            queue.dispatch()

    def start(self) -> None:
        self._ticker.start()

    async def stop(self) -> None:
        await self._ticker.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.tick()
