from __future__ import annotations

from collections import Counter

import pytest

from tidegate.errors import ModelNotFoundError, NoReadyReplicaError
from tidegate.routing.replicas import Replica, ReplicaState, RoutingTable


def _replica(rid: str, state: ReplicaState = ReplicaState.READY, outstanding: int = 0) -> Replica:
    return Replica(
        id=rid,
        model="m",
        base_url=f"http://{rid}/v1",
        upstream_model="m",
        state=state,
        outstanding=outstanding,
    )


def test_only_ready_replicas_are_picked() -> None:
    table = RoutingTable()
    for replica in (
        _replica("a", ReplicaState.STARTING),
        _replica("b"),
        _replica("c", ReplicaState.DRAINING),
        _replica("d", ReplicaState.CRASHED),
    ):
        table.add(replica)
    assert {table.pool("m").pick().id for _ in range(50)} == {"b"}


def test_least_outstanding_wins_between_two_choices() -> None:
    table = RoutingTable()
    busy, idle = _replica("busy", outstanding=10), _replica("idle", outstanding=0)
    table.add(busy)
    table.add(idle)
    assert Counter(table.pool("m").pick().id for _ in range(100)) == {"idle": 100}


def test_load_spreads_over_equal_replicas() -> None:
    table = RoutingTable()
    for rid in "abcd":
        table.add(_replica(rid))
    picks = Counter(table.pool("m").pick().id for _ in range(4000))
    assert set(picks) == set("abcd")
    assert min(picks.values()) > 700


def test_avoid_skips_a_failed_replica_when_another_is_ready() -> None:
    table = RoutingTable()
    a, b = _replica("a"), _replica("b")
    table.add(a)
    table.add(b)
    assert all(table.pool("m").pick(avoid=a) is b for _ in range(20))


def test_no_ready_replica_is_retryable_503() -> None:
    table = RoutingTable()
    table.add(_replica("a", ReplicaState.STARTING))
    with pytest.raises(NoReadyReplicaError) as raised:
        table.pool("m").pick()
    assert raised.value.status == 503 and raised.value.retry_after_s


def test_unknown_model_names_the_served_ones() -> None:
    table = RoutingTable()
    table.add(_replica("a"))
    with pytest.raises(ModelNotFoundError, match="Models served here: m"):
        table.route("other")
