"""DNS discovery against real fake upstreams on loopback addresses (127.0.0.1, .2, .3 ... on one
port, as the pods behind a headless Service), with a resolver the test controls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import httpx
import pytest
import uvicorn

from tests.support.gateway import ADMIN_KEY, auth, free_port
from tidegate.app import build_app
from tidegate.config import Config, UpstreamServer
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.discovery import DnsDiscovery, DnsTarget, resolve_host
from tidegate.routing.replicas import ReplicaState, RoutingTable
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

MODEL = "pool-model"


class Dns:
    """A resolver the test answers for: ``addresses``, or OSError while ``failing``."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.failing = False
        self.asked: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        self.asked.append(host)
        if self.failing:
            raise OSError("temporary failure in name resolution")
        return list(self.addresses)


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeUpstream]]:
    """Three servers on 127.0.0.1..3, all on the same port."""
    async with AsyncExitStack() as stack:
        first = FakeUpstream(model=MODEL)
        await first.start()
        stack.push_async_callback(first.stop)
        servers = [first]
        for n in (2, 3):
            server = FakeUpstream(model=MODEL, host=f"127.0.0.{n}", port=first.port)
            await server.start()
            stack.push_async_callback(server.stop)
            servers.append(server)
        yield servers


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _target(port: int, **fields: object) -> DnsTarget:
    upstream = UpstreamServer.model_validate(
        {"url": f"http://engines.test:{port}/v1", "model": MODEL, "discovery": "dns", **fields}
    )
    return DnsTarget.from_config(3, upstream)


def _states(discovery: DnsDiscovery) -> dict[str, ReplicaState]:
    return {address: r.state for address, r in discovery.replicas.items()}


async def test_addresses_become_ready_replicas_that_serve(
    fakes: list[FakeUpstream], session: aiohttp.ClientSession
) -> None:
    dns, routing = Dns(), RoutingTable()
    dns.addresses = ["127.0.0.1", "127.0.0.2"]
    discovery = DnsDiscovery(
        target=_target(fakes[0].port), routing=routing, resolver=dns, session=session
    )
    await discovery.refresh()

    assert dns.asked == ["engines.test"]
    pool = routing.pool(MODEL)
    assert sorted(r.id for r in pool.replicas) == ["u3-127.0.0.1", "u3-127.0.0.2"]
    assert all(r.ready and r.max_concurrency == 64 for r in pool.replicas)
    for _ in range(20):
        replica = pool.pick()
        body = {"model": replica.upstream_model, "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{replica.base_url}/chat/completions", json=body) as response:
            assert response.status == 200
    assert fakes[0].completed > 0 and fakes[1].completed > 0 and fakes[2].completed == 0


async def test_gone_address_drains_until_idle_then_leaves(
    fakes: list[FakeUpstream], session: aiohttp.ClientSession
) -> None:
    dns, routing, metrics = Dns(), RoutingTable(), GatewayMetrics()
    dns.addresses = ["127.0.0.1", "127.0.0.2"]
    discovery = DnsDiscovery(
        target=_target(fakes[0].port),
        routing=routing,
        resolver=dns,
        session=session,
        metrics=metrics,
    )
    await discovery.refresh()
    leaving = discovery.replicas["127.0.0.2"]
    leaving.outstanding = 1  # a request still streaming from it

    dns.addresses = ["127.0.0.1"]
    await discovery.refresh()
    assert _states(discovery) == {"127.0.0.1": ReplicaState.READY, "127.0.0.2": "draining"}
    assert all(routing.pool(MODEL).pick().id == "u3-127.0.0.1" for _ in range(10))
    state = metrics.registry.get_sample_value
    labels = {"model": MODEL, "replica": "u3-127.0.0.2"}
    assert state("tidegate_replica_state", {**labels, "state": "draining"}) == 1

    leaving.outstanding = 0
    await discovery.refresh()
    assert list(discovery.replicas) == ["127.0.0.1"]
    assert leaving not in routing.pool(MODEL).replicas
    assert state("tidegate_replica_state", {**labels, "state": "draining"}) is None


async def test_draining_address_that_comes_back_is_ready_again(
    fakes: list[FakeUpstream], session: aiohttp.ClientSession
) -> None:
    dns, routing = Dns(), RoutingTable()
    dns.addresses = ["127.0.0.1", "127.0.0.2"]
    discovery = DnsDiscovery(
        target=_target(fakes[0].port), routing=routing, resolver=dns, session=session
    )
    await discovery.refresh()
    replica = discovery.replicas["127.0.0.2"]
    replica.outstanding = 2
    dns.addresses = ["127.0.0.1"]
    await discovery.refresh()
    assert replica.state is ReplicaState.DRAINING
    dns.addresses = ["127.0.0.2", "127.0.0.1"]
    await discovery.refresh()
    assert discovery.replicas["127.0.0.2"] is replica and replica.ready


async def test_failed_lookup_keeps_replicas_and_empty_answer_drains_all(
    fakes: list[FakeUpstream], session: aiohttp.ClientSession
) -> None:
    dns, routing = Dns(), RoutingTable()
    dns.addresses = ["127.0.0.1", "127.0.0.2"]
    discovery = DnsDiscovery(
        target=_target(fakes[0].port), routing=routing, resolver=dns, session=session
    )
    await discovery.refresh()
    dns.failing = True
    await discovery.refresh()
    assert set(_states(discovery).values()) == {ReplicaState.READY}

    dns.failing, dns.addresses = False, []
    await discovery.refresh()
    assert discovery.replicas == {} and routing.pool(MODEL).replicas == []
    assert routing.models() == [MODEL]  # the pool stays: requests get 503, not 404


async def test_unhealthy_address_waits_until_its_health_answers(
    fakes: list[FakeUpstream], session: aiohttp.ClientSession
) -> None:
    dns, routing = Dns(), RoutingTable()
    dns.addresses = ["127.0.0.1", "127.0.0.4"]  # nothing listens on .4 yet
    discovery = DnsDiscovery(
        target=_target(fakes[0].port), routing=routing, resolver=dns, session=session
    )
    await discovery.refresh()
    assert list(discovery.replicas) == ["127.0.0.1"]

    late = FakeUpstream(model=MODEL, host="127.0.0.4", port=fakes[0].port)
    await late.start()
    try:
        await discovery.refresh()
        assert sorted(discovery.replicas) == ["127.0.0.1", "127.0.0.4"]
    finally:
        await late.stop()


async def test_replicas_per_pool_are_capped_keeping_known_ones(
    fakes: list[FakeUpstream], session: aiohttp.ClientSession
) -> None:
    dns, routing = Dns(), RoutingTable()
    dns.addresses = ["127.0.0.3"]
    discovery = DnsDiscovery(
        target=_target(fakes[0].port, discovery_max_replicas=2),
        routing=routing,
        resolver=dns,
        session=session,
    )
    await discovery.refresh()
    dns.addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    await discovery.refresh()
    assert len(discovery.replicas) == 2 and "127.0.0.3" in discovery.replicas


async def test_ipv6_addresses_are_bracketed_in_urls() -> None:
    target = _target(8000, discovery_health_path="")
    assert target.root_url("fd00::5") == "http://[fd00::5]:8000"
    dns, routing = Dns(), RoutingTable()
    dns.addresses = ["fd00::5"]
    discovery = DnsDiscovery(target=target, routing=routing, resolver=dns)  # no probe
    await discovery.refresh()
    replica = routing.pool(MODEL).pick()
    assert replica.base_url == "http://[fd00::5]:8000/v1" and replica.id == "u3-fd00::5"


async def test_system_resolver_finds_localhost() -> None:
    assert "127.0.0.1" in await resolve_host("localhost")


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_gateway_follows_dns_and_exports_pool_metrics(
    tmp_path: Path, fakes: list[FakeUpstream]
) -> None:
    """The whole app: a dns upstream in config, replicas appearing and disappearing under load."""
    dns = Dns()
    dns.addresses = ["127.0.0.1"]
    port = free_port()
    config = Config(
        home=tmp_path,
        admin_key=ADMIN_KEY,
        server={"port": port},
        engines={"replicas": 0},
        upstreams=[
            {
                "url": f"http://engines.test:{fakes[0].port}/v1",
                "model": MODEL,
                "discovery": "dns",
                "discovery_interval_s": 0.05,
                "max_concurrency": 4,
            }
        ],
    )
    app = build_app(config, dns_resolver=dns)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await _until(lambda: server.started)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    async def scrape() -> str:
        return (await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})).text

    async def until_metric(name: str, value: float, labels: str = "") -> None:
        deadline = time.monotonic() + 10
        while sample(await scrape(), name, labels) != value:
            assert time.monotonic() < deadline, f"{name} never became {value}"
            await asyncio.sleep(0.02)

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            first = await client.post("/v1/chat/completions", json=chat, headers=auth(ADMIN_KEY))
            assert first.status_code == 200 and fakes[0].completed == 1

            dns.addresses = ["127.0.0.1", "127.0.0.2"]  # scale-up
            await until_metric("tidegate_pool_ready_replicas", 2)
            assert sample(await scrape(), "tidegate_pool_capacity") == 8

            # A slow stream on .1, then DNS drops .1: the stream finishes, new requests go to .2.
            dns.addresses = ["127.0.0.1"]
            await until_metric("tidegate_pool_ready_replicas", 1)
            await until_metric("tidegate_pool_in_flight_requests", 0)
            fakes[0].behaviour = FakeBehaviour(tokens=20, token_delay_s=0.05)
            stream = asyncio.create_task(
                client.post(
                    "/v1/chat/completions",
                    json={**chat, "stream": True, "max_tokens": 20},
                    headers=auth(ADMIN_KEY),
                )
            )
            await _until(lambda: fakes[0].active == 1)
            dns.addresses = ["127.0.0.2"]
            one = 'replica="u0-127.0.0.1",state="draining"'
            await until_metric("tidegate_replica_state", 1, one)
            scraped = await scrape()
            assert sample(scraped, "tidegate_pool_in_flight_requests") == 1
            assert sample(scraped, "tidegate_pool_saturation") == 0.25
            served_by_two = fakes[1].completed
            other = await client.post("/v1/chat/completions", json=chat, headers=auth(ADMIN_KEY))
            assert other.status_code == 200 and fakes[1].completed == served_by_two + 1
            assert fakes[0].active == 1

            streamed = await stream
            assert streamed.status_code == 200 and "[DONE]" in streamed.text
            await until_metric("tidegate_replica_state", -1, one)  # gone once idle
            assert sample(await scrape(), "tidegate_pool_ready_replicas") == 1
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of ``name`` for the pool's model (and ``labels``); -1 when absent."""
    prefix = f'{name}{{model="{MODEL}"' + (f",{labels}" if labels else "") + "}"
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return -1.0
