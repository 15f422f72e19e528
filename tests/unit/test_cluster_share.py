"""A gateway's share of a pool: the queue admits its share only, the reserve holds on a small
share, and without Redis the share falls back to a conservative one and says so."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from tests.unit.test_scheduler import FakeClock, config, make_pool, make_queue
from tidegate.config import SchedulingConfig
from tidegate.scheduling import Scheduler
from tidegate.scheduling.cluster import ClusterCapacity
from tidegate.scheduling.shares import PoolShare


def test_the_queue_admits_its_share_and_queues_the_rest() -> None:
    queue = make_queue(8)
    queue.set_share(2)
    assert queue.try_acquire("interactive") is not None
    assert queue.try_acquire("interactive") is not None
    assert queue.try_acquire("interactive") is None  # queued, not 503: the pool is up
    waiter = queue.enqueue("interactive", tenant="t", cost=1, deadline_s=None)
    queue.set_share(3)  # the share grew: the waiter gets the slot at once
    assert waiter.holds_slot
    assert queue.in_flight == 3


def test_a_share_of_nothing_queues_instead_of_refusing() -> None:
    queue = make_queue(8)
    queue.set_share(0)
    assert queue.try_acquire("interactive") is None


def test_a_shrunk_share_stops_admission_until_in_flight_is_below_it() -> None:
    queue = make_queue(8)
    slots = [queue.try_acquire("interactive") for _ in range(6)]
    queue.set_share(4)
    assert queue.try_acquire("interactive") is None
    for slot in slots[:2]:
        assert slot is not None
        slot.release()
    assert queue.try_acquire("interactive") is None  # 4 in flight: still at the share
    assert slots[2] is not None
    slots[2].release()
    assert queue.try_acquire("interactive") is not None


def test_the_interactive_reserve_rounds_up_on_a_share() -> None:
    queue = make_queue(8, interactive_reserve=0.25)
    assert queue.batch_limit(3) == 3  # one gateway alone: rounded down, as before
    queue.set_share(3)
    assert queue.batch_limit(3) == 2
    assert queue.try_acquire("batch") is not None
    assert queue.try_acquire("batch") is not None
    assert queue.try_acquire("batch") is None
    assert queue.try_acquire("interactive") is not None  # the reserved slot


def test_a_shared_scheduler_admits_nothing_before_its_first_share() -> None:
    scheduler = Scheduler(config=config(), default_concurrency=4, clock=FakeClock(), shared=True)
    pool = make_pool(4)
    assert scheduler.try_acquire(pool, "interactive") is None
    scheduler.queue(pool).set_share(1)
    assert scheduler.try_acquire(pool, "interactive") is not None


def test_fallback_divides_by_the_members_last_seen_and_never_grows_during_the_lease() -> None:
    share = PoolShare(fallback_members=3)
    share.failed(capacity=8, now=0.0)
    assert (share.limit, share.mode) == (2, "fallback")  # never synced: 8 // 3
    share.synced(grant=4, target=4, members=2, lease_until=10.0)
    assert (share.limit, share.mode) == (4, "cluster")
    share.synced(grant=1, target=4, members=2, lease_until=10.0)  # others still hold slots
    share.failed(capacity=8, now=5.0)
    assert share.limit == 1  # its grant may still count: not above it
    share.failed(capacity=8, now=11.0)
    assert share.limit == 4  # the lease ran out: 8 // 2
    share.failed(capacity=1, now=11.0)
    assert share.limit == 1  # at least one slot while the pool is up


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_without_redis_the_gateway_admits_a_conservative_share_and_says_so() -> None:
    registry = CollectorRegistry()
    scheduler = Scheduler(config=config(), default_concurrency=4, clock=FakeClock(), shared=True)
    pool = make_pool(6, 6)
    cluster = ClusterCapacity(
        scheduler=scheduler,
        pools=lambda: [pool],
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        key_prefix="tidegate-test",
        heartbeat_s=0.5,
        member_ttl_s=3.0,
        fallback_members=4,
        timeout_s=0.5,
        registry=registry,
    )
    await cluster.sync()
    await cluster.stop()
    assert scheduler.queue(pool).capacity() == 3  # 12 // 4
    sample = registry.get_sample_value
    assert sample("tidegate_cluster_capacity_mode", {"pool": "m", "mode": "fallback"}) == 1.0
    assert sample("tidegate_cluster_capacity_mode", {"pool": "m", "mode": "cluster"}) == 0.0
    assert sample("tidegate_cluster_share", {"pool": "m"}) == 3.0
    assert sample("tidegate_cluster_syncs_total", {"outcome": "error"}) == 1.0


def test_a_lease_shorter_than_two_heartbeats_is_refused_naming_both_fields() -> None:
    with pytest.raises(ValidationError, match=r"member_ttl_s \(0\.5\).*heartbeat_s \(0\.5\)"):
        SchedulingConfig.model_validate({"cluster": {"heartbeat_s": 0.5, "member_ttl_s": 0.5}})
