"""The upstream exchange over real HTTP on loopback: one translation of every transport failure,
one serialisation per request however many attempts it takes, and a replica's in-flight lease
that always comes back (success, error, a client that goes away, a cancelled task).

``Misbehaving`` is a real aiohttp server that fails in the way its URL names, for both wire
protocols (``/<fault>/v1/chat/completions`` and ``/<fault>/v1/messages``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.support.gateway import free_port
from tidegate.config import Config
from tidegate.errors import UpstreamError
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.records import RequestRecord
from tidegate.observability.tracing import Tracing
from tidegate.pipeline.completions import CompletionService
from tidegate.pipeline.limits import build_limiter
from tidegate.pipeline.validation import RequestValidator
from tidegate.protocol.requests import CompletionRequest
from tidegate.routing.build import build_routing
from tidegate.routing.metrics import RoutingMetrics
from tidegate.routing.outlier import OutlierDetector
from tidegate.routing.replicas import Replica, ReplicaState, RoutingTable
from tidegate.routing.retry_budget import RetryBudget
from tidegate.tenancy.keys import Principal
from tidegate.tenancy.policy import KeySettings, TenantSettings
from tidegate.upstream.anthropic import AnthropicClient
from tidegate.upstream.client import UpstreamClient
from tidegate.upstream.exchange import HttpProvider, UpstreamTimeouts

MODEL = "m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
OPENAI_REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class Misbehaving:
    """Fails as ``/<fault>/...`` says; ``/flaky/...`` fails its first request only."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.flaky_calls = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, fault: str) -> str:
        return f"http://127.0.0.1:{self.port}/{fault}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{fault}/v1/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = request.match_info["fault"]
        self.bodies.append(await request.read())
        if fault == "silent":
            await asyncio.sleep(5)
        if fault == "status500" or (fault == "flaky" and self.flaky_calls == 0):
            self.flaky_calls += fault == "flaky"
            return web.json_response(
                {"error": {"type": "api_error", "message": "boom"}}, status=500
            )
        if fault in ("flaky", "ok"):
            return web.json_response(OPENAI_REPLY)
        if fault == "cut_body":  # promises 1000 bytes, sends 10, hangs up
            response = web.StreamResponse(headers={"Content-Length": "1000"})
            await response.prepare(request)
            await response.write(b'{"id": "ch')
            assert request.transport is not None
            request.transport.close()
            return response
        if fault == "not_json":
            return web.Response(body=b"<html>proxy error</html>", content_type="text/html")
        # a stream: one SSE comment (nothing to either protocol), then the fault
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": ping\n\n")
        if fault == "stall_stream":
            await asyncio.sleep(5)
        elif fault == "cut_stream":
            assert request.transport is not None
            request.transport.close()
        elif fault == "garbage_stream":
            await response.write(b"data: {not json\n\n")
            await asyncio.sleep(5)
        elif fault == "hang":
            await asyncio.sleep(30)
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[Misbehaving]:
    server = Misbehaving()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def replica(base_url: str, provider: str = "openai", rid: str = "r1") -> Replica:
    return Replica(
        id=rid,
        model=MODEL,
        base_url=base_url,
        upstream_model=MODEL,
        provider=provider,  # type: ignore[arg-type]
        state=ReplicaState.READY,
    )


def chat(**fields: Any) -> CompletionRequest:
    return CompletionRequest("chat", {**CHAT, **fields})


TIMEOUTS = UpstreamTimeouts(connect_s=1, total_s=10, idle_s=0.3)

# (fault, streamed) -> what the client gets: (error class, kind, HTTP status, code)
TABLE: dict[tuple[str, bool], tuple[str, str, int, str | None]] = {
    ("refused", False): ("UpstreamError", "connect", 502, None),
    ("silent", False): ("UpstreamTimeoutError", "timeout", 504, None),
    ("status500", False): ("UpstreamError", "status", 502, None),
    ("cut_body", False): ("UpstreamError", "disconnect", 502, None),
    ("stall_stream", True): ("UpstreamTimeoutError", "timeout", 504, None),
    ("cut_stream", True): ("UpstreamError", "disconnect", 502, None),
}


async def outcome(
    provider: HttpProvider, target: Replica, *, stream: bool
) -> tuple[str, str, int, str | None]:
    with pytest.raises(UpstreamError) as caught:
        response = await provider.open(target, chat(stream=stream), model=MODEL, request_id="req-x")
        try:
            if stream:
                async for _ in response.chunks():
                    pass
            else:
                await response.read()
        finally:
            response.close()
    error = caught.value
    assert error.message.startswith(("Replica 'r1'", "Could not reach replica 'r1'"))
    return type(error).__name__, error.kind, error.status, error.code


@pytest.mark.parametrize(("fault", "stream"), list(TABLE))
async def test_each_transport_failure_is_the_same_error_from_every_provider(
    upstream: Misbehaving, http: aiohttp.ClientSession, fault: str, stream: bool
) -> None:
    providers: list[tuple[HttpProvider, str]] = [
        (UpstreamClient(session=http, timeouts=TIMEOUTS), "openai"),
        (AnthropicClient(session=http, timeouts=TIMEOUTS), "anthropic"),
    ]
    for provider, kind in providers:
        url = f"http://127.0.0.1:{free_port()}/v1" if fault == "refused" else upstream.url(fault)
        target = replica(url, kind)
        assert await outcome(provider, target, stream=stream) == TABLE[fault, stream], kind
        assert target.outstanding == 0, kind  # the lease came back with the error


async def test_a_malformed_anthropic_reply_is_a_protocol_error(
    upstream: Misbehaving, http: aiohttp.ClientSession
) -> None:
    provider = AnthropicClient(session=http, timeouts=TIMEOUTS)
    for fault, stream in (("not_json", False), ("garbage_stream", True)):
        target = replica(upstream.url(fault), "anthropic")
        assert await outcome(provider, target, stream=stream) == (
            "UpstreamError",
            "protocol",
            502,
            None,
        )
        assert target.outstanding == 0


def _service(
    config: Config, routing: RoutingTable, http: aiohttp.ClientSession
) -> CompletionService:
    """The pipeline as the app wires it, with an in-process limiter and no scheduler."""
    metrics = GatewayMetrics(CollectorRegistry())
    routing_metrics = RoutingMetrics(metrics.registry)
    return CompletionService(
        routing=routing,
        providers={"openai": UpstreamClient(session=http, timeouts=TIMEOUTS)},
        metrics=metrics,
        routing_metrics=routing_metrics,
        validator=RequestValidator(config=config.validation, models={}),
        limiter=build_limiter(limits=config.limits, pricing=config.pricing, registry=None),
        tracing=Tracing(service_name="test"),
        outliers=OutlierDetector(config.routing.health, on_eject=routing_metrics.ejected),
        retry_budget=RetryBudget(ratio=1.0),  # every request may retry once
        ttft_targets={"interactive": None, "batch": None},
    )


PRINCIPAL = Principal(
    key_id="key_1",
    role="member",
    name="k",
    tenant_id="ten_1",
    tenant_name="t",
    tier="interactive",
    tenant=TenantSettings(),
    key=KeySettings(),
)


@pytest.fixture
async def pipeline(
    tmp_path: Path, upstream: Misbehaving, http: aiohttp.ClientSession
) -> Callable[[list[str]], tuple[CompletionService, RoutingTable]]:
    def build(faults: list[str]) -> tuple[CompletionService, RoutingTable]:
        """Two replicas of one pool, failing as ``faults`` say."""
        config = Config(
            home=tmp_path,
            engines={"replicas": 0},
            upstreams=[{"url": upstream.url(fault), "model": MODEL} for fault in faults],
        )
        routing = build_routing(config)
        return _service(config, routing, http), routing

    return build


def in_flight(routing: RoutingTable) -> list[int]:
    return [r.outstanding for r in routing.pool(MODEL).replicas]


async def test_a_retried_request_is_serialised_once(
    upstream: Misbehaving, pipeline: Callable[[list[str]], tuple[CompletionService, RoutingTable]]
) -> None:
    # Both replicas are the same flaky server: whichever is tried first fails with a 500, so
    # the request is sent twice, to two replicas.
    service, routing = pipeline(["flaky", "flaky"])
    record = RequestRecord(request_id="req-1", route="chat")
    prepared = await service.admit("chat", orjson.dumps(CHAT), PRINCIPAL, record, None)
    completion = await service.complete(prepared, record)
    assert completion.json()["choices"][0]["message"]["content"] == "ok"
    assert len(upstream.bodies) == 2 and upstream.bodies[0] == upstream.bodies[1]
    assert prepared.request.encodings == 1
    assert record.prompt_tokens == 3  # the usage was read from the one parse of the reply
    assert in_flight(routing) == [0, 0]


async def test_the_lease_comes_back_on_success_and_on_error(
    pipeline: Callable[[list[str]], tuple[CompletionService, RoutingTable]],
) -> None:
    service, routing = pipeline(["ok", "ok"])
    record = RequestRecord(request_id="req-2", route="chat")
    prepared = await service.admit("chat", orjson.dumps(CHAT), PRINCIPAL, record, None)
    await service.complete(prepared, record)
    assert in_flight(routing) == [0, 0]

    service, routing = pipeline(["status500", "status500"])
    record = RequestRecord(request_id="req-3", route="chat")
    prepared = await service.admit("chat", orjson.dumps(CHAT), PRINCIPAL, record, None)
    with pytest.raises(UpstreamError):
        await service.complete(prepared, record)
    assert in_flight(routing) == [0, 0]


async def test_the_lease_comes_back_when_the_client_goes_or_the_task_is_cancelled(
    pipeline: Callable[[list[str]], tuple[CompletionService, RoutingTable]],
) -> None:
    service, routing = pipeline(["hang", "hang"])
    body = orjson.dumps({**CHAT, "stream": True})
    # The client went away before reading anything: the route closes the stream unread.
    record = RequestRecord(request_id="req-4", route="chat")
    prepared = await service.admit("chat", body, PRINCIPAL, record, None)
    stream = await service.open_stream(prepared, record)
    assert sum(in_flight(routing)) == 1
    await stream.aclose()
    assert in_flight(routing) == [0, 0]
    # The client went away mid-stream: the route's task is cancelled while it waits.
    record = RequestRecord(request_id="req-5", route="chat")
    prepared = await service.admit("chat", body, PRINCIPAL, record, None)

    async def relay() -> None:
        events = await service.open_stream(prepared, record)
        try:
            async for _ in events:
                pass
        finally:
            await events.aclose()

    task = asyncio.create_task(relay())
    while sum(in_flight(routing)) == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # past the first event: inside the read
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_flight(routing) == [0, 0]
