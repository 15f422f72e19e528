"""One scrape of the gateway's ``/metrics``, reduced to what a burst run reports.

Parsed with prometheus_client's text parser. Names (the autoscaling contract of issue 18):

- ``tidegate_pool_desired_replicas{pool}``: routed replicas the autoscaler wants;
- ``tidegate_pool_replicas{pool,state}``: replicas by state (starting, standby, ready, draining);
- ``tidegate_replica_first_request_timestamp_seconds{pool,replica}``: unix time a replica served
  its first routed request (absent or 0 before that);
- ``tidegate_queue_wait_seconds{model,class}``: the scheduler's queue-wait histogram, summed over
  its series (``model`` is the pool).

A gateway without autoscaling pools has none of the first three: the replicas timeline is then
empty, which is not an error.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

REPLICA_STATES = ("starting", "standby", "ready", "draining")
_DESIRED = "tidegate_pool_desired_replicas"
_REPLICAS = "tidegate_pool_replicas"
_FIRST_REQUEST = "tidegate_replica_first_request_timestamp_seconds"
_QUEUE_WAIT = "tidegate_queue_wait_seconds"


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound in seconds -> count), total count and sum."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    total_s: float

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations between ``earlier`` and this one (a counter reset counts from 0)."""
        before = dict(earlier.buckets)
        if self.count < earlier.count:
            return self
        return Histogram(
            tuple((le, c - before.get(le, 0.0)) for le, c in self.buckets),
            self.count - earlier.count,
            self.total_s - earlier.total_s,
        )

    def quantile(self, q: float) -> float | None:
        """Seconds, interpolated inside the bucket as Prometheus' histogram_quantile does."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower_bound  # beyond the last finite bound: its value is all we know
                width = cumulative - lower_count
                share = (rank - lower_count) / width if width > 0 else 1.0
                return lower_bound + (le - lower_bound) * share
            lower_bound, lower_count = le, cumulative
        return lower_bound

    @property
    def mean_s(self) -> float | None:
        return self.total_s / self.count if self.count > 0 else None


EMPTY_HISTOGRAM = Histogram((), 0.0, 0.0)


@dataclass(frozen=True)
class GatewaySample:
    desired: dict[str, float] = field(default_factory=dict)
    """Pool -> routed replicas desired."""
    replicas: dict[str, dict[str, float]] = field(default_factory=dict)
    """Pool -> state -> replicas."""
    first_request_unix: dict[tuple[str, str], float] = field(default_factory=dict)
    """(pool, replica) -> unix time of its first routed request, for replicas that served one."""
    queue_wait: Histogram = EMPTY_HISTOGRAM

    @property
    def pools(self) -> list[str]:
        return sorted(self.desired.keys() | self.replicas.keys())


def parse_sample(text: str, *, pools: Collection[str] = ()) -> GatewaySample:
    """The figures in one exposition; ``pools`` non-empty keeps only those pools.

    Raises ValueError when the text is not the Prometheus text format.
    """

    def kept(pool: str) -> bool:
        return not pools or pool in pools

    desired: dict[str, float] = {}
    replicas: dict[str, dict[str, float]] = {}
    first: dict[tuple[str, str], float] = {}
    buckets: dict[float, float] = {}
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == _DESIRED and kept(labels.get("pool", "")):
                desired[labels.get("pool", "")] = s.value
            elif s.name == _REPLICAS and kept(pool := labels.get("pool", "")):
                state = labels.get("state", "")
                if state in REPLICA_STATES:
                    replicas.setdefault(pool, dict.fromkeys(REPLICA_STATES, 0.0))[state] = s.value
            elif s.name == _FIRST_REQUEST and kept(labels.get("pool", "")) and s.value > 0:
                first[(labels.get("pool", ""), labels.get("replica", ""))] = s.value
            elif family.name == _QUEUE_WAIT and kept(labels.get("model", "")):
                if s.name == _QUEUE_WAIT + "_bucket":
                    le = float(labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
                elif s.name == _QUEUE_WAIT + "_count":
                    count += s.value
                elif s.name == _QUEUE_WAIT + "_sum":
                    total += s.value
    histogram = Histogram(tuple(sorted(buckets.items())), count, total)
    return GatewaySample(desired, replicas, first, histogram)


@dataclass(frozen=True)
class Snapshot:
    """A sample and when it was taken: seconds since the run's start, and unix time."""

    t_s: float
    unix: float
    sample: GatewaySample


def at_or_before(snapshots: Sequence[Snapshot], t_s: float) -> Snapshot | None:
    """The last snapshot taken no later than ``t_s`` (snapshots ascending by time)."""
    found = None
    for snap in snapshots:
        if snap.t_s > t_s:
            break
        found = snap
    return found


def nearest(snapshots: Sequence[Snapshot], t_s: float) -> Snapshot | None:
    """The snapshot taken closest to ``t_s`` (the last one for ``t_s`` = inf)."""
    if not snapshots:
        return None
    if math.isinf(t_s):
        return snapshots[-1]
    return min(snapshots, key=lambda snap: abs(snap.t_s - t_s))
