"""The usage meter's backlog, read at scrape time (nothing is counted on the request path).

- ``tidegate_usage_pending_events``: usage events recorded but not yet known to be stored (in
  memory; segments whose events were dropped from memory during a long outage count below);
- ``tidegate_usage_pending_segments``: sealed WAL segments waiting for the store;
- ``tidegate_usage_wal_bytes``: bytes of WAL segments in the meter's directory (this process's
  and any dead one's not yet replayed). It grows while the store is down, at about 400 bytes
  per request, and falls back to one open segment once the store takes the backlog.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tidegate.metering import UsageMeter


class UsageCollector(Collector):
    def __init__(self, meter: UsageMeter) -> None:
        self._meter = meter

    def collect(self) -> Iterator[GaugeMetricFamily]:
        meter = self._meter
        yield GaugeMetricFamily(
            "tidegate_usage_pending_events",
            "Usage events recorded but not yet stored (held in memory).",
            value=meter.pending_events,
        )
        yield GaugeMetricFamily(
            "tidegate_usage_pending_segments",
            "Write-ahead segments waiting for the store.",
            value=meter.pending_segments,
        )
        size = 0
        try:
            for path in meter.wal_directory.glob("usage-*.wal"):
                try:
                    size += path.stat().st_size
                except FileNotFoundError:
                    continue  # committed and deleted meanwhile
        except OSError:
            pass
        yield GaugeMetricFamily(
            "tidegate_usage_wal_bytes", "Bytes of usage write-ahead segments on disk.", value=size
        )


def register_usage_metrics(registry: CollectorRegistry, meter: UsageMeter) -> None:
    registry.register(UsageCollector(meter))
