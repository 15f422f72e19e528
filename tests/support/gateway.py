"""A real tidegate gateway on loopback (uvicorn in this event loop) in front of a fake upstream."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from tidegate.app import build_app
from tidegate.config import Config
from tidegate.observability.access_log import AccessLog
from tidegate.upstream.fake_server import FakeUpstream

ADMIN_KEY = "tg-test-admin-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningGateway:
    url: str
    config: Config
    access_sink: io.BytesIO
    access_log: AccessLog

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def access_lines(self) -> list[dict[str, Any]]:
        self.access_log.flush()
        return [orjson.loads(line) for line in self.access_sink.getvalue().splitlines()]


@asynccontextmanager
async def serve(config: Config) -> AsyncIterator[RunningGateway]:
    """Run the app built from `config` under uvicorn on its configured loopback port."""
    sink = io.BytesIO()
    access_log = AccessLog(stream=sink)
    app = build_app(config, access_log=access_log)
    port = config.server.port
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the gateway exited during startup")
        await asyncio.sleep(0.01)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", config, sink, access_log)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=60)


@asynccontextmanager
async def run_gateway(
    home: Path, *, upstreams: list[FakeUpstream], store_url: str = "", **server: Any
) -> AsyncIterator[RunningGateway]:
    """A gateway with no local engine, in front of the given fake upstreams."""
    config = Config(
        home=home,
        admin_key=ADMIN_KEY,
        server={"port": free_port(), **server},
        store={"url": store_url},
        engines={"replicas": 0},
        upstreams=[{"url": u.base_url, "model": u.model} for u in upstreams],
    )
    async with serve(config) as running:
        yield running
