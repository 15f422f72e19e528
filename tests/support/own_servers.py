"""A test's own redis-server and PostgreSQL, on free loopback ports, that it may stop and start.

Outage tests must never touch the machine's shared servers (6379, 5432): these run from a
temporary directory, die with the test, and keep their data across ``stop``/``start`` (Redis
without persistence, as a cache usually runs; PostgreSQL with its data directory), so a restart
looks like one in production. PostgreSQL refuses to run as root; under root its commands run as
the ``postgres`` user, which then owns the data directory.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, *, up: bool, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                listening = True
        except OSError:
            listening = False
        if listening == up:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still {'closed' if up else 'open'} after {timeout_s}s")
        time.sleep(0.05)


class OwnRedis:
    """``redis-server`` without persistence: a restart loses every key."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self._binary = binary
        self._directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self._directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()  # as a crash or an eviction of the pod would
            self._process.wait()
        self._process = None
        _wait_port(self.port, up=False)


@contextmanager
def own_redis(directory: Path) -> Iterator[OwnRedis]:
    directory.mkdir(parents=True, exist_ok=True)
    server = OwnRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class SlowConnectProxy:
    """A TCP proxy on loopback that takes ``delay_s`` to set up each new connection (as TLS, a
    network away or a loaded server do), then forwards bytes as they come. Runs in the test's
    event loop."""

    def __init__(self, target_port: int, *, delay_s: float) -> None:
        self._target = target_port
        self._delay = delay_s
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> SlowConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await asyncio.sleep(self._delay)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class OwnPostgres:
    """A PostgreSQL cluster initialised into a temporary directory (trust auth, loopback)."""

    def __init__(self) -> None:
        self._bin = _postgres_bin()
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="tidegate-pg-"))
        self._data = self.directory / "data"
        self._user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql+asyncpg://{self._user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        subprocess.run(
            [*self._as, str(self._bin / argv[0]), *argv[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self._data), "-U", self._user, "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off "
            "-c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-w", "-l",
                  str(self.directory / "postgres.log"), "start")  # fmt: skip
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """A fast shutdown: connected clients are cut off, as in a restart or a failover."""
        self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")
        _wait_port(self.port, up=False)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.directory / "postgres.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop()
        except (subprocess.SubprocessError, RuntimeError):
            pass  # already stopped by the test
        shutil.rmtree(server.directory, ignore_errors=True)
