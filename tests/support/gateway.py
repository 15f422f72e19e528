"""A real tidegate gateway on loopback (uvicorn in this event loop) in front of a fake upstream."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from opentelemetry.sdk.trace.export import SpanExporter

from tidegate.app import build_app
from tidegate.config import Config
from tidegate.observability.access_log import AccessLog
from tidegate_testing.fake_server import FakeUpstream

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
async def serve(
    config: Config,
    *,
    span_exporter: SpanExporter | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[RunningGateway]:
    """Run the app built from `config` under uvicorn on its configured loopback port.

    ``span_exporter``: where the app's spans go (an InMemorySpanExporter makes them inspectable).
    ``clock``: the wall clock route rules' time windows read (a fake one moves the day).
    """
    sink = io.BytesIO()
    access_log = AccessLog(stream=sink)
    app = build_app(config, access_log=access_log, span_exporter=span_exporter, clock=clock)
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
    home: Path,
    *,
    upstreams: list[FakeUpstream],
    store_url: str = "",
    upstream_options: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
    span_exporter: SpanExporter | None = None,
    **server: Any,
) -> AsyncIterator[RunningGateway]:
    """A gateway with no local engine, in front of the given fake upstreams.

    ``upstream_options``: more fields for every upstream entry (context_length, tokenizer,
    api_key ...). ``sections``: more top-level Config fields (limits, pricing, validation,
    metering ...). ``server``: fields of the server section.
    """
    config = Config(
        home=home,
        admin_key=ADMIN_KEY,
        server={"port": free_port(), **server},
        store={"url": store_url},
        engines={"replicas": 0},
        upstreams=[
            {"url": u.base_url, "model": u.model, **(upstream_options or {})} for u in upstreams
        ],
        **(sections or {}),
    )
    async with serve(config, span_exporter=span_exporter) as running:
        yield running


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class MemberKey:
    tenant_id: str
    key_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return auth(self.key)


async def create_member(
    http: httpx.AsyncClient,
    tenant: str,
    settings: dict[str, Any] | None = None,
    *,
    key_settings: dict[str, Any] | None = None,
    tenant_id: str | None = None,
) -> MemberKey:
    """As the operator: create tenant `tenant` with `settings` (unless `tenant_id` names an
    existing one) and a member key for it with `key_settings`."""
    if tenant_id is None:
        body = {"name": tenant, "settings": settings or {}}
        created = await http.post("/admin/tenants", json=body, headers=auth(ADMIN_KEY))
        assert created.status_code == 201, created.text
        tenant_id = str(created.json()["id"])
    key_body: dict[str, Any] = {"name": f"{tenant} member", "role": "member"}
    key_body.update(tenant_id=tenant_id, settings=key_settings)
    key = await http.post("/admin/keys", json=key_body, headers=auth(ADMIN_KEY))
    assert key.status_code == 201, key.text
    return MemberKey(tenant_id, key.json()["id"], key.json()["key"])


async def usage_records(
    http: httpx.AsyncClient, request_ids: Collection[str], *, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Every usage record (as the operator), once all of `request_ids` have one."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await http.get(
            "/admin/usage/records", params={"limit": "1000"}, headers=auth(ADMIN_KEY)
        )
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()["data"]
        if set(request_ids) <= {r["request_id"] for r in records}:
            return records
        assert time.monotonic() < deadline, f"no usage records for {request_ids} yet"
        await asyncio.sleep(0.02)
