"""Real tidegate processes on loopback: a fake upstream and gateway processes started with
``tidegate up``, sharing one store and one Redis key prefix.

Everything is bounded in time and cleaned up on the way out, also when a test fails: processes
get SIGTERM, then SIGKILL. Each process writes its stdout and stderr to a file in the test's
directory; when the block exits with an exception, the tail of every file is printed, so pytest
shows it next to the failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest
import redis

from tests.store_fixtures import reset_postgres
from tests.support.gateway import ADMIN_KEY

REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_TIDEGATE = "import sys; from tidegate.cli import main; sys.argv[0] = 'tidegate'; main()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """One child process; ``url`` is its HTTP root (no /v1)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    url: str
    popen: subprocess.Popen[bytes] | None = None
    _log: BinaryIO | None = field(default=None, repr=False)

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is running"
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {time.strftime('%H:%M:%S')}: {self.argv}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()
        self._close_log()

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM; SIGKILL after ``timeout_s``. Returns the exit code (None: never started)."""
        popen = self.popen
        if popen is None:
            return None
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if popen.poll() is None:
                popen.send_signal(signal.SIGKILL)
                popen.wait()
        self._close_log()
        return popen.returncode

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    async def wait_ready(self, path: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll ``GET path`` until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if not self.running:
                    code = self.popen.returncode if self.popen else None
                    raise RuntimeError(
                        f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}"
                    )
                try:
                    async with http.get(self.url + path) as response:
                        if response.status == 200:
                            return
                        last = f"{response.status} {await response.text()}"
                except (aiohttp.ClientError, TimeoutError) as error:
                    last = repr(error)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} not ready after {timeout_s} s ({last}):\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _base_env() -> dict[str, str]:
    """The test's environment without any TIDEGATE_* setting that could leak into a child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def fake_upstream_process(
    directory: Path,
    *,
    model: str = "fake-model",
    tokens: int = 16,
    token_delay_s: float = 0.0,
    first_token_delay_s: float = 0.0,
) -> Process:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "tidegate_testing.fake_server",
        "--port",
        str(port),
        "--model",
        model,
        "--tokens",
        str(tokens),
        "--token-delay-s",
        str(token_delay_s),
        "--first-token-delay-s",
        str(first_token_delay_s),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    return Process(
        "fake-upstream",
        argv,
        _base_env(),
        directory / "fake-upstream.log",
        f"http://127.0.0.1:{port}",
    )


@dataclass(frozen=True)
class GatewaySettings:
    """What every gateway of a cluster shares."""

    store_url: str
    redis_prefix: str
    wal_dir: Path
    model: str = "fake-model"
    flush_interval_s: float = 0.1
    limits_backend: str = "redis"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    upstream_max_concurrency: int | None = None
    """The upstream's max_concurrency (the pool's capacity); None: the default (64)."""


def gateway_process(
    directory: Path, index: int, upstream_url: str, settings: GatewaySettings
) -> Process:
    """A ``tidegate up`` process with its own home (``directory/gw<index>``) and port."""
    home = directory / f"gw{index}"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _base_env()
    env.update(
        {
            "TIDEGATE_HOME": str(home),
            "TIDEGATE_ADMIN_KEY": ADMIN_KEY,
            "TIDEGATE_STORE__URL": settings.store_url,
            "TIDEGATE_LIMITS__BACKEND": settings.limits_backend,
            "TIDEGATE_LIMITS__REDIS_URL": REDIS_URL,
            "TIDEGATE_LIMITS__KEY_PREFIX": settings.redis_prefix,
            "TIDEGATE_LIMITS__REDIS_TIMEOUT_S": "2.0",  # a loaded 2-core box must not fail closed
            "TIDEGATE_METERING__WAL_DIR": str(settings.wal_dir),
            "TIDEGATE_METERING__FLUSH_INTERVAL_S": str(settings.flush_interval_s),
            "TIDEGATE_SERVER__ACCESS_LOG": "false",
            "TIDEGATE_SERVER__LOG_LEVEL": "warning",
            "TIDEGATE_ENGINES__DRAIN_GRACE_S": "2",
            **settings.extra_env,
        }
    )
    argv = [sys.executable, "-c", _TIDEGATE, "up", "--port", str(port)]
    if settings.upstream_max_concurrency is None:
        argv += ["--upstream", upstream_url + "/v1", "--model", settings.model]
    else:
        upstream = {
            "url": upstream_url + "/v1",
            "model": settings.model,
            "max_concurrency": settings.upstream_max_concurrency,
        }
        env["TIDEGATE_UPSTREAMS"] = json.dumps([upstream])
        env["TIDEGATE_ENGINES__REPLICAS"] = "0"
    return Process(
        f"gateway-{index}",
        argv,
        env,
        directory / f"gateway-{index}.log",
        f"http://127.0.0.1:{port}",
    )


@dataclass
class Cluster:
    upstream: Process
    gateways: list[Process]

    @property
    def processes(self) -> list[Process]:
        return [*self.gateways, self.upstream]

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} ({p.log_path})\n{p.log_tail()}" for p in self.processes)


@asynccontextmanager
async def running_cluster(
    directory: Path,
    settings: GatewaySettings,
    *,
    gateways: int,
    tokens: int = 16,
    token_delay_s: float = 0.0,
    first_token_delay_s: float = 0.0,
) -> AsyncIterator[Cluster]:
    """A fake upstream and ``gateways`` gateway processes in front of it, all ready.

    The gateways start at once (they migrate the shared store concurrently, as replicas of a
    deployment do). On the way out every process is stopped; on an exception the tail of every
    process's log is printed.
    """
    upstream = fake_upstream_process(
        directory,
        model=settings.model,
        tokens=tokens,
        token_delay_s=token_delay_s,
        first_token_delay_s=first_token_delay_s,
    )
    cluster = Cluster(
        upstream,
        [gateway_process(directory, i, upstream.url, settings) for i in range(gateways)],
    )
    try:
        for process in cluster.processes:
            process.start()
        await upstream.wait_ready("/health")
        await asyncio.gather(*(g.wait_ready("/readyz") for g in cluster.gateways))
        yield cluster
    except BaseException:
        await asyncio.gather(*(p.stop(timeout_s=3) for p in cluster.processes))
        print(cluster.logs())
        raise
    finally:
        await asyncio.gather(*(p.stop() for p in cluster.processes))


@asynccontextmanager
async def redis_prefix(name: str) -> AsyncIterator[str]:
    """A Redis key prefix unique to one test; its keys are deleted afterwards. Skips the test
    when Redis is unreachable, unless TIDEGATE_TEST_REQUIRE_REDIS is set."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except (OSError, redis.ConnectionError) as error:
        client.close()
        if os.environ.get("TIDEGATE_TEST_REQUIRE_REDIS"):
            raise
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {error}")
    prefix = f"tidegate-test-{name}-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def shared_store_url(request: pytest.FixtureRequest, directory: Path) -> str:
    """For a fixture parametrized with "sqlite" and "postgres": a SQLite file under
    ``directory``, or the session's PostgreSQL database, emptied (not yet migrated)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{directory / 'store' / 'tidegate.db'}"
    url: str = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return url


class AdminClient:
    """The operator's side of the /admin API, for setting up tenants and keys."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = url
        self._auth = {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._http.post(self._url + path, json=body, headers=self._auth) as response:
            data: dict[str, Any] = await response.json()
            assert response.status == 201, data
            return data

    async def tenant_with_key(self, name: str, settings: dict[str, Any]) -> tuple[str, str]:
        """Create a tenant and a member key of it; returns (tenant id, plaintext key)."""
        tenant = await self._post(
            "/admin/tenants", {"name": name, "tier": "interactive", "settings": settings}
        )
        key = await self._post(
            "/admin/keys", {"name": f"{name}-key", "role": "member", "tenant_id": tenant["id"]}
        )
        return tenant["id"], key["key"]
