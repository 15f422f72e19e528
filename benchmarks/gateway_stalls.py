"""What a tidegate process reports about its own event loop: the worst stall and the worst full
garbage collection since it started serving, read from its /metrics (see
``tidegate.observability.loop_stalls``)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

_SERIES = {
    "tidegate_event_loop_stall_worst_seconds": "worst_stall_ms",
    "tidegate_gc_full_pause_worst_seconds": "worst_gc_pause_ms",
}
_GC_COUNT = "tidegate_gc_full_pause_seconds_count"

# Issue 16's target: no full collection may hold the loop longer than this.
MAX_GC_PAUSE_MS = 5.0


@dataclass(frozen=True)
class LoopReport:
    target: str
    worst_stall_ms: float | None
    worst_gc_pause_ms: float | None
    full_collections: int | None

    @property
    def gc_ok(self) -> bool:
        return self.worst_gc_pause_ms is not None and self.worst_gc_pause_ms <= MAX_GC_PAUSE_MS


def read_loop_report(target: str, origin: str, headers: tuple[tuple[str, str], ...]) -> LoopReport:
    """``origin``: the gateway's scheme://host:port; ``headers`` must open /metrics (admin key)."""
    request = urllib.request.Request(f"{origin}/metrics", headers=dict(headers))
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _SERIES:
                values[_SERIES[sample.name]] = sample.value * 1000
            elif sample.name == _GC_COUNT:
                values["full_collections"] = sample.value
    count = values.get("full_collections")
    return LoopReport(
        target,
        values.get("worst_stall_ms"),
        values.get("worst_gc_pause_ms"),
        None if count is None else int(count),
    )
