"""``tidegate bench run | compare | cold-start`` end to end against a fake upstream process."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from tidegate_bench.cli import bench_app
from tidegate_bench.results import CSV_HEADER


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fake_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "tidegate_testing.fake_server", "--port", str(port),
            "--tokens", "8", "--first-token-delay-s", "0.01",
            "--token-delay-s", "0.002"]  # fmt: skip


@pytest.fixture
def fake_url() -> Iterator[str]:
    port = _port()
    proc = subprocess.Popen(_fake_argv(port), stdout=subprocess.PIPE)
    assert proc.stdout is not None and b"listening" in proc.stdout.readline()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_run_writes_json_and_csv_and_compare_reads_them(fake_url: str, tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    args = ["run", "-t", f"direct={fake_url}", "-t", f"name=priced,url={fake_url},"
            "input_price=1,output_price=2", "-c", "1,4", "-n", "12", "--output-len", "8",
            "--slo-ttft-ms", "5000", "--out", str(out), "--no-progress"]  # fmt: skip
    done = CliRunner().invoke(bench_app, args)
    assert done.exit_code == 0, done.output
    doc = orjson.loads(out.read_bytes())
    assert doc["tidegate_bench"] == 1 and doc["workload"]["kind"] == "synthetic"
    assert set(doc["client"]) == {"schedule_lag_p99_ms", "loop_lag_p99_ms", "cpu_percent",
                                  "median_latency_ms", "client_bound", "advice"}  # fmt: skip
    assert [r["label"] for r in doc["runs"]] == ["c=1", "c=4"]
    for run in doc["runs"]:
        assert run["shape"] == "closed" and run["rate"] is None
        assert {c["metric"] for c in run["comparisons"]} == {"ttft_ms", "e2el_ms", "tpot_ms"}
        for t in run["targets"]:
            assert t["completed"] == 12 and t["failed"] == 0 and t["model"] == "fake-model"
            assert t["total_output_tokens"] == 96 and t["goodput"] > 0
            assert set(t["ttft_ms"]) == {"mean", "median", "p90", "p95", "p99", "std"}
            assert t["timeline"] and len(t["timeline"][0]) == 3
            with (out.parent / t["requests_csv"]).open() as fh:
                rows = list(csv.reader(fh))
            assert tuple(rows[0]) == CSV_HEADER and len(rows) == 13
        priced = run["targets"][1]["cost"]
        assert (
            priced["per_request_usd"] > 0 and run["targets"][0]["cost"]["per_request_usd"] is None
        )
    assert "TTFT p50" in done.output

    done = CliRunner().invoke(bench_app, ["compare", str(out), str(out)])
    assert done.exit_code == 0, done.output
    assert "+0.0%" in done.output


def test_open_loop_run(fake_url: str, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    args = ["run", "-t", fake_url, "--rate", "40", "--shape", "gamma", "--burstiness", "0.5",
            "--duration", "1", "--workload", "shared-prefix", "--conversations", "4",
            "--turns", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    done = CliRunner().invoke(bench_app, args)
    assert done.exit_code == 0, done.output
    run = orjson.loads(out.read_bytes())["runs"][0]
    assert (run["label"], run["shape"], run["rate"]) == ("rate=40", "gamma", 40.0)
    assert run["targets"][0]["completed"] > 10


def test_cold_start_with_a_user_command(tmp_path: Path) -> None:
    port = _port()
    out = tmp_path / "cold.json"
    command = " ".join(_fake_argv(port))
    args = ["cold-start", "--command", command, "--url", f"http://127.0.0.1:{port}/v1",
            "--model", "fake-model", "--warm", "3", "--ready-timeout", "60",
            "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    done = CliRunner().invoke(bench_app, args)
    assert done.exit_code == 0, done.output
    data = orjson.loads(out.read_bytes())
    assert 0 < data["ready_s"] < time.perf_counter() - started
    # The fake waits 10 ms before its first token, cold or warm.
    assert data["first_ttft_ms"] >= 10 and data["warm_ttft_ms"] >= 10
    assert data["time_to_first_token_s"] > data["ready_s"]
