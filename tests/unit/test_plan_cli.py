"""`tidegate plan` through Typer's runner: the YAML it writes is a config `tidegate up` loads."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from tidegate.commands.plan import plan_command
from tidegate.config import load_config

CONFIGS = Path(__file__).parent.parent / "data" / "model_configs"


def run(*args: str) -> tuple[int, str, str]:
    app = typer.Typer()
    app.command("plan")(plan_command)
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_profile_yaml_round_trips_through_load_config(tmp_path: Path) -> None:
    model_dir = tmp_path / "Llama-3.1-70B"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((CONFIGS / "llama-3.1-70b.json").read_text())
    out = tmp_path / "profile.yaml"
    code, stdout, stderr = run(
        "--model", str(model_dir), "--context", "16384", "--concurrency", "24",
        "--gpu", "H100-80GB", "--kv-dtype", "fp8", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert "recommended" in stdout and "tidegate up --config" in stderr
    text = out.read_text()
    assert text.startswith("# tidegate plan: Llama-3.1-70B on ")
    config = load_config(out)
    engines = config.engines
    assert engines.model == str(model_dir) and engines.served_model_name == "llama-3.1-70b"
    profile = engines.profile
    assert (profile.device, profile.max_model_len, profile.max_num_seqs) == ("cuda", 16384, 24)
    assert profile.tensor_parallel_size in (2, 4, 8) and profile.enforce_eager is False
    assert profile.extra_args == ["--kv-cache-dtype", "fp8"]


def test_cpu_profile_for_the_embedded_engine(tmp_path: Path) -> None:
    # The CPU engine runs float32 under dtype auto (engines.dtype): 4-byte KV elements.
    out = tmp_path / "cpu.yaml"
    code, _, stderr = run(
        "--model", str(CONFIGS / "smollm2-135m.json"), "--cpu", "--context", "2048",
        "--concurrency", "16", "--kv-space-gib", "2", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    profile = load_config(out).engines.profile
    assert (profile.device, profile.cpu_kvcache_space_gib, profile.enforce_eager) == (
        "cpu",
        2,
        True,
    )
    assert "KV cache 46,592 tokens" in out.read_text()


def test_json_output_for_machines() -> None:
    code, stdout, _ = run(
        "--model", str(CONFIGS / "qwen2.5-7b.json"), "--context", "4096", "--concurrency", "8",
        "--dtype", "fp8", "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(stdout)
    assert data["parameters"]["total"] > 7e9 and data["chosen"]["fits"] is True
    assert data["profile"]["engines"]["profile"]["extra_args"] == ["--quantization", "fp8"]
    assert data["refusal"] is None and len(data["options"]) == 24


def test_nothing_fits_exits_1_with_the_reason() -> None:
    code, stdout, stderr = run(
        "--model", str(CONFIGS / "llama-3.1-70b.json"), "--context", "131072",
        "--concurrency", "64",
    )  # fmt: skip
    assert code == 1
    assert "nothing fits: even 8×B200" in stderr and "engines:" not in stdout


def test_bad_input_exits_2() -> None:
    code, _, stderr = run("--model", str(CONFIGS / "llama-3.1-8b.json"), "--gpu", "TPUv5")
    assert code == 2 and "unknown GPU" in stderr
    code, _, stderr = run("--model", str(CONFIGS / "llama-3.1-8b.json"), "--cpu", "--tp", "2")
    assert code == 2 and "--cpu takes" in stderr
