"""Per-request latencies from the bench's CSV files, for the CDF plots.

Only successful requests (an empty ``error`` column) count; failed ones have no meaningful
TTFT, and their E2E time would mix timeouts into the latency distribution.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("ttft_ms", "e2el_ms", "error")


@dataclass(frozen=True)
class Latencies:
    """Successful requests' TTFT and E2E latency in milliseconds, each sorted ascending."""

    ttft_ms: tuple[float, ...]
    e2el_ms: tuple[float, ...]


def _number(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_latencies(path: Path) -> Latencies:
    """Read one requests CSV; raises ``OSError`` if unreadable, ``ValueError`` if malformed."""
    ttft: list[float] = []
    e2el: list[float] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            if row["error"]:
                continue
            if (value := _number(row["ttft_ms"])) is not None:
                ttft.append(value)
            if (value := _number(row["e2el_ms"])) is not None:
                e2el.append(value)
    return Latencies(ttft_ms=tuple(sorted(ttft)), e2el_ms=tuple(sorted(e2el)))
