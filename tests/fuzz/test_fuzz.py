"""The fuzz harnesses, briefly, in every test run: each one under atheris for a fixed number of
inputs with a fixed seed (seconds), and every input of the committed corpus replayed as is.
``make fuzz`` runs them for longer and grows the corpus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.runner import FUZZ_DIR, HARNESSES, load

BRIEF_RUNS = 3000
ROOT = FUZZ_DIR.parents[1]


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_the_harness_finds_nothing_in_a_brief_run(name: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.fuzz.runner", name, "--runs", str(BRIEF_RUNS)]
    command += ["--corpus", str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "found")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    found = sorted((tmp_path / "found").glob("*"))
    assert done.returncode == 0 and not found, (
        f"{name}: an invariant broke; replay with python -m tests.fuzz.runner {name} --replay "
        f"FILE\n{found}\n{done.stderr[-4000:]}"
    )
    # libFuzzer's closing stats say how many inputs really ran (its "Done N runs" line can
    # overshoot by one, or be left out when the last input arrives during a corpus merge).
    executed = re.search(r"stat::number_of_executed_units:\s+(\d+)", done.stderr)
    assert executed is not None and int(executed.group(1)) >= BRIEF_RUNS, done.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_every_corpus_input_holds(name: str) -> None:
    check = load(name, instrument=False)
    inputs = sorted((FUZZ_DIR / "corpus" / name).iterdir())
    assert inputs, f"tests/fuzz/corpus/{name} has no seed inputs"
    for path in inputs:
        check(path.read_bytes())
