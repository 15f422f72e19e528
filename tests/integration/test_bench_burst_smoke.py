"""``make bench-burst`` end to end in seconds: the benchmark's own gateways (``tidegate up``),
calibration, the three configurations and the simulator's predictions, on a stand-in engine
venv (fake-server replicas that "load" for a second) instead of vLLM."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from rich.console import Console

from benchmarks.burst import Options, render, run_benchmark
from tests.integration.test_autoscaling_pool import _STAND_IN, model_dir
from tidegate.config import Config, EngineProfile, EnginesConfig
from tidegate.engines.install import MARKER_NAME, plan_install
from tidegate.engines.marker import write_json_atomic

# `tidegate up` checks the venv before it starts replicas: its install marker, and that
# `python -c "import vllm, transformers"` succeeds. The stand-in passes both.
_IMPORT_CHECK = """import sys
if sys.argv[1:2] == ["-c"]:
    sys.exit(0)
"""


def stand_in_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    script = _STAND_IN.format(python=sys.executable).split("\n", 1)
    python.write_text(script[0] + "\n" + _IMPORT_CHECK + script[1])
    python.chmod(0o755)
    config = Config(engines=EnginesConfig(venv=str(venv), profile=EngineProfile(device="cpu")))
    write_json_atomic(venv / MARKER_NAME, plan_install(config).marker())
    return venv


async def test_the_burst_benchmark_runs_every_configuration(tmp_path: Path) -> None:
    options = Options(
        baseline_s=1.0, burst_s=4.0, cooldown_s=2.0, calibrate_s=1.5, max_num_seqs=2,
        capacity_multiple=4.0, baseline_fraction=0.5, input_len=8, output_len=4,
        scale_down_s=1.0, ready_timeout_s=60.0, out=tmp_path / "burst.json",
        venv=str(stand_in_venv(tmp_path)), model=model_dir(tmp_path),
        engine_args=("--first-token-delay-s", "0.3"), engine_env=(("FAKE_LOAD_S", "1.0"),),
    )  # fmt: skip
    console = Console(file=None, width=200, record=True)
    report = await run_benchmark(options, console)
    render(report, console)
    assert report["benchmark"] == "burst" and report["capacity_rps"] > 0
    assert report["plan"]["factor"] == 8.0
    rows = {r["config"]: r for r in report["configs"]}
    assert list(rows) == ["fixed", "autoscale", "standby"]
    for name, row in rows.items():
        m, s = row["measured"], row["simulated"]
        assert m["ttft_p95_s"]["burst"] and s["ttft_p95_s"]["burst"], name
        assert (tmp_path / "burst" / f"{name}.json").is_file()
        doc = orjson.loads((tmp_path / "burst" / f"{name}.json").read_bytes())
        assert doc["scenario"] == "burst" and doc["runs"][0]["burst"]["phases"]
    assert rows["fixed"]["measured"]["peak_ready"] == 1
    assert rows["fixed"]["simulated"]["to_new_replica_first_request_s"] is None
    for name in ("autoscale", "standby"):
        assert rows[name]["measured"]["peak_ready"] == 2, name
        assert rows[name]["measured"]["to_new_replica_first_request_s"] is not None, name
        assert rows[name]["simulated"]["peak_ready"] == 2, name
    assert "TTFT p95 burst" in console.export_text()
    # The simulator's cold start is the replica's own load, not the gateway's start-up.
    assert 1.0 <= report["pool_model"]["cold_start_s"] < report["gateway_spawn_to_ready_s"]
