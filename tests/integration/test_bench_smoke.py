"""The overhead benchmark end to end in --quick mode: real processes, real load, sane figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson


def test_quick_overhead_run_against_direct_and_passthrough(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    command = [sys.executable, "-m", "benchmarks.overhead", "--quick"]
    command += ["--targets", "direct,passthrough", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    report = orjson.loads(out.read_bytes())
    assert report["failures"] == [] and report["skipped"] == {}
    rows = {(r["target"], r["scenario"]): r for r in report["rows"]}
    assert set(rows) == {
        (target, scenario)
        for target in ("direct", "passthrough")
        for scenario in ("chat c=1", "chat c=16", "stream64 c=1")
    }
    for row in rows.values():
        assert row["requests"] > 10 and row["errors"] == 0
        assert row["rps"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"] < 1000
    for scenario in ("chat c=1", "chat c=16", "stream64 c=1"):
        passthrough = rows[("passthrough", scenario)]
        # Present, not compared: a --quick run on a busy machine is too short for timings to
        # mean anything (figures belong to the full benchmark, not to tests).
        assert passthrough["added_p50_ms"] is not None
    stream = rows[("passthrough", "stream64 c=1")]
    assert stream["ttft_p50_ms"] > 0 and stream["chunk_p50_ms"] is not None
    assert stream["chunk_added_p50_ms"] is not None
    assert [c["name"] for c in stream["checks"]] == ["chunk added p50 ms"]
    assert "Overhead vs direct upstream" in done.stdout.decode()

    # Streams sustained: a short search (up to 4 streams) against the paced upstream.
    capacity = {c["target"]: c for c in report["streams_sustained"]}
    assert set(capacity) == {"direct", "passthrough"}
    for row in capacity.values():
        assert row["expected_events"] >= 64  # one per paced chunk, plus the role and the end
        assert row["probes"] and row["probes"][0]["streams"] == 2
        assert 0 <= row["sustained"] <= 4
    assert report["event_loop"] == []  # no tidegate among these targets
    assert "Streams sustained" in done.stdout.decode()
