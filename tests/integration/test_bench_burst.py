"""``tidegate bench run --scenario burst`` through a real gateway in front of the fake upstream:
phases, queue wait from the gateway's histogram, 429s when the queue overflows, the SLA verdict
and its exit code, and usage errors before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from benchmarks.batch_procs import gateway_launch
from benchmarks.targets import Launch, Processes, fake_upstream_launch, free_port
from tidegate_bench.cli import bench_app


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, admin key): one upstream slot pair (max_concurrency 2), a short queue."""
    work = tmp_path_factory.mktemp("burst-gateway")
    upstream_port, port = free_port(), free_port()
    with Processes(work) as procs:
        fake = fake_upstream_launch(port=upstream_port, model="demo", tokens=4)
        slow = ["--first-token-delay-s", "0.1", "--token-delay-s", "0.01"]
        procs.start("fake", Launch(fake.command + slow, fake.ready_url), 30)
        config = {
            "upstreams": [{"url": f"http://127.0.0.1:{upstream_port}/v1", "model": "demo",
                           "max_concurrency": 2}],
            "scheduling": {"interactive": {"max_queue_depth": 4, "queue_timeout_s": 5}},
        }  # fmt: skip
        launch, key = gateway_launch(home=work, port=port, config=config)
        procs.start("tidegate", launch, 60)
        yield f"http://127.0.0.1:{port}/v1", key


def _burst(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(
        bench_app,
        ["run", "--scenario", "burst", "--output-len", "4", "--no-progress", *args],
        env={"COLUMNS": "250"},
    )
    return done.exit_code, done.output


def test_open_loop_burst_reports_each_phase_and_misses_the_sla(
    gateway: tuple[str, str], tmp_path: Path
) -> None:
    url, key = gateway
    out = tmp_path / "burst.json"
    # 2 slots of ~0.15 s each serve ~13 req/s: 4 req/s is easy, 4 x 8 = 32 req/s is not.
    code, output = _burst(
        "-t", url, "--api-key", key, "--rate", "4", "--shape", "constant", "--baseline-s", "2",
        "--burst-factor", "8", "--burst-s", "2", "--cooldown-s", "2", "--scrape-interval", "0.5",
        "--sla", "ttft_p95=3s,error_rate=0.01", "--out", str(out),
    )  # fmt: skip
    assert code == 3, output  # completed, SLA missed
    doc = orjson.loads(out.read_bytes())
    assert doc["scenario"] == "burst" and doc["runs"][0]["label"] == "burst rate=4 x8"
    block = doc["runs"][0]["burst"]
    baseline, burst, cooldown = block["phases"]
    assert [p["name"] for p in block["phases"]] == ["baseline", "burst", "cooldown"]
    assert (baseline["requests"], burst["requests"], cooldown["requests"]) == (8, 64, 8)
    assert baseline["failed"] == 0 and baseline["http_429"] == 0
    assert burst["http_429"] > 0 and burst["error_rate"] > 0.01
    # The gateway queued during the burst: its own histogram says so.
    assert burst["queue_wait_count"] > 0 and burst["queue_wait_p95_ms"] > 50
    assert block["gateway"]["scrapes"] >= 8 and block["gateway"]["error"] == ""
    assert block["replicas"] == {}  # a remote upstream: no autoscaling pool
    assert block["sla"]["verdict"] == "fail"
    failed = {(c["phase"], c["key"]) for c in block["sla"]["checks"] if c["outcome"] == "fail"}
    assert ("burst", "error_rate") in failed and ("baseline", "error_rate") not in failed
    assert len(block["series"]) == 6 and max(s["offered_rps"] for s in block["series"]) == 32
    assert (out.parent / block["replicas_csv"]).read_text().startswith("pool,t_s,desired")
    assert "burst: per phase" in output and "FAIL" in output
    # The report draws the burst.
    done = CliRunner().invoke(bench_app, ["report", str(out), "--out", str(tmp_path / "r")])
    assert done.exit_code == 0 and (tmp_path / "r" / "burst_run1.png").is_file()


def test_closed_loop_burst_adds_workers_and_a_wrong_metrics_key_is_only_a_warning(
    gateway: tuple[str, str], tmp_path: Path
) -> None:
    url, key = gateway
    out = tmp_path / "closed.json"
    code, output = _burst(
        "-t", url, "--api-key", key, "-c", "1", "--baseline-s", "1.5", "--burst-factor", "2",
        "--burst-s", "1.5", "--cooldown-s", "1.5", "--metrics-key", "wrong",
        "--sla", "error_rate=0.5", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    block = orjson.loads(out.read_bytes())["runs"][0]["burst"]
    baseline, burst, cooldown = block["phases"]
    # Two workers during the burst, one before and after: about twice the requests.
    assert burst["requests"] > 1.5 * baseline["requests"] and baseline["requests"] >= 5
    assert burst["failed"] == 0
    assert "HTTP 401" in block["gateway"]["error"] and block["gateway"]["scrapes"] == 0
    assert burst["queue_wait_p95_ms"] is None
    assert block["sla"]["verdict"] == "pass"  # error_rate was measured; nothing else asked
    assert "--metrics-key" in output and "PASS" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "2", "--sla", "ttft_p95=2"], "a latency is a number with a unit"),
        (["--rate", "2", "--sla", "ttft=2s"], "key 'ttft' is unknown"),
        (["--rate", "2,4"], "takes one --rate value"),
        (["-c", "2", "-n", "10"], "drop -n/--duration"),
        (["--rate", "2", "--burst-s", "0"], "--burst-s must be > 0"),
        (["--rate", "2", "--shape", "ramp"], "--shape constant, poisson, gamma"),
        (["--rate", "2", "--warmup", "1"], "drop --warmup/--cooldown"),
        ([], "needs the baseline load"),
        (["-t", "http://127.0.0.1:9/v1", "--rate", "2"], "takes one --target"),
        (
            ["--scenario", "sweep", "--rate", "2", "--sla", "error_rate=0.1"],
            "needs --scenario burst",
        ),
        (["--rate", "2", "--metrics-url", "gw:9090/metrics"], "must be an http(s) URL or off"),
    ],
)
def test_usage_errors_come_before_any_request(args: list[str], message: str) -> None:
    # Nothing listens on this port: a usage error must come first, without a connection.
    code, output = _burst("-t", f"http://127.0.0.1:{free_port()}/v1", "--model", "m", *args)
    assert code == 2, output
    assert message in " ".join(output.split()), output
    assert "Traceback" not in output
