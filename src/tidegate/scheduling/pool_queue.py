"""One pool's admission control: slots up to the ready replicas' capacity, and queues for the rest.

Discipline, each time a slot frees (or the scheduler ticks):

1. a batch request that has waited ``ageing_s`` goes first (oldest first) and may use any free
   slot, while batch requests hold fewer than half their share (the limit of step 3), so batch
   work is never starved: however much interactive traffic arrives, batch keeps that floor. A
   batch backlog that runs above the floor is the batch tenants' own overload, not starvation:
   its old requests wait their turn behind interactive ones (otherwise, once every queued batch
   request is older than ``ageing_s`` — as under a sustained batch flood they all are — batch
   would take every freed slot and interactive requests would queue behind it instead);
2. then interactive requests, fair between tenants (``FairQueue``), up to the whole capacity;
3. then batch requests, fair between tenants, but only while fewer than
   ``capacity - floor(capacity × interactive_reserve)`` slots are taken: the reserve stays free
   for interactive requests, which then start at once instead of queueing behind batch work.

Refusals are immediate and cost nothing: a full class queue raises ``QueueFullError`` (429), a
deadline already past raises ``QueueTimeoutError`` (503). A waiter that reaches its class's queue
timeout or its own deadline is taken out and gets ``QueueTimeoutError``; one whose client goes
away (its task is cancelled) is taken out at once.

The fast path — room in the pool and nobody waiting ahead — takes a slot without creating a task,
a future or a timer. Everything here runs on the event loop thread; nothing locks.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from tidegate.config import SchedulingConfig
from tidegate.errors import (
    NoReadyReplicaError,
    QueueFullError,
    QueueTimeoutError,
    QueueTimeoutReason,
)
from tidegate.routing.replicas import Pool
from tidegate.scheduling.classes import CLASSES, PriorityClass
from tidegate.scheduling.fair_queue import FairQueue

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

    from tidegate.observability.metrics import GatewayMetrics

Clock = Callable[[], float]
_EWMA = 0.2


class WaiterState(Enum):
    WAITING = "waiting"
    GRANTED = "granted"
    EXPIRED = "expired"
    REMOVED = "removed"


@dataclass(eq=False, slots=True)
class Waiter:
    tenant: str
    cost: int
    klass: PriorityClass
    enqueued_at: float
    expires_at: float
    reason: QueueTimeoutReason
    """What ``expires_at`` is: the class's queue timeout or the request's own deadline."""
    state: WaiterState = WaiterState.WAITING
    granted_at: float = 0.0
    future: asyncio.Future[None] | None = field(default=None, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def holds_slot(self) -> bool:
        return self.state is WaiterState.GRANTED


class Slot:
    """One admitted request's place in a pool; ``release`` gives it back (once, however often
    it is called)."""

    __slots__ = ("_queue", "klass", "waited_s", "_granted_at")

    def __init__(
        self, queue: PoolQueue, klass: PriorityClass, waited_s: float, granted_at: float
    ) -> None:
        self._queue: PoolQueue | None = queue
        self.klass = klass
        self.waited_s = waited_s
        self._granted_at = granted_at

    @property
    def released(self) -> bool:
        return self._queue is None

    def release(self) -> None:
        queue = self._queue
        if queue is not None:
            self._queue = None
            queue.release_one(self._granted_at, self.klass)


class _ClassMetrics:
    __slots__ = ("depth", "wait", "full", "timeout", "deadline")

    def __init__(self, metrics: GatewayMetrics, model: str, klass: PriorityClass) -> None:
        self.depth: Gauge = metrics.queue_depth.labels(model, klass)
        self.wait: Histogram = metrics.queue_wait.labels(model, klass)
        self.full: Counter = metrics.queue_rejections.labels(model, klass, "queue_full")
        self.timeout: Counter = metrics.queue_rejections.labels(model, klass, "queue_timeout")
        self.deadline: Counter = metrics.queue_rejections.labels(model, klass, "deadline")


class PoolQueue:
    def __init__(
        self,
        *,
        pool: Pool,
        config: SchedulingConfig,
        default_concurrency: int,
        clock: Clock,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.pool = pool
        self._config = config
        self._default = max(1, default_concurrency)
        self._clock = clock
        weights = config.tenant_weights

        def weight(tenant: str) -> float:
            return weights.get(tenant, 1.0)

        self._queues: dict[PriorityClass, FairQueue[Waiter]] = {
            klass: FairQueue(quantum=config.quantum_tokens, weight=weight) for klass in CLASSES
        }
        self._settings = {"interactive": config.interactive, "batch": config.batch}
        self._ewma_wait: dict[PriorityClass, float] = dict.fromkeys(CLASSES, 0.0)
        self._ewma_hold: float | None = None
        """Mean time a slot is held (one request's service time), smoothed."""
        self._metrics = (
            {k: _ClassMetrics(metrics, pool.name, k) for k in CLASSES} if metrics else None
        )
        self.in_flight = 0
        """Slots taken: granted and not yet released."""
        self.batch_in_flight = 0
        """Of those, taken by batch requests."""
        self.waiting = 0
        """Requests queued, all classes."""
        self.refused_unready = 0
        """Requests refused because no replica was ready (an autoscaler at zero sees them)."""
        self._share: int | None = None
        """With several gateways: this gateway's share of the capacity (``cluster``); None:
        the whole capacity is ours."""

    # -- capacity -------------------------------------------------------------------------------

    def replica_capacity(self) -> int:
        """Requests the pool's ready replicas serve at once."""
        default = self._default
        return sum(r.max_concurrency or default for r in self.pool.replicas if r.ready)

    def capacity(self) -> int:
        """Requests this gateway admits at once: the replicas' capacity, or its share of it."""
        capacity = self.replica_capacity()
        share = self._share
        return capacity if share is None or share >= capacity else share

    def set_share(self, share: int | None) -> None:
        """This gateway's share of the pool (the cluster's heartbeat sets it; None: all).
        Slots freed by a larger share are handed out at once."""
        self._share = share
        self.dispatch()

    def batch_limit(self, capacity: int) -> int:
        """Slots batch requests may hold: all but the interactive reserve (at least one).

        On a share the reserve is rounded up, so each gateway keeps one for interactive
        requests even on a small share (rounded down, 25 % of a share of 3 would be none)."""
        fraction = self._config.interactive_reserve
        if self._share is None:
            reserve = int(capacity * fraction)
        else:
            reserve = math.ceil(capacity * fraction)
        return max(1, capacity - reserve) if capacity else 0

    def depth(self, klass: PriorityClass) -> int:
        return len(self._queues[klass])

    # -- taking and giving back slots -----------------------------------------------------------

    def try_acquire(self, klass: PriorityClass) -> Slot | None:
        """A slot at once if the pool has room for the class and nobody waits ahead."""
        if self.waiting:
            self.dispatch()
            if self._queues["interactive"] or (klass == "batch" and self._queues["batch"]):
                return None
        capacity = self.replica_capacity()
        if capacity == 0:
            self.refused_unready += 1
            raise NoReadyReplicaError(
                f"No replica of pool '{self.pool.name}' is ready yet (engines may still be "
                "loading). Retry after the Retry-After interval; GET /readyz tells when the model "
                "is up.",
                retry_after_s=2.0,
            )
        share = self._share
        if share is not None and share < capacity:
            capacity = share
        limit = capacity if klass == "interactive" else self.batch_limit(capacity)
        if self.in_flight >= limit:
            return None
        self.in_flight += 1
        if klass == "batch":
            self.batch_in_flight += 1
        if self._metrics is not None:
            self._metrics[klass].wait.observe(0.0)
        return Slot(self, klass, 0.0, self._clock())

    def release_one(
        self, granted_at: float | None = None, klass: PriorityClass | None = None
    ) -> None:
        """``granted_at``: when the slot was taken, for the service-time estimate; ``klass``:
        the class that held it."""
        self.in_flight -= 1
        if klass == "batch" and self.batch_in_flight > 0:
            self.batch_in_flight -= 1
        if granted_at is not None:
            held = self._clock() - granted_at
            self._ewma_hold = (
                held
                if self._ewma_hold is None
                else self._ewma_hold + _EWMA * (held - self._ewma_hold)
            )
        if self.waiting:
            self.dispatch()

    def predicted_wait_s(self, klass: PriorityClass) -> float:
        """How long a request of the class arriving now would wait for a slot: the requests
        queued ahead of it, served at capacity / mean slot hold time. 0 until a slot has been
        released (nothing is known yet)."""
        hold = self._ewma_hold
        capacity = self.capacity()
        if hold is None or capacity == 0:
            return 0.0
        ahead = len(self._queues["interactive"])
        if klass == "batch":
            ahead += len(self._queues["batch"])
        return (ahead + 1) * hold / capacity

    def expected_wait_s(self, klass: PriorityClass) -> float:
        """``predicted_wait_s``, but 0 when a slot of the class is free now and nobody of
        its class (or above) waits ahead, as ``try_acquire`` would grant it."""
        queues = self._queues
        if not queues["interactive"] and not (klass == "batch" and queues["batch"]):
            capacity = self.capacity()
            limit = capacity if klass == "interactive" else self.batch_limit(capacity)
            if self.in_flight < limit:
                return 0.0
        return self.predicted_wait_s(klass)

    def enqueue(
        self, klass: PriorityClass, *, tenant: str, cost: int, deadline_s: float | None
    ) -> Waiter:
        """Queue a request, or refuse it at once (``QueueFullError``, ``QueueTimeoutError``)."""
        settings = self._settings[klass]
        metrics = self._metrics[klass] if self._metrics is not None else None
        if len(self._queues[klass]) >= settings.max_queue_depth:
            if metrics is not None:
                metrics.full.inc()
            raise QueueFullError(
                f"The {klass} queue of pool '{self.pool.name}' is full "
                f"({settings.max_queue_depth} requests waiting). Retry after the Retry-After "
                "interval, or send fewer requests at once.",
                code="queue_full",
                retry_after_s=self.retry_after_s(klass),
            )
        now = self._clock()
        expires_at, reason = now + settings.queue_timeout_s, "queue_timeout"
        if deadline_s is not None and now + deadline_s < expires_at:
            expires_at, reason = now + deadline_s, "deadline"
            if deadline_s <= 0:
                if metrics is not None:
                    metrics.deadline.inc()
                raise self._timeout_error(klass, "deadline")
        waiter = Waiter(tenant, max(1, cost), klass, now, expires_at, reason)  # type: ignore[arg-type]
        self._queues[klass].push(waiter)
        self.waiting += 1
        if metrics is not None:
            metrics.depth.inc()
        return waiter

    def dispatch(self) -> None:
        """Grant free slots to waiters in the order the module docstring gives."""
        if not self.waiting:
            return
        now = self._clock()
        capacity = self.capacity()
        batch_limit = self.batch_limit(capacity)
        batch_floor = max(1, batch_limit // 2)
        interactive, batch = self._queues["interactive"], self._queues["batch"]
        while self.in_flight < capacity and self.waiting:
            oldest = batch.oldest()
            if (
                oldest is not None
                and now - oldest.enqueued_at >= self._config.ageing_s
                and self.batch_in_flight < batch_floor
            ):
                batch.remove(oldest)
                waiter = oldest
            elif interactive:
                waiter = interactive.pop()
            elif self.in_flight < batch_limit:
                waiter = batch.pop()
            else:
                return
            self._grant(waiter, now)

    def expire_due(self) -> None:
        """Give up every waiter past its timeout or deadline (the scheduler's tick calls this;
        waiters that await have their own timer too)."""
        if not self.waiting:
            return
        now = self._clock()
        for queue in self._queues.values():
            due = [w for w in queue.items() if w.expires_at <= now]
            for waiter in due:
                self.expire(waiter)

    def expire(self, waiter: Waiter) -> None:
        if waiter.state is not WaiterState.WAITING:
            return
        self._take_out(waiter, WaiterState.EXPIRED)
        if self._metrics is not None:
            m = self._metrics[waiter.klass]
            (m.deadline if waiter.reason == "deadline" else m.timeout).inc()
        if waiter.future is not None and not waiter.future.done():
            waiter.future.set_result(None)

    def remove(self, waiter: Waiter) -> None:
        """The request went away while queued: its place is freed at once."""
        if waiter.state is WaiterState.WAITING:
            self._take_out(waiter, WaiterState.REMOVED)

    def timeout_error(self, waiter: Waiter) -> QueueTimeoutError:
        return self._timeout_error(waiter.klass, waiter.reason)

    def retry_after_s(self, klass: PriorityClass) -> float:
        """A hint for Retry-After: how long requests of the class have been waiting lately."""
        return min(60.0, max(1.0, self._ewma_wait[klass]))

    # -- waiting --------------------------------------------------------------------------------

    async def acquire(
        self, klass: PriorityClass, *, tenant: str, cost: int, deadline_s: float | None
    ) -> Slot:
        slot = self.try_acquire(klass)
        if slot is not None:
            return slot
        return await self.wait(klass, tenant=tenant, cost=cost, deadline_s=deadline_s)

    async def wait(
        self, klass: PriorityClass, *, tenant: str, cost: int, deadline_s: float | None
    ) -> Slot:
        """Queue and wait for a slot (after ``try_acquire`` found none)."""
        waiter = self.enqueue(klass, tenant=tenant, cost=cost, deadline_s=deadline_s)
        self.dispatch()
        if waiter.state is WaiterState.WAITING:
            loop = asyncio.get_running_loop()
            waiter.future = loop.create_future()
            delay = max(0.0, waiter.expires_at - self._clock())
            waiter.timer = loop.call_later(delay, self.expire, waiter)
            try:
                await waiter.future
            except asyncio.CancelledError:
                if waiter.holds_slot:
                    self.release_one(klass=klass)  # granted as the client went: hand it on
                else:
                    self.remove(waiter)
                raise
            finally:
                waiter.timer.cancel()
        if waiter.state is WaiterState.EXPIRED:
            raise self.timeout_error(waiter)
        return Slot(self, klass, waiter.granted_at - waiter.enqueued_at, waiter.granted_at)

    # -- internals ------------------------------------------------------------------------------

    def _grant(self, waiter: Waiter, now: float) -> None:
        self._take_out(waiter, WaiterState.GRANTED)
        waiter.granted_at = now
        self.in_flight += 1
        if waiter.klass == "batch":
            self.batch_in_flight += 1
        waited = now - waiter.enqueued_at
        ewma = self._ewma_wait[waiter.klass]
        self._ewma_wait[waiter.klass] = ewma + _EWMA * (waited - ewma)
        if self._metrics is not None:
            self._metrics[waiter.klass].wait.observe(waited)
        if waiter.future is not None and not waiter.future.done():
            waiter.future.set_result(None)

    def _take_out(self, waiter: Waiter, state: WaiterState) -> None:
        """Out of its queue (if still there) into ``state``."""
        if waiter.state is WaiterState.WAITING:
            self._queues[waiter.klass].remove(waiter)
            self.waiting -= 1
            if self._metrics is not None:
                self._metrics[waiter.klass].depth.dec()
        waiter.state = state

    def _timeout_error(self, klass: PriorityClass, reason: QueueTimeoutReason) -> QueueTimeoutError:
        if reason == "deadline":
            message = (
                f"No slot of pool '{self.pool.name}' freed up before the request's deadline "
                "(x-tidegate-deadline-ms). Retry after the Retry-After interval or allow longer."
            )
        else:
            timeout = self._settings[klass].queue_timeout_s
            message = (
                f"The request waited {timeout:g} s in the {klass} queue of model "
                f"'{self.pool.name}' without getting a slot: the model is overloaded. Retry "
                "after the Retry-After interval."
            )
        return QueueTimeoutError(message, reason=reason, retry_after_s=self.retry_after_s(klass))
