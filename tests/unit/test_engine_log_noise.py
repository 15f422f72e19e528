"""A replica log keeps what the engine said, without nanobind's exit-time leak report."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tidegate.engines.log_noise import drop_exit_noise
from tidegate.engines.process import EngineProcess

# What vLLM 0.32 (CPU) printed when a replica stopped, shortened: a real line, then nanobind's
# report, its last line without a newline.
ENGINE = """
import signal, sys, time
def bye(*_):
    print("INFO:     Application shutdown complete.", flush=True)
    print("nanobind: leaked 4 instances!", flush=True)
    for i in range(4):
        print(f' - leaked instance 0x7f7f0787{i:04x} of type "triton._C.libtriton.ir.attribute"')
    print("nanobind: leaked 200 types!")
    for i in range(200):
        print(f' - leaked type "triton._C.libtriton.ir.t{i}"')
    print(" - ... skipped remainder")
    print("nanobind: leaked 90 functions!")
    for i in range(90):
        print(f' - leaked function "create_{i}"')
    print("nanobind: this is likely caused by a reference counting issue in the binding code.")
    print("See https://nanobind.readthedocs.io/en/latest/refleaks.html", end="", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("INFO: Application startup complete.", flush=True)
time.sleep(60)
"""


async def test_stopping_a_process_drops_the_leak_lines_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "replica-r0.log"
    log.write_text("earlier run\nnanobind: leaked function 'old'\n")
    script = tmp_path / "engine.py"
    script.write_text(ENGINE)
    process = await EngineProcess.spawn(argv=[sys.executable, str(script)], env={}, log_path=log)
    while b"Application startup complete" not in log.read_bytes():
        assert process.returncode is None, log.read_text()
        await asyncio.sleep(0.05)
    await process.stop(timeout_s=10)
    text = log.read_text().splitlines()
    assert "earlier run" in text and "nanobind: leaked function 'old'" in text  # not this run's
    assert text[-2] == "INFO:     Application shutdown complete."
    assert [line for line in text if "leaked" in line] == [text[1]]  # the earlier run's
    assert text[-1].startswith("--- tidegate: dropped 300 lines of nanobind's leak report")


def test_a_log_without_the_noise_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "replica.log"
    log.write_bytes(b"a\nb\n")
    assert drop_exit_noise(log, start=0) == 0 and log.read_bytes() == b"a\nb\n"
    assert drop_exit_noise(tmp_path / "missing.log", start=0) == 0
