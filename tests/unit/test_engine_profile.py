from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.config import Config, EngineProfile, EnginesConfig
from tidegate.engines.device import Device
from tidegate.engines.profile import build_engine_command


def make_config(tmp_path: Path, **profile: object) -> Config:
    return Config(
        home=tmp_path,
        engines=EnginesConfig(served_model_name="smol", profile=EngineProfile(**profile)),
    )


def test_cpu_command_uses_python_module_eager_and_kv_space(tmp_path: Path) -> None:
    config = make_config(tmp_path, cpu_kvcache_space_gib=3, max_model_len=2048, max_num_seqs=8)
    cmd = build_engine_command(config=config, model="/m", port=8123, device="cpu")
    assert cmd.argv[:3] == (
        str(tmp_path / "engine-venv" / "bin" / "python"),
        "-m",
        "vllm.entrypoints.openai.api_server",
    )
    args = list(cmd.argv[3:])
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert pairs["--model"] == "/m"
    assert pairs["--served-model-name"] == "smol"
    assert pairs["--host"] == "127.0.0.1"
    assert pairs["--port"] == "8123"
    assert pairs["--max-model-len"] == "2048"
    assert pairs["--max-num-seqs"] == "8"
    assert pairs["--dtype"] == "float32"  # dtype auto on a CPU (engines.dtype)
    assert pairs["--tensor-parallel-size"] == "1"
    assert "--enforce-eager" in args
    assert "--gpu-memory-utilization" not in args
    assert cmd.env == {"VLLM_CPU_KVCACHE_SPACE": "3"}


def test_cuda_command_compiles_by_default_and_sets_memory_share(tmp_path: Path) -> None:
    config = make_config(tmp_path, gpu_memory_utilization=0.8, tensor_parallel_size=2)
    cmd = build_engine_command(config=config, model="org/model", port=9000, device="cuda")
    args = list(cmd.argv)
    assert "--enforce-eager" not in args
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.8"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert "VLLM_CPU_KVCACHE_SPACE" not in cmd.env


def test_explicit_eager_and_extras_are_passed_through(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        enforce_eager=False,
        extra_args=["--seed", "7"],
        extra_env={"VLLM_LOGGING_LEVEL": "DEBUG"},
    )
    cmd = build_engine_command(config=config, model="/m", port=1, device="cpu")
    assert "--enforce-eager" not in cmd.argv
    assert cmd.argv[-2:] == ("--seed", "7")
    assert cmd.env["VLLM_LOGGING_LEVEL"] == "DEBUG"


def test_venv_setting_overrides_the_home(tmp_path: Path) -> None:
    config = Config(home=tmp_path, engines=EnginesConfig(venv="/opt/venv"))
    cmd = build_engine_command(config=config, model="/m", port=1, device="cpu")
    assert cmd.argv[0] == "/opt/venv/bin/python"


@pytest.mark.parametrize(
    ("device", "asked", "passed"),
    [
        ("cpu", "auto", "float32"),  # bf16: emulated (slow) or, with AMX, wrong answers
        ("cpu", "bfloat16", "bfloat16"),  # an explicit choice is kept
        ("cuda", "auto", "auto"),
    ],
)
def test_dtype_auto_is_float32_on_a_cpu(
    tmp_path: Path, device: Device, asked: str, passed: str
) -> None:
    config = make_config(tmp_path, dtype=asked)
    args = list(build_engine_command(config=config, model="/m", port=1, device=device).argv)
    assert args[args.index("--dtype") + 1] == passed
