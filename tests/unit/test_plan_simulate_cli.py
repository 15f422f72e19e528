"""`tidegate plan simulate` through Typer's runner: the table and JSON of the committed example,
exit status 1 on a missed SLA, and exit status 2 with a message for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidegate.commands.plan import plan_app

EXAMPLE = Path(__file__).parent.parent.parent / "docs" / "simulate"
CONFIGS = Path(__file__).parent.parent / "data" / "model_configs"
POOL = (
    "--max-num-seqs", "4", "--first-token-s", "0.3", "--tpot-s", "0.05", "--slowdown", "0.15",
    "--cold-start-s", "40",
)  # fmt: skip


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(plan_app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def example(*more: str) -> tuple[int, str, str]:
    return run(
        "simulate", "--trace", str(EXAMPLE / "burst-trace.jsonl"), "--policy", "fixed:1",
        "--policy", str(EXAMPLE / "autoscale.yaml"), "--policy", str(EXAMPLE / "standby.yaml"),
        *POOL, *more,
    )  # fmt: skip


def test_the_example_compares_three_policies_side_by_side() -> None:
    code, stdout, _ = example("--replica-hour-usd", "2.5")
    assert code == 0
    assert "fixed:1" in stdout and "autoscale" in stdout and "standby" in stdout
    assert "SLA attainment" in stdout and "cost / request" in stdout and "met" in stdout
    # fixed:1 and the cold autoscaler miss the SLA: --check makes that the exit status.
    code, _, stderr = example("--check")
    assert code == 1 and "a policy misses the SLA" in stderr
    code, _, _ = run(
        "simulate", "--trace", str(EXAMPLE / "burst-trace.jsonl"), "--policy",
        str(EXAMPLE / "standby.yaml"), *POOL, "--check",
    )  # fmt: skip
    assert code == 0


def test_json_holds_each_policy_with_its_replica_timeline(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    code, stdout, stderr = example("--json", "--out", str(out), "--sla", "ttft_p95=2s")
    assert code == 0 and f"wrote {out}" in stderr
    doc = json.loads(stdout)
    assert doc == json.loads(out.read_text())
    assert doc["tidegate_simulation"] == 1 and doc["pool"]["cold_start_s"] == 40.0
    fixed, auto, standby = doc["policies"]
    assert [p["name"] for p in doc["policies"]] == ["fixed:1", "autoscale", "standby"]
    assert fixed["sla_met"] is False and standby["sla_met"] is True
    assert standby["ttft_p95_s"] < auto["ttft_p95_s"] < fixed["ttft_p95_s"]
    assert fixed["replica_hours"] < auto["replica_hours"] < standby["replica_hours"]
    timeline = auto["timeline"]
    assert len(timeline["t"]) == len(timeline["desired"]) == len(timeline["ready"])
    assert max(timeline["ready"]) == 2 and max(fixed["timeline"]["ready"]) == 1
    up = auto["scale_events"][0]
    assert up["direction"] == "up" and up["reason"] == "queue_pressure"
    second = auto["replicas"][1]
    assert second["ready_s"] == pytest.approx(second["started_s"] + 40.0)


def test_the_pool_model_from_bench_files(tmp_path: Path) -> None:
    run_doc = {
        "tidegate_bench": 1,
        "runs": [{"label": "c1", "concurrency": 1, "targets": [
            {"name": "gw", "completed": 5, "ttft_ms": {"median": 300.0},
             "tpot_ms": {"median": 50.0}}]}],
    }  # fmt: skip
    bench = tmp_path / "run.json"
    bench.write_text(json.dumps(run_doc))
    cold = tmp_path / "cold.json"
    cold.write_text(json.dumps({"tidegate_bench_cold_start": 1, "ready_s": 33.0}))
    code, stdout, stderr = run(
        "simulate", "--trace", str(EXAMPLE / "burst-trace.jsonl"), "--policy", "fixed:2",
        "--bench", str(bench), "--cold-start", str(cold), "--max-num-seqs", "4", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    pool = json.loads(stdout)["pool"]
    assert pool == {
        "max_concurrency": 4, "first_token_s": 0.3, "tpot_s": 0.05,
        "prefill_tokens_per_s": None, "slowdown": 0.0, "cold_start_s": 33.0,
        "host_speedup": None, "loading_load": 1.0, "cold_start_busy_s": None,
    }  # fmt: skip


def test_a_config_gives_the_queue_and_max_num_seqs(tmp_path: Path) -> None:
    config = tmp_path / "tidegate.yaml"
    config.write_text(
        "engines:\n  profile:\n    max_num_seqs: 3\n"
        "scheduling:\n  interactive:\n    queue_timeout_s: 5\n    max_queue_depth: 7\n"
    )
    code, stdout, _ = run(
        "simulate", "--trace", str(EXAMPLE / "burst-trace.jsonl"), "--policy", "fixed:1",
        "--config", str(config), "--first-token-s", "0.3", "--tpot-s", "0.05", "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(stdout)
    assert doc["pool"]["max_concurrency"] == 3
    # A class block given in full replaces the default one: no ttft_target_s unless set.
    assert doc["queue"] == {"max_queue_depth": 7, "queue_timeout_s": 5.0, "ttft_target_s": None}
    assert doc["policies"][0]["timed_out_503"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "fixed:0"], "1..10000"),
        (["--policy", "nope.yaml"], "cannot read policy"),
        (["--policy", "fixed:1", "--policy", "fixed:1"], "same name"),
        (["--sla", "ttft=2s"], "unknown target"),
        (["--max-num-seqs", "4", "--cold-start-s", "10"], None),
        (["--first-token-s", "0.3"], "no pool model"),
        (["--bench", "missing.json"], "cannot read"),
        (["--cold-start", "missing.json"], "cannot read"),
        (["--config", "missing.yaml"], "does not exist"),
        (["--queue-timeout-s", "0"], "must be > 0"),
        (["--host-speedup", "1,x"], "numbers separated by commas"),
        (["--host-speedup", "2,3"], "starts at 1.0"),
        (["--host-speedup", "1,-1"], "must be > 0"),
        (["--host-speedup", "1,nan"], "not a number"),
        (["--host-speedup", ""], "numbers separated by commas"),
        (["--cold-start-busy-s", "inf"], "cold_start_busy_s must be a finite number"),
        (["--host-speedup", "1,1.41", "--cold-start-busy-s", "90", "--loading-load", "0.5"], None),
    ],
)
def test_bad_inputs_exit_2_with_a_message(args: list[str], message: str | None) -> None:
    base = ["simulate", "--trace", str(EXAMPLE / "burst-trace.jsonl")]
    pool = [] if "--first-token-s" in args or "--bench" in args else ["--first-token-s", "0.3"]
    pool += [] if "--tpot-s" in args or "--first-token-s" in args else ["--tpot-s", "0.05"]
    if "--policy" not in args:
        args = [*args, "--policy", "fixed:1"]
    code, _, stderr = run(*base, *pool, *args)
    if message is None:
        assert code == 0, stderr  # a valid command, for contrast
        return
    assert code == 2
    assert message in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    "args",
    [["--tpot-s", "-1"], ["--max-num-seqs", "0"], ["--cold-start-s", "-5"],
     ["--replica-hour-usd", "-1"], ["--cold-start-busy-s", "-1"], ["--cold-start-busy-s", "nan"],
     ["--loading-load", "1.5"]],
)  # fmt: skip
def test_negative_numbers_are_refused_by_the_options(args: list[str]) -> None:
    code, _, stderr = run(
        "simulate", "--trace", str(EXAMPLE / "burst-trace.jsonl"), "--policy", "fixed:1",
        "--first-token-s", "0.3", "--tpot-s", "0.05", *args,
    )  # fmt: skip
    assert code == 2 and "Invalid value" in stderr


def test_a_bad_trace_exits_2(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"t": -3, "prompt_tokens": 1, "completion_tokens": 1}\n')
    code, _, stderr = run("simulate", "--trace", str(trace), "--policy", "fixed:1", *POOL)
    assert code == 2 and "finite and >= 0" in stderr


def test_plan_without_a_sub_command_still_sizes_a_model() -> None:
    code, stdout, _ = run(
        "--model", str(CONFIGS / "qwen2.5-7b.json"), "--context", "4096", "--concurrency", "8",
        "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(stdout)["chosen"]["fits"] is True
    code, _, stderr = run("--context", "4096")
    assert code == 2 and "Missing option '--model'" in stderr


def test_the_planners_profile_gives_the_slots_per_replica(tmp_path: Path) -> None:
    # `tidegate plan --out` writes an engine profile; its max_num_seqs is the simulated
    # replica's concurrency.
    profile = tmp_path / "profile.yaml"
    code, _, stderr = run(
        "--model", str(CONFIGS / "qwen2.5-7b.json"), "--context", "4096", "--concurrency", "24",
        "--gpu", "H100-80GB", "--out", str(profile),
    )  # fmt: skip
    assert code == 0, stderr
    code, stdout, stderr = run(
        "simulate", "--trace", str(EXAMPLE / "burst-trace.jsonl"), "--policy", "fixed:1",
        "--config", str(profile), "--first-token-s", "0.1", "--tpot-s", "0.01", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(stdout)["pool"]["max_concurrency"] == 24


def test_a_shared_host_serves_less_and_shows_in_the_json(tmp_path: Path) -> None:
    docs = []
    for more in ((), ("--host-speedup", "1,1.2", "--cold-start-busy-s", "80")):
        code, stdout, stderr = example("--json", *more)
        assert code == 0, stderr
        docs.append(json.loads(stdout))
    idle, shared = docs
    assert idle["pool"]["host_speedup"] is None
    assert shared["pool"]["host_speedup"] == [1.0, 1.2]
    assert shared["pool"]["cold_start_busy_s"] == 80.0
    code, stdout, _ = example("--host-speedup", "1,1.2", "--cold-start-busy-s", "80")
    assert code == 0 and "shared host: speedup 1,1.2" in stdout and "busy cold start 80 s" in stdout
