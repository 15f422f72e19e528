"""Without an optional extra (bench, s3, hub) the command that needs it says what to install.

A missing package is simulated in a fresh interpreter by ``sys.modules[name] = None`` before
tidegate is imported: ``import name`` then raises ModuleNotFoundError, as when it is not
installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_RUN_WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from tidegate.cli import main
main(sys.argv[2:])
"""


def tidegate_without(
    missing: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`tidegate ARGS` in an interpreter where the comma-separated `missing` cannot import."""
    return subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT, missing, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd or Path.cwd()), "COLUMNS": "200"},
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("missing", "args", "command"),
    [
        ("numpy", ["bench", "run", "--target", "http://127.0.0.1:9/v1", "-n", "1"], "bench run"),
        ("numpy", ["bench", "--target", "http://127.0.0.1:9/v1", "-n", "1"], "bench run"),
        ("numpy", ["bench", "compare", "a.json", "b.json"], "bench compare"),
        ("numpy", ["bench", "client-capacity"], "bench client-capacity"),
        ("matplotlib", ["bench", "report", "result.json", "--out", "report"], "bench report"),
    ],
    ids=["run", "run-shorthand", "compare", "client-capacity", "report"],
)
def test_bench_without_its_extra_names_the_pip_line(
    tmp_path: Path, missing: str, args: list[str], command: str
) -> None:
    done = tidegate_without(missing, *args, cwd=tmp_path)
    assert done.returncode == 2
    assert one_error_line(done) == (
        f"error: `tidegate {command}` needs {missing}, which is not installed: "
        "pip install 'tidegate[bench]'"
    )
    assert not (tmp_path / "bench-results").exists() and not (tmp_path / "report").exists()


def test_bench_help_works_without_the_extra(tmp_path: Path) -> None:
    done = tidegate_without("numpy,matplotlib", "bench", "run", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Run a load test against one or several targets." in done.stdout


def test_up_with_s3_storage_without_boto3_is_a_config_error_at_start(tmp_path: Path) -> None:
    config = tmp_path / "tidegate.yaml"
    config.write_text(
        f"home: {tmp_path / 'home'}\nbatch:\n  storage: s3\n  s3_bucket: files\n",
        encoding="utf-8",
    )
    done = tidegate_without("boto3,botocore", "up", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert one_error_line(done) == (
        "error: batch.storage is s3, which needs boto3: pip install 'tidegate[s3]'"
    )
    assert not (tmp_path / "home").exists()  # refused before anything was created


def test_s3_storage_without_boto3_raises_the_same_message() -> None:
    probe = (
        "import sys; sys.modules['boto3'] = None\n"
        "from tidegate.batch.storage import S3FileStorage\n"
        "try:\n    S3FileStorage(bucket='files')\n"
        "except ValueError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == (
        "batch.storage is s3, which needs boto3: pip install 'tidegate[s3]'"
    )


def test_plan_with_a_hub_id_without_huggingface_hub_names_the_extra(tmp_path: Path) -> None:
    done = tidegate_without("huggingface_hub", "plan", "--model", "org/some-model", cwd=tmp_path)
    assert done.returncode == 2
    line = one_error_line(done)
    assert line == (
        "error: org/some-model looks like a hub id, and reading it from the hub needs "
        "huggingface-hub: pip install 'tidegate[hub]' (or pass a local model directory holding "
        "config.json)"
    )


def test_plan_with_a_local_config_works_without_huggingface_hub(tmp_path: Path) -> None:
    model = Path(__file__).parent.parent / "data" / "model_configs" / "smollm2-135m.json"
    done = tidegate_without(
        "huggingface_hub", "plan", "--model", str(model), "--gpu", "H100-80GB", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "recommended" in done.stdout
