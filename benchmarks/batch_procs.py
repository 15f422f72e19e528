"""Processes for the batch benchmark: a gateway that can be killed with SIGKILL and started again
on the same port and home, and the admin calls that set up its tenants.

A restarted gateway opens the same SQLite store, so a batch interrupted by ``kill -9`` resumes:
that is what the crash half of the benchmark measures.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from benchmarks.priority import _tenant_key
from benchmarks.targets import Launch, StartError


def gateway_launch(*, home: Path, port: int, config: dict[str, Any]) -> tuple[Launch, str]:
    """``tidegate up`` with ``config`` (YAML) and its own home; returns it and the admin key."""
    admin_key = "tg-bench-" + secrets.token_hex(16)
    path = home / "tidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    tidegate = Path(sys.executable).with_name("tidegate")
    launch = Launch(
        [str(tidegate), "up", "--config", str(path), "--port", str(port)],
        f"http://127.0.0.1:{port}/readyz",
        {
            "TIDEGATE_ADMIN_KEY": admin_key,
            "TIDEGATE_HOME": str(home / "gateway"),
            "TIDEGATE_ENGINES__REPLICAS": "0",
        },
    )
    return launch, admin_key


def tenant_key(origin: str, admin_key: str, name: str, tier: str) -> str:
    """A member key of a new tenant ``name`` with ``tier``."""
    return _tenant_key(origin, admin_key, name, tier)


class RestartableProcess:
    """One server process that can be killed (SIGKILL, no clean shutdown) and started again.

    Every start appends to the same log file, so a failed restart can be read in context.
    """

    def __init__(self, name: str, launch: Launch, workdir: Path) -> None:
        self._launch = launch
        self._log = workdir / f"{name}.log"
        self._name = name
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 60.0) -> float:
        """Start and wait until ready; returns the seconds that took."""
        started = time.monotonic()
        with self._log.open("ab") as out:
            self._proc = subprocess.Popen(
                self._launch.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self._launch.env},
            )
        while time.monotonic() - started < ready_timeout_s:
            if self._proc.poll() is not None:
                raise StartError(
                    f"{self._name} exited with {self._proc.returncode}; see {self._log}"
                )
            if _ready(self._launch.ready_url):
                return time.monotonic() - started
            time.sleep(0.05)
        raise StartError(f"{self._name} not ready in {ready_timeout_s:.0f} s; see {self._log}")

    def kill(self) -> None:
        """``kill -9``: no lifespan shutdown, no flushing; leases and partial work stay behind."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> RestartableProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
