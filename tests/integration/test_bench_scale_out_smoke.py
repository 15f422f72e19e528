"""The scale-out benchmark end to end with tiny durations: one and two real gateway processes on
PostgreSQL and the run's own redis-server in front of the fake pool. It checks that every figure
is produced and that the pool's capacity held, not the figures (those belong to
`make bench-scale-out`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.store_fixtures import DEFAULT_POSTGRES_URL

pytestmark = pytest.mark.postgres


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_tiny_scale_out_run_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scale-out.json"
    postgres = os.environ.get("TIDEGATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    command = [sys.executable, "-m", "benchmarks.scale_out", "--out", str(out)]
    command += ["--gateways", "1", "2", "--seconds", "1", "--capacity", "6"]
    command += ["--workers", "12", "--batch-workers", "12", "--postgres-url", postgres]
    done = subprocess.run(command, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]

    report = orjson.loads(out.read_bytes())
    assert [run["gateways"] for run in report["runs"]] == [1, 2]
    for run in report["runs"]:
        assert run["requests"] > 0 and run["errors"] == 0, run
        assert 0 < run["peak_in_flight"] <= run["capacity"] == 6, run
        assert run["interactive_probes"] == 4 and run["interactive_errors"] == 0, run
        assert run["interactive_ttft_p95_ms"] > 0, run
        assert run["cluster_syncs_per_request"] > 0, run
        assert run["batch_served"] > 0 and run["batch_errors"] == 0, run
    assert report["peak_within_capacity"] is True
    assert "tidegate bench scale-out" in done.stdout.decode()
