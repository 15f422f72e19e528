"""The batch benchmark's fake-upstream half at small scale: real gateway processes, a real
``kill -9`` mid-batch and a restart on the same store, and the exactly-once check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson


def test_small_batch_survives_a_kill_and_every_line_appears_once(tmp_path: Path) -> None:
    out = tmp_path / "batch.json"
    command = [sys.executable, "-m", "benchmarks.batch", "--skip-engine"]
    command += ["--lines", "400", "--crashes", "1", "--seed", "7", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]

    report = orjson.loads(out.read_bytes())["fake_upstream"]
    clean, crashed = report["runs"]
    assert len(crashed["crashes"]) == 1 and crashed["crashes"][0]["lines_done"] < 400
    for run in (clean, crashed):
        check = run["verification"]
        assert run["status"] == "completed" and check["ok"], run
        assert check["output_lines"] == 400 and check["error_lines"] == 0
        assert run["lines_per_s"] > 0
    assert "kill -9 at" in done.stdout.decode()
