"""The scheduler's queue discipline, driven synchronously with an injectable clock where it can be
(priority order, headroom, ageing, timeouts, deadlines) and on the event loop where waiting is
the point (cancellation, timers)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tidegate.config import SchedulingConfig
from tidegate.errors import NoReadyReplicaError, QueueFullError, QueueTimeoutError
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import Pool, Replica, ReplicaState
from tidegate.scheduling import PoolQueue, Scheduler, Slot, Waiter
from tidegate.scheduling.pool_queue import WaiterState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_pool(*capacities: int, state: ReplicaState = ReplicaState.READY) -> Pool:
    pool = Pool("m")
    for index, capacity in enumerate(capacities):
        pool.replicas.append(
            Replica(
                id=f"r{index}",
                model="m",
                base_url="http://x/v1",
                upstream_model="m",
                state=state,
                max_concurrency=capacity,
            )
        )
    return pool


def config(**overrides: Any) -> SchedulingConfig:
    base: dict[str, Any] = {"interactive_reserve": 0.0}
    base.update(overrides)
    return SchedulingConfig.model_validate(base)


def make_queue(
    *capacities: int,
    clock: FakeClock | None = None,
    metrics: GatewayMetrics | None = None,
    **overrides: Any,
) -> PoolQueue:
    return PoolQueue(
        pool=make_pool(*capacities),
        config=config(**overrides),
        default_concurrency=16,
        clock=clock or FakeClock(),
        metrics=metrics,
    )


def fill(queue: PoolQueue, n: int) -> list[Slot]:
    slots = []
    for _ in range(n):
        slot = queue.try_acquire("interactive")
        assert slot is not None
        slots.append(slot)
    return slots


def enqueue(queue: PoolQueue, klass: str, tenant: str = "t", cost: int = 100) -> Waiter:
    return queue.enqueue(klass, tenant=tenant, cost=cost, deadline_s=None)  # type: ignore[arg-type]


def test_fast_path_up_to_capacity_then_none() -> None:
    queue = make_queue(2, 1)
    assert queue.capacity() == 3
    slots = fill(queue, 3)
    assert queue.try_acquire("interactive") is None
    assert queue.in_flight == 3
    slots[0].release()
    slots[0].release()  # exactly once, however often it is called
    assert queue.in_flight == 2
    assert queue.try_acquire("interactive") is not None


def test_replicas_that_state_no_capacity_use_the_profile_default() -> None:
    assert make_queue(0).capacity() == 16


def test_only_ready_replicas_count_and_none_ready_is_503_at_once() -> None:
    queue = make_queue(4)
    queue.pool.replicas[0].state = ReplicaState.STARTING
    with pytest.raises(NoReadyReplicaError):
        queue.try_acquire("interactive")


def test_interactive_goes_before_batch_that_queued_first() -> None:
    queue = make_queue(2)
    slots = fill(queue, 2)
    batch = [enqueue(queue, "batch") for _ in range(3)]
    interactive = enqueue(queue, "interactive")
    slots[0].release()
    assert interactive.state is WaiterState.GRANTED
    assert all(w.state is WaiterState.WAITING for w in batch)
    slots[1].release()
    assert batch[0].state is WaiterState.GRANTED
    assert queue.in_flight == 2 and queue.waiting == 2


def test_a_waiting_interactive_request_blocks_the_fast_path_of_later_ones() -> None:
    queue = make_queue(1)
    (slot,) = fill(queue, 1)
    first = enqueue(queue, "interactive")
    slot.release()  # hands the slot to the waiter, not to whoever asks next
    assert first.state is WaiterState.GRANTED
    assert queue.try_acquire("interactive") is None


def test_headroom_keeps_the_reserve_for_interactive() -> None:
    queue = make_queue(8, interactive_reserve=0.25)
    assert queue.batch_limit(8) == 6
    batch_slots = [queue.try_acquire("batch") for _ in range(6)]
    assert all(batch_slots)
    assert queue.try_acquire("batch") is None  # 2 slots free, but they are the reserve
    waiting = enqueue(queue, "batch")
    queue.dispatch()
    assert waiting.state is WaiterState.WAITING
    assert queue.try_acquire("interactive") is not None  # interactive starts at once
    assert queue.try_acquire("interactive") is not None
    assert queue.try_acquire("interactive") is None  # the pool is full now


def test_headroom_always_leaves_batch_one_slot() -> None:
    queue = make_queue(1, interactive_reserve=0.9)
    assert queue.batch_limit(1) == 1
    assert queue.try_acquire("batch") is not None


def test_ageing_serves_old_batch_first_and_lets_it_use_the_reserve() -> None:
    clock = FakeClock()
    queue = make_queue(4, clock=clock, interactive_reserve=0.5, ageing_s=10.0)
    slots = fill(queue, 4)
    old_batch = enqueue(queue, "batch")
    clock.advance(11)
    fresh = enqueue(queue, "interactive")
    slots[0].release()
    assert old_batch.state is WaiterState.GRANTED
    assert fresh.state is WaiterState.WAITING
    # 4 of 4 slots taken, 3 by "interactive" and 1 by the aged batch request: past its limit of 2.
    assert queue.in_flight == 4


def test_batch_is_not_starved_by_a_steady_interactive_load() -> None:
    clock = FakeClock()
    queue = make_queue(2, clock=clock, ageing_s=5.0)
    slots = fill(queue, 2)
    batch = enqueue(queue, "batch")
    for _ in range(20):  # interactive work keeps arriving; each release goes to it ...
        waiter = enqueue(queue, "interactive")
        slot = slots.pop(0)
        slot.release()
        if batch.state is WaiterState.GRANTED:
            break
        assert waiter.state is WaiterState.GRANTED
        slots.append(Slot(queue, "interactive", 0.0, 0.0))
        clock.advance(1.0)
    assert batch.state is WaiterState.GRANTED  # ... until the batch request has aged


def test_depth_limit_is_per_class_and_refuses_fast() -> None:
    queue = make_queue(1, batch={"max_queue_depth": 2, "queue_timeout_s": 60})
    fill(queue, 1)
    enqueue(queue, "batch")
    enqueue(queue, "batch")
    started = time.perf_counter()
    with pytest.raises(QueueFullError) as caught:
        enqueue(queue, "batch")
    assert time.perf_counter() - started < 0.005
    assert caught.value.status == 429 and caught.value.code == "queue_full"
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s >= 1
    enqueue(queue, "interactive")  # the other class has its own depth


def test_zero_depth_never_queues() -> None:
    queue = make_queue(1, interactive={"max_queue_depth": 0, "queue_timeout_s": 1})
    fill(queue, 1)
    with pytest.raises(QueueFullError):
        enqueue(queue, "interactive")


def test_queue_timeout_expires_waiters() -> None:
    clock = FakeClock()
    metrics = GatewayMetrics()
    queue = make_queue(
        1, clock=clock, metrics=metrics, interactive={"max_queue_depth": 8, "queue_timeout_s": 2}
    )
    fill(queue, 1)
    waiter = enqueue(queue, "interactive")
    clock.advance(1.9)
    queue.expire_due()
    assert waiter.state is WaiterState.WAITING
    clock.advance(0.2)
    queue.expire_due()
    assert waiter.state is WaiterState.EXPIRED
    assert queue.waiting == 0
    error = queue.timeout_error(waiter)
    assert error.status == 503 and error.code == "queue_timeout" and error.retry_after_s
    value = metrics.registry.get_sample_value(
        "tidegate_queue_rejections_total",
        {"model": "m", "class": "interactive", "reason": "queue_timeout"},
    )
    assert value == 1.0
    assert (
        metrics.registry.get_sample_value(
            "tidegate_queue_depth", {"model": "m", "class": "interactive"}
        )
        == 0.0
    )


def test_deadline_shorter_than_the_timeout_wins() -> None:
    clock = FakeClock()
    queue = make_queue(1, clock=clock)
    fill(queue, 1)
    waiter = queue.enqueue("interactive", tenant="t", cost=1, deadline_s=0.5)
    assert waiter.reason == "deadline"
    clock.advance(0.6)
    queue.expire_due()
    assert waiter.state is WaiterState.EXPIRED
    assert queue.timeout_error(waiter).code == "deadline"


def test_a_deadline_already_past_is_refused_at_once() -> None:
    queue = make_queue(1)
    fill(queue, 1)
    with pytest.raises(QueueTimeoutError) as caught:
        queue.enqueue("interactive", tenant="t", cost=1, deadline_s=0.0)
    assert caught.value.reason == "deadline" and queue.waiting == 0


def test_removed_waiters_free_their_place() -> None:
    queue = make_queue(1, interactive={"max_queue_depth": 1, "queue_timeout_s": 10})
    fill(queue, 1)
    waiter = enqueue(queue, "interactive")
    queue.remove(waiter)
    assert queue.waiting == 0 and queue.depth("interactive") == 0
    enqueue(queue, "interactive")  # the place is free again


def test_tenants_share_by_weight_within_ten_percent() -> None:
    queue = make_queue(
        1,
        tenant_weights={"big": 3.0},
        quantum_tokens=256,
        interactive={"max_queue_depth": 10_000, "queue_timeout_s": 60},
    )
    (slot,) = fill(queue, 1)
    sizes = {"small": [30, 700, 120], "big": [500, 60, 900, 200], "other": [256]}
    waiters: list[Waiter] = []
    for tenant, costs in sizes.items():
        for i in range(600):
            waiters.append(enqueue(queue, "interactive", tenant, costs[i % len(costs)]))
    served = dict.fromkeys(sizes, 0)
    for _ in range(600):  # every tenant stays backlogged through the window
        slot.release()
        granted = [w for w in waiters if w.state is WaiterState.GRANTED]
        (w,) = granted
        served[w.tenant] += w.cost
        waiters.remove(w)
        slot = Slot(queue, "interactive", 0.0, 0.0)
    total = sum(served.values())
    weights = {"small": 1.0, "big": 3.0, "other": 1.0}
    for tenant, weight in weights.items():
        expected = weight / sum(weights.values())
        assert abs(served[tenant] / total - expected) <= 0.1 * expected, served


def test_a_request_far_larger_than_the_quantum_is_served_without_spinning() -> None:
    queue = make_queue(1, quantum_tokens=1)
    (slot,) = fill(queue, 1)
    huge = enqueue(queue, "interactive", "a", 10_000_000)
    enqueue(queue, "interactive", "b", 5)
    started = time.perf_counter()
    slot.release()
    assert time.perf_counter() - started < 0.01
    assert huge.state is WaiterState.WAITING  # b's small request fits first


def test_capacity_that_appears_is_used_on_the_next_tick() -> None:
    scheduler = Scheduler(config=config(), default_concurrency=1)
    pool = make_pool(1)
    queue = scheduler.queue(pool)
    fill(queue, 1)
    waiter = enqueue(queue, "interactive")
    pool.replicas.append(Replica(id="r9", model="m", base_url="http://y/v1", upstream_model="m"))
    scheduler.tick()
    assert waiter.state is WaiterState.WAITING  # still starting
    pool.replicas[-1].state = ReplicaState.READY
    scheduler.tick()
    assert waiter.state is WaiterState.GRANTED


async def test_cancelled_waiter_leaves_the_queue_at_once() -> None:
    scheduler = Scheduler(config=config(), default_concurrency=1)
    pool = make_pool(1)
    held = await scheduler.acquire(pool, "interactive", tenant="t", cost=1)
    task = asyncio.create_task(scheduler.acquire(pool, "interactive", tenant="t", cost=1))
    await asyncio.sleep(0)
    queue = scheduler.queue(pool)
    assert queue.waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.waiting == 0
    held.release()
    assert queue.in_flight == 0


async def test_a_slot_granted_as_the_waiter_is_cancelled_is_handed_back() -> None:
    scheduler = Scheduler(config=config(), default_concurrency=1)
    pool = make_pool(1)
    held = await scheduler.acquire(pool, "interactive", tenant="t", cost=1)
    task = asyncio.create_task(scheduler.acquire(pool, "interactive", tenant="t", cost=1))
    await asyncio.sleep(0)
    held.release()  # grants the waiter ...
    task.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scheduler.queue(pool).in_flight == 0


async def test_waiters_time_out_on_the_event_loop() -> None:
    cfg = config(interactive={"max_queue_depth": 4, "queue_timeout_s": 0.05})
    scheduler = Scheduler(config=cfg, default_concurrency=1)
    pool = make_pool(1)
    await scheduler.acquire(pool, "interactive", tenant="t", cost=1)
    started = time.perf_counter()
    with pytest.raises(QueueTimeoutError) as caught:
        await scheduler.acquire(pool, "interactive", tenant="t", cost=1)
    assert 0.04 <= time.perf_counter() - started < 0.5
    assert caught.value.reason == "queue_timeout"
    assert scheduler.queue(pool).waiting == 0


async def test_a_queued_waiter_gets_the_released_slot_with_its_wait_time() -> None:
    scheduler = Scheduler(config=config(), default_concurrency=1)
    pool = make_pool(1)
    held = await scheduler.acquire(pool, "batch", tenant="t", cost=1)
    task = asyncio.create_task(scheduler.acquire(pool, "batch", tenant="t", cost=1))
    await asyncio.sleep(0.02)
    held.release()
    slot = await task
    assert slot.klass == "batch" and slot.waited_s >= 0.015


def test_the_fast_path_creates_no_future_or_task() -> None:
    """Run with no event loop at all: creating a future, task or timer would need one."""
    scheduler = Scheduler(config=config(), default_concurrency=4)
    pool = make_pool(4)
    slots = [scheduler.try_acquire(pool, "interactive") for _ in range(2)]
    for _ in range(2):
        coro = scheduler.acquire(pool, "batch", tenant="t", cost=1)
        with pytest.raises(StopIteration) as done:
            coro.send(None)  # completes without ever suspending
        slots.append(done.value.value)
    assert all(isinstance(slot, Slot) for slot in slots)
    for slot in slots:
        assert slot is not None
        slot.release()
    assert scheduler.queue(pool).in_flight == 0


def test_aged_batch_jumps_ahead_only_below_its_floor() -> None:
    clock = FakeClock()
    queue = make_queue(4, clock=clock, interactive_reserve=0.5, ageing_s=10.0)
    batch_slots = [queue.try_acquire("batch") for _ in range(2)]  # batch's full share (2 of 4)
    assert all(batch_slots)
    interactive_slots = fill(queue, 2)
    old_batch = enqueue(queue, "batch")
    clock.advance(11)  # a batch backlog older than ageing_s: the batch tenant's own overload
    fresh = enqueue(queue, "interactive")
    interactive_slots[0].release()
    assert fresh.state is WaiterState.GRANTED  # the reserve stays with interactive
    assert old_batch.state is WaiterState.WAITING
    assert batch_slots[0] is not None and batch_slots[1] is not None
    batch_slots[0].release()  # batch still holds its floor (half its share): no jumping ahead
    assert old_batch.state is WaiterState.WAITING
    batch_slots[1].release()  # below the floor: the aged request goes first, reserve or not
    assert old_batch.state is WaiterState.GRANTED
    assert queue.batch_in_flight == 1
