"""What ``tidegate up`` prints: which home and store, the admin key once, and its shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.targets import Processes, fake_upstream_launch, free_port

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    with Processes(tmp_path_factory.mktemp("fake")) as procs:
        procs.start("fake", fake_upstream_launch(port=port, model="demo", tokens=2), 30)
        yield f"http://127.0.0.1:{port}/v1"


def _up_and_stop(home: Path, upstream: str) -> str:
    """Start ``tidegate up``, wait for /readyz, send SIGINT as Ctrl-C does; its stderr."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TIDEGATE_ADMIN_KEY"}
    env |= {"TIDEGATE_HOME": str(home), "COLUMNS": "200"}
    argv = [TIDEGATE, "up", "--upstream", upstream, "--model", "demo", "--port", str(port)]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60

        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    # uvicorn re-raises the signal once it has shut down cleanly: 130, as for any Ctrl-C.
    assert proc.returncode in (0, 130), stderr
    return stderr


def test_up_names_its_home_and_store_and_keeps_an_existing_key(
    upstream: str, tmp_path: Path
) -> None:
    first = _up_and_stop(tmp_path, upstream)
    assert f"home: {tmp_path} (TIDEGATE_HOME" in first
    assert f"store: sqlite+aiosqlite:///{tmp_path}/tidegate.db (new)" in first
    assert "Admin API key" in first and "tg-" in first

    second = _up_and_stop(tmp_path, upstream)
    assert "(existing)" in second and "Admin API key" not in second
    assert "already has an admin key" in second and "TIDEGATE_HOME=$PWD/.tidegate" in second


def test_shutdown_is_announced_from_the_signal_to_the_end(upstream: str, tmp_path: Path) -> None:
    stderr = _up_and_stop(tmp_path, upstream)
    lines = stderr.splitlines()
    signal_at = next(i for i, line in enumerate(lines) if line.startswith("shutting down:"))
    stopping_at = next(i for i, line in enumerate(lines) if line.startswith("stopping:"))
    assert signal_at < stopping_at and lines[-1].startswith("tidegate stopped (")
