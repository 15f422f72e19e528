"""The processes the overhead benchmark measures: how each is started and when it is ready.

Every server runs as its own process on loopback so none shares an event loop (or the GIL) with
another or with the load generator. Each process logs to a file in the run's work directory, so a
target that fails to start can be diagnosed afterwards.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Protocol

import orjson

from benchmarks.protections import write_config


@dataclass(frozen=True)
class Target:
    """Something to measure: an OpenAI-compatible base URL and the headers it needs."""

    name: str
    base_url: str
    """Ends in /v1."""
    headers: tuple[tuple[str, str], ...] = ()
    metrics_headers: tuple[tuple[str, str], ...] = ()
    """What opens the target's /metrics (a tidegate's admin key); empty for the others."""


@dataclass(frozen=True)
class Launch:
    """How to start one server and how to tell it is ready."""

    command: list[str]
    ready_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()


def with_config_file(launch: Launch, config_path: Path, config: Mapping[str, object]) -> Launch:
    """``launch`` (a `tidegate up --upstream URL --model M`) started from ``config`` instead,
    written to ``config_path``: its upstreams replace the command line's."""
    config_path.write_bytes(orjson.dumps(config))  # JSON is YAML
    command, skip = [], 0
    for arg in launch.command:
        if skip:
            skip -= 1
        elif arg in ("--upstream", "--model"):
            skip = 1
        else:
            command.append(arg)
    return replace(launch, command=[*command, "--config", str(config_path)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", name, *args]


def fake_upstream_launch(
    *, port: int, model: str, tokens: int, max_model_len: int | None = 2048
) -> Launch:
    """``max_model_len`` None: the model card lists no length (the gateway learns none)."""
    command = _module(
        "tidegate_testing.fake_server",
        *("--port", str(port), "--model", model, "--tokens", str(tokens)),
        *("--max-model-len", str(max_model_len or 0)),
    )
    return Launch(command, f"http://127.0.0.1:{port}/health")


def passthrough_launch(*, port: int, upstream_origin: str) -> Launch:
    command = _module(
        "benchmarks.passthrough_proxy", "--upstream", upstream_origin, "--port", str(port)
    )
    return Launch(command, f"http://127.0.0.1:{port}/v1/models")


def tidegate_launch(
    *,
    upstream_base_url: str,
    model: str,
    port: int,
    home: Path,
    limits_backend: str | None = None,
) -> Launch:
    """``tidegate up`` in front of one remote upstream, with no local engines and its own home.

    ``limits_backend`` (memory or redis): switch every protection on (see ``protections``).
    """
    admin_key = "tg-bench-" + secrets.token_hex(16)
    tidegate = Path(sys.executable).with_name("tidegate")
    command = [str(tidegate), "up", "--port", str(port)]
    if limits_backend is None:
        command += ["--upstream", upstream_base_url, "--model", model]
    else:
        config_path = home / "tidegate.yaml"
        write_config(
            config_path,
            upstream_base_url=upstream_base_url,
            model=model,
            limits_backend=limits_backend,
            redis_prefix="tidegate-bench-" + secrets.token_hex(4),
        )
        command += ["--config", str(config_path)]
    env = {
        "TIDEGATE_ADMIN_KEY": admin_key,
        "TIDEGATE_HOME": str(home),
        "TIDEGATE_ENGINES__REPLICAS": "0",
    }
    auth = (("Authorization", f"Bearer {admin_key}"),)
    return Launch(command, f"http://127.0.0.1:{port}/readyz", env, auth)


class TidegateLauncher(Protocol):
    """The shape of ``tidegate_launch``; pass another to benchmark a different command line."""

    def __call__(
        self,
        *,
        upstream_base_url: str,
        model: str,
        port: int,
        home: Path,
        limits_backend: str | None = None,
    ) -> Launch: ...


class StartError(RuntimeError):
    """A server exited or did not become ready in time; the message names its log file."""


class Processes:
    """Starts servers, waits for readiness, and stops all of them on exit (also on errors)."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, launch: Launch, ready_timeout_s: float) -> subprocess.Popen[bytes]:
        """Start ``launch`` and wait until it is ready; returns the process."""
        log = self._workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                launch.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **launch.env},
            )
        self._procs.append(proc)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartError(f"{name} exited with {proc.returncode}; see {log}")
            if _status(launch.ready_url) == 200:
                return proc
            time.sleep(0.05)
        raise StartError(f"{name} was not ready within {ready_timeout_s:.0f} s; see {log}")

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
