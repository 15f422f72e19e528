"""The content-safety gates in the overhead benchmark, end to end in --quick mode: each gated
gateway starts with its policy (the classifier's with the fake guard pool), serves every
scenario without an error, and the report says what each gate adds over plain tidegate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

GATES = ("denylist", "pii", "guard")
SCENARIOS = ("chat c=1", "chat c=16", "stream64 c=1")


def test_quick_overhead_run_measures_each_gate(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    targets = ",".join(("tidegate", *(f"tidegate-{gate}" for gate in GATES)))
    command = [sys.executable, "-m", "benchmarks.overhead", "--quick", "--targets", targets]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    report = orjson.loads(out.read_bytes())
    assert report["failures"] == [] and report["skipped"] == {}
    costs = {(c["gate"], c["scenario"]): c for c in report["safety_gates"]}
    assert set(costs) == {(gate, scenario) for gate in GATES for scenario in SCENARIOS}
    for cost in costs.values():
        assert cost["errors"] == 0 and cost["rps"] > 0 and cost["baseline_rps"] > 0
        # Present, not compared: --quick timings on a busy machine mean nothing.
        assert cost["added_p50_ms"] is not None and cost["added_p99_ms"] is not None
    assert costs[("guard", "stream64 c=1")]["added_ttft_p50_ms"] is not None
    assert "Content-safety gates: latency added over plain tidegate" in done.stdout.decode()
