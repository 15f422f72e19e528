"""Per-pool load signals for autoscalers (KEDA, HPA), read from the routing table at scrape time.

Nothing is counted on the request path: the collector sums the replicas' ``outstanding`` counters
when Prometheus scrapes. Per pool (``model`` label, a public model name from config):

- ``tidegate_pool_in_flight_requests``: requests the gateway has on the pool's replicas;
- ``tidegate_pool_ready_replicas``: replicas the balancer may pick;
- ``tidegate_pool_capacity``: ready replicas × requests one replica serves at once
  (``max_num_seqs`` of its local pool's engine profile for local replicas, which the supervisor
  sets as their ``max_concurrency``; ``max_concurrency`` of the upstream entry for remote ones);
- ``tidegate_pool_saturation``: in-flight / capacity (1 when nothing is ready but work is in
  flight, 0 when idle): above 1 requests queue inside the engines;
- ``tidegate_pool_circuit_open``: 1 while the pool's circuit breaker is not closed (open, or
  half-open until a probe succeeds), else 0 (also for pools without a breaker);
- ``tidegate_pool_ejected_replicas``: replicas out of rotation by passive outlier ejection.

A per-class queue depth comes with the scheduler; an autoscaler can then scale on that instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tidegate.routing.breaker import BreakerState
from tidegate.routing.replicas import RoutingTable


class PoolCollector(Collector):
    def __init__(self, *, routing: RoutingTable, default_concurrency: int) -> None:
        """``default_concurrency``: per-replica concurrency of replicas that do not state one."""
        self._routing = routing
        self._default = max(1, default_concurrency)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            "tidegate_pool_in_flight_requests",
            "Requests in flight on the pool's replicas.",
            labels=["model"],
        )
        ready = GaugeMetricFamily(
            "tidegate_pool_ready_replicas", "Replicas ready to serve.", labels=["model"]
        )
        capacity = GaugeMetricFamily(
            "tidegate_pool_capacity",
            "Requests the ready replicas serve at once (ready replicas x max_num_seqs).",
            labels=["model"],
        )
        saturation = GaugeMetricFamily(
            "tidegate_pool_saturation",
            "In-flight requests / capacity; above 1 requests wait in engine queues.",
            labels=["model"],
        )
        circuit_open = GaugeMetricFamily(
            "tidegate_pool_circuit_open",
            "1 while the pool's circuit breaker is open or half-open, else 0.",
            labels=["model"],
        )
        ejected = GaugeMetricFamily(
            "tidegate_pool_ejected_replicas",
            "Replicas out of rotation by passive outlier ejection.",
            labels=["model"],
        )
        now = time.monotonic()
        for pool in self._routing.pools():
            if pool.base is not None:
                continue  # an adapter pool's replicas are its base pool's: counted there once
            busy = sum(max(0, r.outstanding) for r in pool.replicas)
            ready_replicas = [r for r in pool.replicas if r.ready]
            cap = sum(r.max_concurrency or self._default for r in ready_replicas)
            labels = [pool.name]
            in_flight.add_metric(labels, busy)
            ready.add_metric(labels, len(ready_replicas))
            capacity.add_metric(labels, cap)
            saturation.add_metric(labels, busy / cap if cap else (1.0 if busy else 0.0))
            breaker = pool.breaker
            circuit_open.add_metric(
                labels, 1 if breaker is not None and breaker.state is not BreakerState.CLOSED else 0
            )
            ejected.add_metric(labels, sum(1 for r in pool.replicas if r.ejected(now)))
        yield from (in_flight, ready, capacity, saturation, circuit_open, ejected)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # the model labels are only known at scrape time


def register_pool_metrics(
    registry: CollectorRegistry, *, routing: RoutingTable, default_concurrency: int
) -> PoolCollector:
    collector = PoolCollector(routing=routing, default_concurrency=default_concurrency)
    registry.register(collector)
    return collector
