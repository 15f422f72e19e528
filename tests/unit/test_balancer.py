from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from tidegate.config import PoolConfig
from tidegate.engines.engine_metrics import EngineMetricsScraper, EngineSample
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.balancer import (
    AvoidFullKvCache,
    LeastOutstanding,
    PrefixAffinity,
    RoundRobin,
    build_balancer,
    engine_load,
)
from tidegate.routing.replica import Replica, ReplicaState


def _replicas(n: int) -> list[Replica]:
    return [
        Replica(
            id=f"r{i}",
            model="m",
            base_url=f"http://r{i}/v1",
            upstream_model="m",
            state=ReplicaState.READY,
        )
        for i in range(n)
    ]


def _keys(count: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(count)]


# Round robin


def test_round_robin_takes_each_candidate_in_turn() -> None:
    replicas = _replicas(3)
    balancer = RoundRobin()
    picks = [balancer.pick(replicas, affinity=None).id for _ in range(7)]
    assert picks == ["r0", "r1", "r2", "r0", "r1", "r2", "r0"]


def test_round_robin_ignores_load_and_affinity() -> None:
    replicas = _replicas(2)
    replicas[0].outstanding = 50
    balancer = RoundRobin()
    assert Counter(balancer.pick(replicas, affinity=42).id for _ in range(10)) == {
        "r0": 5,
        "r1": 5,
    }


# Prefix affinity: stickiness


def test_affinity_is_sticky_while_loads_are_even() -> None:
    replicas = _replicas(4)
    balancer = PrefixAffinity()
    for key in _keys(50):
        first = balancer.pick(replicas, affinity=key)
        assert all(balancer.pick(replicas, affinity=key) is first for _ in range(5))


def test_affinity_spreads_distinct_keys() -> None:
    replicas = _replicas(4)
    balancer = PrefixAffinity()
    shares = Counter(balancer.pick(replicas, affinity=k).id for k in _keys(4000))
    assert set(shares) == {"r0", "r1", "r2", "r3"}
    # 100 virtual nodes per replica keep the arcs within a few tens of percent of even.
    assert max(shares.values()) < 1.5 * min(shares.values())


def test_small_integer_keys_spread_too() -> None:
    replicas = _replicas(2)
    balancer = PrefixAffinity()
    assert {balancer.pick(replicas, affinity=k).id for k in range(32)} == {"r0", "r1"}


def test_ring_positions_depend_on_ids_not_objects_or_order() -> None:
    keys = _keys(200)
    first = [PrefixAffinity().pick(_replicas(3), affinity=k).id for k in keys]
    reordered = list(reversed(_replicas(3)))
    again = [PrefixAffinity().pick(reordered, affinity=k).id for k in keys]
    assert first == again


def test_no_key_falls_back_to_least_outstanding() -> None:
    replicas = _replicas(2)
    replicas[0].outstanding = 9
    balancer = PrefixAffinity(rng=random.Random(1))
    assert Counter(balancer.pick(replicas, affinity=None).id for _ in range(20)) == {"r1": 20}


# Prefix affinity: minimal movement


def test_a_replica_leaving_moves_only_its_own_keys_and_returning_restores_them() -> None:
    replicas = _replicas(4)
    balancer = PrefixAffinity()
    keys = _keys(2000)
    before = {k: balancer.pick(replicas, affinity=k).id for k in keys}
    without = [r for r in replicas if r.id != "r2"]
    during = {k: balancer.pick(without, affinity=k).id for k in keys}
    moved = [k for k in keys if before[k] != during[k]]
    assert moved and all(before[k] == "r2" for k in moved)
    assert all(during[k] == before[k] for k in keys if before[k] != "r2")
    after = {k: balancer.pick(replicas, affinity=k).id for k in keys}
    assert after == before


def test_a_replica_joining_takes_about_its_share() -> None:
    balancer = PrefixAffinity()
    keys = _keys(2000)
    three = {k: balancer.pick(_replicas(3), affinity=k).id for k in keys}
    four = {k: balancer.pick(_replicas(4), affinity=k).id for k in keys}
    moved = [k for k in keys if three[k] != four[k]]
    assert all(four[k] == "r3" for k in moved)
    assert 0.15 < len(moved) / len(keys) < 0.35


# Prefix affinity: bounded load


def test_a_full_affine_replica_passes_the_request_clockwise() -> None:
    replicas = _replicas(2)
    balancer = PrefixAffinity(load_factor=1.25)
    key = _keys(1)[0]
    home = balancer.pick(replicas, affinity=key)
    other = next(r for r in replicas if r is not home)
    other.outstanding = 2
    home.outstanding = 5  # cap = ceil(1.25 * (7 + 1) / 2) = 5: home is full
    assert balancer.pick(replicas, affinity=key) is other
    home.outstanding = 4  # cap = ceil(1.25 * (6 + 1) / 2) = 5: home has room again
    assert balancer.pick(replicas, affinity=key) is home


def _skewed_key(rng: random.Random, hot: int, cold: list[int]) -> int:
    """One hot conversation takes half the traffic; 200 cold ones share the rest."""
    return hot if rng.random() < 0.5 else rng.choice(cold)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_hot_conversation_never_lifts_a_replica_above_the_bound(n: int) -> None:
    """Requests arriving with skewed keys: after every pick, no replica is above
    load_factor x mean + 1."""
    factor = 1.25
    replicas = _replicas(n)
    balancer = PrefixAffinity(load_factor=factor)
    rng = random.Random(3)
    hot, cold = _keys(1, seed=99)[0], _keys(200, seed=5)
    for _ in range(1000):
        balancer.pick(replicas, affinity=_skewed_key(rng, hot, cold)).outstanding += 1
        mean = sum(r.outstanding for r in replicas) / n
        assert max(r.outstanding for r in replicas) <= factor * mean + 1


@pytest.mark.parametrize("n", [2, 3, 5])
def test_with_departures_each_pick_respects_the_bound(n: int) -> None:
    """Requests also finish at random. Departures elsewhere may leave a replica above the bound
    (requests never move once placed), but no pick ever adds to a replica at the bound."""
    factor = 1.25
    replicas = _replicas(n)
    balancer = PrefixAffinity(load_factor=factor)
    rng = random.Random(4)
    hot, cold = _keys(1, seed=99)[0], _keys(200, seed=5)
    in_flight: list[Replica] = []
    for _ in range(5000):
        if in_flight and rng.random() < 0.45:
            in_flight.pop(rng.randrange(len(in_flight))).outstanding -= 1
            continue
        chosen = balancer.pick(replicas, affinity=_skewed_key(rng, hot, cold))
        chosen.outstanding += 1
        in_flight.append(chosen)
        mean = sum(r.outstanding for r in replicas) / n
        assert chosen.outstanding <= factor * mean + 1
    assert len(in_flight) > 5 * n  # the bound was exercised under real load


def test_the_cap_formula_matches_the_paper() -> None:
    replicas = _replicas(3)
    for r, load in zip(replicas, (4, 4, 1), strict=True):
        r.outstanding = load
    # cap = ceil(1.25 * (9 + 1) / 3) = 5: r0 and r1 are below it, r2 is too.
    balancer = PrefixAffinity(load_factor=1.25)
    assert math.ceil(1.25 * 10 / 3) == 5
    assert all(balancer.pick(replicas, affinity=k).outstanding < 5 for k in _keys(50))
    replicas[0].outstanding = replicas[1].outstanding = 5  # cap = ceil(1.25 * 12 / 3) = 5
    assert {balancer.pick(replicas, affinity=k).id for k in _keys(50)} == {"r2"}


def test_load_factor_must_exceed_one() -> None:
    with pytest.raises(ValueError):
        PrefixAffinity(load_factor=1.0)


def test_rings_are_cached_per_candidate_set() -> None:
    replicas = _replicas(3)
    balancer = PrefixAffinity(cached_rings=2)
    balancer.pick(replicas, affinity=1)
    ring = balancer._ring(replicas)
    balancer.pick(replicas[:2], affinity=1)
    assert balancer._ring(replicas) is ring  # still cached: the two sets fit
    balancer.pick(replicas[1:], affinity=1)
    balancer.pick(replicas[:2], affinity=1)
    assert balancer._ring(replicas) is not ring  # evicted as least recently used


# Engine signals


def test_engine_load_counts_the_engines_own_queue() -> None:
    replicas = _replicas(2)
    replicas[0].outstanding, replicas[0].engine_waiting = 1, 6
    replicas[1].outstanding = 3
    assert engine_load(replicas[0]) == 7
    balancer = LeastOutstanding(random.Random(0), load=engine_load)
    assert {balancer.pick(replicas, affinity=None).id for _ in range(10)} == {"r1"}


def test_full_kv_caches_are_avoided_while_another_has_room() -> None:
    replicas = _replicas(3)
    replicas[0].kv_cache_usage = 0.97
    replicas[1].kv_cache_usage = 0.95
    replicas[2].kv_cache_usage = 0.40
    balancer = AvoidFullKvCache(RoundRobin())
    assert {balancer.pick(replicas, affinity=None).id for _ in range(6)} == {"r2"}


def test_when_every_kv_cache_is_full_all_stay_candidates() -> None:
    replicas = _replicas(2)
    for r in replicas:
        r.kv_cache_usage = 0.99
    balancer = AvoidFullKvCache(RoundRobin())
    assert {balancer.pick(replicas, affinity=None).id for _ in range(4)} == {"r0", "r1"}


def test_the_scraper_stores_engine_signals_on_the_replica() -> None:
    replica = _replicas(1)[0]
    scraper = EngineMetricsScraper(metrics=GatewayMetrics(), replicas=list, interval_s=60)
    scraper.export(replica, EngineSample(requests_waiting=4.0, kv_cache_usage=0.5))
    assert (replica.engine_waiting, replica.kv_cache_usage) == (4, 0.5)
    scraper.export(replica, EngineSample())  # metrics the engine lacks leave the values alone
    assert (replica.engine_waiting, replica.kv_cache_usage) == (4, 0.5)


# The factory


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("least_outstanding", LeastOutstanding),
        ("round_robin", RoundRobin),
        ("prefix_affinity", PrefixAffinity),
    ],
)
def test_build_balancer_follows_the_pool_config(name: str, kind: type) -> None:
    plain = build_balancer(PoolConfig.model_validate({"name": "p", "balancer": name}))
    assert isinstance(plain, kind)
    aware = build_balancer(
        PoolConfig.model_validate({"name": "p", "balancer": name, "engine_signals": True})
    )
    assert isinstance(aware, AvoidFullKvCache) and isinstance(aware.inner, kind)


def test_build_balancer_passes_the_load_factor_and_engine_load() -> None:
    config = PoolConfig(
        name="p", balancer="prefix_affinity", affinity_load_factor=1.5, engine_signals=True
    )
    balancer = build_balancer(config)
    assert isinstance(balancer, AvoidFullKvCache)
    inner = balancer.inner
    assert isinstance(inner, PrefixAffinity) and inner.load_factor == 1.5
    replicas = _replicas(2)
    key = _keys(1)[0]
    home = inner.pick(replicas, affinity=key)
    home.engine_waiting = 3  # cap = ceil(1.5 * 4 / 2) = 3: full by the engine's queue alone
    assert balancer.pick(replicas, affinity=key) is not home
