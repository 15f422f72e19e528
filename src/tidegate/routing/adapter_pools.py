"""Adapter pools: a LoRA adapter version served by another pool's replicas.

An adapter version is a pool of its own in the routing table (so splits, shadow traffic and
rollouts between two versions work as between any two pools), sharing its base pool's replica
list and scheduler queue, and sending its vLLM LoRA name upstream as ``model``.

Adapter-aware balancing: a request for an adapter goes to a replica that has the adapter
registered when one does (another would answer 404), and among those by consistent hashing of
the adapter's name with bounded loads (``PrefixAffinity``), so each adapter keeps to a few
replicas, where its weights stay in the engine's LoRA slots, yet none takes more than
``load_factor`` times the mean load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from tidegate.config import PoolConfig
from tidegate.routing.balancer import PrefixAffinity, engine_load, outstanding_load
from tidegate.routing.replica import Replica
from tidegate.routing.replicas import Pool


class AdapterAffinity:
    """Replicas with ``adapter`` registered first; among them a bounded-load hash ring."""

    def __init__(self, adapter: str, *, settings: PoolConfig) -> None:
        self.adapter = adapter
        digest = hashlib.blake2b(b"adapter\x1e" + adapter.encode(), digest_size=8).digest()
        self._key = int.from_bytes(digest, "little")
        load = engine_load if settings.engine_signals else outstanding_load
        self._ring = PrefixAffinity(load_factor=settings.affinity_load_factor, load=load)

    def pick(self, candidates: Sequence[Replica], *, affinity: int | None) -> Replica:
        adapter = self.adapter
        # Usually every replica has it: no list to build then.
        if not all(adapter in r.adapters for r in candidates):
            # None registered yet (the sync has not read the engines): any may have it from
            # its --lora-modules, so all stay candidates rather than none.
            candidates = [r for r in candidates if adapter in r.adapters] or candidates
        return self._ring.pick(candidates, affinity=self._key)


def adapter_pool(name: str, base: Pool, *, settings: PoolConfig | None = None) -> Pool:
    """The pool of adapter version ``name`` (its vLLM LoRA name) on ``base``'s replicas."""
    return Pool(
        name,
        replicas=base.replicas,
        balancer=AdapterAffinity(name, settings=settings or PoolConfig(name=base.name)),
        breaker=base.breaker,
        upstream_model=name,
        base=base,
    )
