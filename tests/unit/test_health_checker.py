"""The active health checker, one round at a time (``check_all``) against a real fake server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tidegate.config import HealthConfig
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.health import HealthChecker
from tidegate.routing.replicas import Replica, ReplicaState, RoutingTable
from tidegate_testing.fake_server import FakeUpstream


@pytest.fixture
async def server() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.stop()


def _replica(server: FakeUpstream, id: str, *, path: str | None = "/health") -> Replica:
    root = f"http://{server.host}:{server.port}"
    return Replica(
        id=id,
        model="m",
        base_url=root + "/v1",
        upstream_model="m",
        state=ReplicaState.READY,
        health_url=root + path if path is not None else None,
    )


def _state(metrics: GatewayMetrics, replica: str, state: str) -> float | None:
    return metrics.registry.get_sample_value(
        "tidegate_replica_state", {"model": "m", "replica": replica, "state": state}
    )


async def test_thresholds_take_a_replica_out_and_bring_it_back(server: FakeUpstream) -> None:
    routing = RoutingTable()
    good = _replica(server, "good")
    bad = _replica(server, "bad", path="/missing")  # 404: fails every check
    passive = _replica(server, "passive", path=None)  # no health URL: not checked
    for replica in (good, bad, passive):
        routing.add(replica)
    metrics = GatewayMetrics()
    config = HealthConfig(unhealthy_threshold=2, healthy_threshold=3)
    async with aiohttp.ClientSession() as session:
        checker = HealthChecker(routing=routing, session=session, config=config, metrics=metrics)
        await checker.check_all()
        assert bad.state is ReplicaState.READY  # one failure is not enough
        await checker.check_all()
        assert bad.state is ReplicaState.UNHEALTHY
        assert _state(metrics, "bad", "unhealthy") == 1.0
        assert _state(metrics, "bad", "ready") == 0.0
        assert good.state is ReplicaState.READY and passive.state is ReplicaState.READY
        assert _state(metrics, "passive", "ready") is None

        bad.health_url = good.health_url  # it recovers, and was ejected meanwhile
        bad.ejected_until = 1e12
        for _ in range(2):
            await checker.check_all()
            assert bad.state is ReplicaState.UNHEALTHY
        await checker.check_all()
        assert bad.state is ReplicaState.READY
        assert bad.ejected_until == 0.0  # the checks say it is back: no need to sit it out
        assert _state(metrics, "bad", "ready") == 1.0


async def test_states_owned_by_others_are_left_alone(server: FakeUpstream) -> None:
    routing = RoutingTable()
    draining = _replica(server, "draining", path="/missing")
    draining.state = ReplicaState.DRAINING
    routing.add(draining)
    async with aiohttp.ClientSession() as session:
        checker = HealthChecker(routing=routing, session=session, config=HealthConfig())
        for _ in range(3):
            await checker.check_all()
    assert draining.state is ReplicaState.DRAINING


async def test_a_refused_or_hung_check_fails_within_the_timeout(server: FakeUpstream) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the checker gives up and closes the connection
        writer.close()

    hung_server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    hung_port = hung_server.sockets[0].getsockname()[1]
    routing = RoutingTable()
    gone = _replica(server, "gone")
    hung = _replica(server, "hung")
    hung.health_url = f"http://127.0.0.1:{hung_port}/health"
    routing.add(gone)
    routing.add(hung)
    await server.stop()
    async with hung_server, aiohttp.ClientSession() as session:
        config = HealthConfig(unhealthy_threshold=1, timeout_s=0.2)
        checker = HealthChecker(routing=routing, session=session, config=config)
        await asyncio.wait_for(checker.check_all(), timeout=2)
    assert gone.state is ReplicaState.UNHEALTHY
    assert hung.state is ReplicaState.UNHEALTHY


async def test_start_and_stop_poll_in_the_background(server: FakeUpstream) -> None:
    routing = RoutingTable()
    replica = _replica(server, "bad", path="/missing")
    routing.add(replica)
    async with aiohttp.ClientSession() as session:
        config = HealthConfig(interval_s=0.05, unhealthy_threshold=2)
        checker = HealthChecker(routing=routing, session=session, config=config)
        await checker.start()
        try:
            for _ in range(100):
                if replica.state is ReplicaState.UNHEALTHY:
                    break
                await asyncio.sleep(0.02)
        finally:
            await checker.stop()
    assert replica.state is ReplicaState.UNHEALTHY
