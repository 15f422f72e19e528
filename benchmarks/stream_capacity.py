"""Streams sustained: the most concurrent paced streams a target carries without losing a frame
or pausing one stream past a limit, found by doubling then bisecting the stream count.

Each probe is one ``benchmarks.stream_client`` process holding N streams at once; a probe passes
when every stream completed with as many events as a lone stream gets and no gap between two
events of one stream exceeded ``max_pause_ms``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from benchmarks.targets import Target

MAX_PAUSE_MS = 200.0


@dataclass(frozen=True)
class Probe:
    streams: int
    ok: bool
    completed: int
    min_events: int
    max_gap_ms: float
    errors: list[str] = field(default_factory=list)


@dataclass
class Capacity:
    target: str
    sustained: int
    """The largest passing stream count (0: not even the smallest passed)."""
    expected_events: int
    probes: list[Probe] = field(default_factory=list)


def run_probe(target: Target, body: bytes, streams: int, timeout_s: float) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.stream_client",
        *("--url", f"{target.base_url}/chat/completions", "--body", body.decode()),
        *("--streams", str(streams), "--timeout", str(timeout_s)),
        *(arg for name, value in target.headers for arg in ("--header", f"{name}: {value}")),
    ]
    done = subprocess.run(command, capture_output=True, timeout=timeout_s + 60)
    if done.returncode != 0:
        return {
            "completed": 0,
            "min_events": 0,
            "max_gap_ms": 0.0,
            "errors": [done.stderr.decode(errors="replace")[-500:]],
        }
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


ProbeRunner = Callable[[Target, bytes, int, float], dict[str, Any]]


def streams_sustained(
    target: Target,
    body: bytes,
    *,
    start: int = 16,
    ceiling: int = 4096,
    resolution: float = 0.05,
    max_pause_ms: float = MAX_PAUSE_MS,
    timeout_s: float = 20.0,
    probe: ProbeRunner = run_probe,
) -> Capacity:
    """Double from ``start`` until a count fails (or ``ceiling``), then bisect until the bracket
    is within ``resolution`` of its lower end. A count fails when two probes in a row fail."""
    lone = probe(target, body, 1, timeout_s)
    capacity = Capacity(target.name, 0, int(lone["min_events"]))

    def passes(streams: int) -> bool:
        # A failed probe is tried once more: on a shared host one descheduled moment pauses
        # every stream at once, which says nothing about the count.
        return attempt(streams) or attempt(streams)

    def attempt(streams: int) -> bool:
        raw = probe(target, body, streams, timeout_s)
        ok: bool = (
            raw["completed"] == streams
            and raw["min_events"] >= capacity.expected_events > 0
            and float(raw["max_gap_ms"]) <= max_pause_ms
        )
        capacity.probes.append(
            Probe(
                streams,
                ok,
                raw["completed"],
                raw["min_events"],
                raw["max_gap_ms"],
                raw.get("errors", []),
            )
        )
        return ok

    low, high = 0, start
    while high <= ceiling and passes(high):
        low, high = high, high * 2
    if low == 0 and high == start:
        low, high = 0, start  # even ``start`` failed: look below it
    high = min(high, ceiling + 1)
    while high - low > max(1, int(low * resolution)):
        middle = (low + high) // 2
        if passes(middle):
            low = middle
        else:
            high = middle
    capacity.sustained = low
    return capacity


def capacity_json(capacities: list[Capacity]) -> list[dict[str, Any]]:
    """The JSON rows, each with its share of the direct upstream's figure."""
    direct = next((c.sustained for c in capacities if c.target == "direct"), 0)
    return [
        asdict(c) | {"pct_of_direct": None if not direct else 100 * c.sustained / direct}
        for c in capacities
    ]
