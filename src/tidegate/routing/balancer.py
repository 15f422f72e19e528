"""Balancers: which ready replica of a pool serves the next request.

A balancer sees the pool's candidates (ready, not ejected; never empty) and the request's
affinity key (None when the request carries none) and returns one of them. Pools build theirs
from ``routing.pools[].balancer`` in the config with ``build_balancer``.

``pick`` runs once per request, so it stays cheap: no scans beyond the candidates, and the
affinity ring is built once per candidate set and cached.

A replica's load is what the gateway has in flight on it (``outstanding``); with engine signals
on it also counts the requests queued inside the engine (``engine_waiting``, scraped from its
/metrics), which the gateway does not see when other clients share the engine.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from tidegate.config import PoolConfig
from tidegate.routing.replica import Replica

Load = Callable[[Replica], int]

KV_CACHE_FULL = 0.95
"""A replica whose KV cache is this full would preempt or queue: avoid it while another has room."""

_MASK64 = (1 << 64) - 1


class Balancer(Protocol):
    def pick(self, candidates: Sequence[Replica], *, affinity: int | None) -> Replica: ...


def outstanding_load(replica: Replica) -> int:
    return replica.outstanding


def engine_load(replica: Replica) -> int:
    return replica.outstanding + replica.engine_waiting


class LeastOutstanding:
    """Least outstanding requests with power-of-two choices: two random candidates, the less
    loaded wins. Near-optimal load spread without scanning every replica or herding onto one."""

    def __init__(self, rng: random.Random | None = None, *, load: Load = outstanding_load) -> None:
        self._rng = rng or random.Random()
        self._load = load

    def pick(self, candidates: Sequence[Replica], *, affinity: int | None) -> Replica:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        return a if self._load(a) <= self._load(b) else b


class RoundRobin:
    """Each candidate in turn. Ignores load and affinity: the baseline the others are measured
    against, and fair when every request costs the same."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, candidates: Sequence[Replica], *, affinity: int | None) -> Replica:
        return candidates[next(self._counter) % len(candidates)]


def _point(text: str) -> int:
    # blake2b, not hash(): ring positions must agree between gateway processes and restarts.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _mix(key: int) -> int:
    """splitmix64's finaliser: spreads keys that are not already uniform (small integers, ids)
    over the ring; a bijection, so distinct keys stay distinct."""
    z = key & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class _Ring:
    """Virtual-node points of a candidate set, sorted once; ``owners[i]`` is the candidate index
    owning ``points[i]``. Points depend only on replica ids, so a replica leaving or joining only
    moves the keys on its own arcs."""

    __slots__ = ("owners", "points")

    def __init__(self, ids: Sequence[str], vnodes: int) -> None:
        nodes = sorted(
            (_point(f"{rid}#{v}"), index) for index, rid in enumerate(ids) for v in range(vnodes)
        )
        self.points = [p for p, _ in nodes]
        self.owners = [i for _, i in nodes]


class PrefixAffinity:
    """Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018).

    A request with an affinity key goes to the first replica clockwise from the key's point on
    the ring whose load is below ``ceil(load_factor * (total load + 1) / n)``, so requests of one
    conversation keep hitting the replica holding their prefix in its KV cache, yet no replica
    takes more than ``load_factor`` times the mean (plus one). A cap that high always leaves at
    least one replica below it, so the walk ends. Requests without a key go by least-outstanding
    with two choices.
    """

    def __init__(
        self,
        *,
        load_factor: float = 1.25,
        vnodes: int = 100,
        load: Load = outstanding_load,
        rng: random.Random | None = None,
        cached_rings: int = 8,
    ) -> None:
        if load_factor <= 1.0:
            raise ValueError("load_factor must be above 1")
        self.load_factor = load_factor
        self._vnodes = vnodes
        self._load = load
        self._fallback = LeastOutstanding(rng, load=load)
        # A few candidate sets, not one: ejection and KV-cache avoidance flip between sets, and
        # rebuilding a ring each flip would cost a sort per request.
        self._rings: OrderedDict[tuple[str, ...], _Ring] = OrderedDict()
        self._cached_rings = cached_rings

    def _ring(self, candidates: Sequence[Replica]) -> _Ring:
        ids = tuple(r.id for r in candidates)
        ring = self._rings.get(ids)
        if ring is None:
            ring = self._rings[ids] = _Ring(ids, self._vnodes)
            if len(self._rings) > self._cached_rings:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(ids)
        return ring

    def pick(self, candidates: Sequence[Replica], *, affinity: int | None) -> Replica:
        if affinity is None:
            return self._fallback.pick(candidates, affinity=None)
        if len(candidates) == 1:
            return candidates[0]
        loads = [self._load(r) for r in candidates]
        cap = math.ceil(self.load_factor * (sum(loads) + 1) / len(candidates))
        ring = self._ring(candidates)
        start = bisect.bisect_left(ring.points, _mix(affinity))
        size = len(ring.points)
        seen: set[int] = set()
        for step in range(size):
            owner = ring.owners[(start + step) % size]
            if owner in seen:
                continue
            if loads[owner] < cap:
                return candidates[owner]
            seen.add(owner)
            if len(seen) == len(candidates):
                break
        # Unreachable while loads are non-negative (see the class docstring); stay total anyway.
        return candidates[min(range(len(candidates)), key=loads.__getitem__)]


class AvoidFullKvCache:
    """Engine signals: leaves out replicas whose KV cache is at least ``threshold`` full while
    another candidate is below it (a full cache means preemption or queueing in the engine),
    then lets ``inner`` choose. When all are full, all stay candidates."""

    def __init__(self, inner: Balancer, *, threshold: float = KV_CACHE_FULL) -> None:
        self.inner = inner
        self.threshold = threshold

    def pick(self, candidates: Sequence[Replica], *, affinity: int | None) -> Replica:
        if any(r.kv_cache_usage >= self.threshold for r in candidates):
            roomy = [r for r in candidates if r.kv_cache_usage < self.threshold]
            if roomy:
                candidates = roomy
        return self.inner.pick(candidates, affinity=affinity)


def build_balancer(config: PoolConfig, *, rng: random.Random | None = None) -> Balancer:
    """The balancer a pool's config asks for, engine-signal aware when ``engine_signals``."""
    load = engine_load if config.engine_signals else outstanding_load
    balancer: Balancer
    if config.balancer == "round_robin":
        balancer = RoundRobin()
    elif config.balancer == "prefix_affinity":
        balancer = PrefixAffinity(load_factor=config.affinity_load_factor, load=load, rng=rng)
    else:
        balancer = LeastOutstanding(rng, load=load)
    return AvoidFullKvCache(balancer) if config.engine_signals else balancer
