"""The streams-sustained search: doubling then bisecting finds the largest passing count, and a
stream that lost a frame or paused too long fails its probe."""

from __future__ import annotations

from typing import Any

from benchmarks.stream_capacity import capacity_json, streams_sustained
from benchmarks.targets import Target

EVENTS = 66


def _carrying(limit: int, *, gap_ms: float = 20.0, short_by: int = 0) -> Any:
    """A target that carries up to ``limit`` streams whole; beyond that one stream breaks."""
    calls: list[int] = []

    def probe(target: Target, body: bytes, streams: int, timeout_s: float) -> dict[str, Any]:
        calls.append(streams)
        whole = streams <= limit
        return {
            "completed": streams if whole else streams - 1,
            "min_events": EVENTS - (0 if streams == 1 else short_by),
            "max_gap_ms": gap_ms,
        }

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


def test_the_search_finds_the_largest_passing_count_within_the_resolution() -> None:
    probe = _carrying(300)
    capacity = streams_sustained(Target("t", "http://x/v1"), b"{}", probe=probe)
    assert capacity.expected_events == EVENTS
    assert 300 * 0.95 <= capacity.sustained <= 300
    assert [p.streams for p in capacity.probes][:6] == [16, 32, 64, 128, 256, 512]
    assert all(p.ok == (p.streams <= 300) for p in capacity.probes)


def test_a_start_that_fails_searches_below_it_and_the_ceiling_caps_the_search() -> None:
    low = streams_sustained(Target("t", "http://x/v1"), b"{}", probe=_carrying(5))
    assert low.sustained == 5
    capped = streams_sustained(
        Target("t", "http://x/v1"), b"{}", probe=_carrying(10_000), ceiling=64
    )
    assert capped.sustained == 64


def test_a_long_pause_or_a_lost_frame_fails_the_probe() -> None:
    paused = streams_sustained(Target("t", "http://x/v1"), b"{}", probe=_carrying(999, gap_ms=250))
    assert paused.sustained == 0 and not any(p.ok for p in paused.probes)
    lossy = streams_sustained(Target("t", "http://x/v1"), b"{}", probe=_carrying(999, short_by=1))
    assert lossy.sustained == 1  # only a lone stream arrives whole


def test_the_json_gives_each_target_its_share_of_direct() -> None:
    direct = streams_sustained(Target("direct", "http://x/v1"), b"{}", probe=_carrying(200))
    gate = streams_sustained(Target("tidegate", "http://x/v1"), b"{}", probe=_carrying(100))
    rows = {row["target"]: row for row in capacity_json([direct, gate])}
    assert rows["direct"]["pct_of_direct"] == 100
    assert 45 <= rows["tidegate"]["pct_of_direct"] <= 55
