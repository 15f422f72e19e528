"""The share protocol against the real Redis script: for any sequence of gateways joining,
leaving, dying, admitting, releasing and syncing (a sync's reply arriving after admissions made
while it was out), what all gateways hold in flight never exceeds the pool's capacity, and no
gateway holds more than Redis records for it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.scheduling.cluster_lua import LEAVE, SYNC
from tidegate.scheduling.shares import PoolShare

REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LEASE_MS = 60_000


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(REDIS_URL)
    try:
        c.ping()
    except (OSError, redis.ConnectionError) as error:
        if os.environ.get("TIDEGATE_TEST_REQUIRE_REDIS"):
            raise
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {error}")
    yield c
    c.close()


@dataclass
class Gateway:
    name: str
    share: PoolShare = field(default_factory=lambda: PoolShare(fallback_members=3))
    in_flight: int = 0
    pending: list[int] | None = None
    """A sync's reply not yet applied (grant, target, members)."""


class Pool:
    def __init__(self, client: redis.Redis, capacity: int) -> None:
        self.client = client
        self.capacity = capacity
        base = f"tidegate-test-shares-{uuid.uuid4().hex[:12]}:cluster:p"
        self.keys = [f"{base}:members", f"{base}:grants"]
        self.sync_script = client.register_script(SYNC)
        self.leave_script = client.register_script(LEAVE)
        self.gateways: list[Gateway] = []

    def send(self, g: Gateway) -> None:
        """The script runs now; its reply is applied by ``receive``, later."""
        floor = g.share.floor(g.in_flight)
        args = [g.name, LEASE_MS, self.capacity, floor]
        g.pending = [int(v) for v in self.sync_script(keys=self.keys, args=args)]

    def receive(self, g: Gateway) -> None:
        if g.pending is not None:
            grant, target, members = g.pending
            g.share.synced(grant=grant, target=target, members=members, lease_until=0.0)
            g.pending = None

    def die(self, g: Gateway) -> None:
        """kill -9: its requests die with it, its lease runs out."""
        self.client.zadd(self.keys[0], {g.name: 0})
        self.gateways.remove(g)

    def leave(self, g: Gateway) -> None:
        """A clean stop, once its in-flight drained."""
        self.leave_script(keys=self.keys, args=[g.name])
        self.gateways.remove(g)

    def grants(self) -> dict[str, int]:
        raw = self.client.hgetall(self.keys[1])
        return {k.decode(): int(v) for k, v in raw.items()}

    def check(self) -> None:
        assert sum(g.in_flight for g in self.gateways) <= self.capacity
        grants = self.grants()
        for g in self.gateways:
            assert g.in_flight <= grants.get(g.name, 0) or g.in_flight == 0

    def cleanup(self) -> None:
        self.client.delete(*self.keys)


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["join", "die", "leave", "admit", "admit", "release", "send", "receive", "sync"]
        ),
        st.integers(min_value=0, max_value=7),
        st.integers(min_value=1, max_value=6),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(min_value=1, max_value=24), ops=OPS)
def test_sum_in_flight_never_exceeds_capacity(
    client: redis.Redis, capacity: int, ops: list[tuple[str, int, int]]
) -> None:
    pool = Pool(client, capacity)
    names = iter(f"gw-{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(1000))
    try:
        for op, which, n in ops:
            if op == "join" or not pool.gateways:
                pool.gateways.append(Gateway(next(names)))
                continue
            g = pool.gateways[which % len(pool.gateways)]
            if op == "die":
                pool.die(g)
            elif op == "leave" and g.in_flight == 0 and g.pending is None:
                pool.leave(g)
            elif op == "admit":
                # What the pool queue does: admit while in flight is below the local limit.
                g.in_flight = max(g.in_flight, min(g.share.limit, g.in_flight + n))
            elif op == "release":
                g.in_flight = max(0, g.in_flight - n)
            elif op == "send" and g.pending is None:
                pool.send(g)
            elif op == "receive":
                pool.receive(g)
            elif op == "sync":
                pool.receive(g)
                pool.send(g)
                pool.receive(g)
            pool.check()
    finally:
        pool.cleanup()


def test_shares_converge_to_an_equal_split_and_a_dead_member_is_reclaimed(
    client: redis.Redis,
) -> None:
    pool = Pool(client, 8)
    try:
        a, b, c = (Gateway(f"gw-{x}") for x in "abc")
        pool.gateways = [a, b, c]
        for _ in range(3):
            for g in pool.gateways:
                pool.send(g)
                pool.receive(g)
        assert sorted(g.share.limit for g in pool.gateways) == [2, 3, 3]
        assert {g.share.members for g in pool.gateways} == {3}
        pool.die(c)
        for _ in range(2):
            for g in pool.gateways:
                pool.send(g)
                pool.receive(g)
        assert [g.share.limit for g in pool.gateways] == [4, 4]
        assert set(pool.grants()) == {"gw-a", "gw-b"}
    finally:
        pool.cleanup()


def test_a_joining_member_only_gets_slots_the_others_released(client: redis.Redis) -> None:
    pool = Pool(client, 6)
    try:
        old = Gateway("gw-a")
        pool.gateways = [old]
        pool.send(old)
        pool.receive(old)
        old.in_flight = 6
        new = Gateway("gw-b")
        pool.gateways.append(new)
        pool.send(new)
        pool.receive(new)
        assert new.share.limit == 0  # everything is still in use by the old member
        pool.send(old)
        pool.receive(old)
        assert old.share.limit == 3  # it stops admitting at once ...
        assert pool.grants()["gw-a"] == 6  # ... but keeps what it has in flight
        old.in_flight = 4
        pool.send(old)
        pool.receive(old)
        pool.send(new)
        pool.receive(new)
        assert pool.grants() == {"gw-a": 4, "gw-b": 2}
        assert new.share.limit == 2
        pool.check()
    finally:
        pool.cleanup()


def test_admissions_made_while_a_sync_is_out_stay_covered(client: redis.Redis) -> None:
    """The reply of a sync can arrive after the gateway admitted more on its old limit: what it
    reported must already cover them."""
    pool = Pool(client, 8)
    try:
        a, b = Gateway("gw-a"), Gateway("gw-b")
        pool.gateways = [a]
        pool.send(a)
        pool.receive(a)
        pool.gateways.append(b)
        pool.send(b)
        pool.receive(b)
        pool.send(a)  # learns it is one of two; the reply is still on its way
        a.in_flight = a.share.limit  # 8, admitted meanwhile on the old limit
        pool.check()
        pool.receive(a)
        assert a.share.limit == 4
        for _ in range(2):
            pool.send(b)
            pool.receive(b)
            pool.check()
        assert b.share.limit == 0  # nothing was released yet
    finally:
        pool.cleanup()
