"""Replica health through a real gateway in front of fake upstreams on loopback: active health
checks, passive outlier ejection, the retry budget, no retries once bytes reached the client,
circuit breaking with a fallback pool, and the x-tidegate-backend header.

Requests are counted at the fakes (``FakeUpstream.requests`` records every request it received,
failed ones included). Timings are shrunk through ``routing.health`` so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import ADMIN_KEY, RunningGateway, free_port, serve
from tidegate.config import Config
from tidegate_testing.fake_server import FakeUpstream

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
MODEL = "fake-model"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
# One pool, taken in turn (deterministic), no breaker: each test turns on what it is about.
ROUND_ROBIN = [{"name": MODEL, "balancer": "round_robin", "circuit_breaker": False}]


@asynccontextmanager
async def _fakes(count: int) -> AsyncIterator[list[FakeUpstream]]:
    fakes = [FakeUpstream(model=MODEL) for _ in range(count)]
    for fake in fakes:
        await fake.start()
    try:
        yield fakes
    finally:
        for fake in fakes:
            await fake.stop()


@asynccontextmanager
async def _gateway(
    home: Path,
    upstreams: list[dict[str, Any]],
    *,
    health: dict[str, Any],
    pools: list[dict[str, Any]] | None = None,
    routes: list[dict[str, Any]] | None = None,
) -> AsyncIterator[tuple[RunningGateway, httpx.AsyncClient]]:
    config = Config(
        home=home,
        admin_key=ADMIN_KEY,
        server={"port": free_port()},
        engines={"replicas": 0},
        upstreams=upstreams,
        routing={"pools": pools or [], "routes": routes or [], "health": health},
    )
    async with serve(config) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=10) as http:
            yield gateway, http


def _entries(fakes: list[FakeUpstream], **fields: Any) -> list[dict[str, Any]]:
    return [{"url": fake.base_url, "model": MODEL, **fields} for fake in fakes]


async def _chat(http: httpx.AsyncClient) -> tuple[int, str]:
    """Status and x-tidegate-backend of one non-streamed request."""
    response = await http.post("/v1/chat/completions", json=CHAT)
    return response.status_code, response.headers.get("x-tidegate-backend", "")


async def _metric(http: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    text = (await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


async def _until(condition: Any, *, timeout_s: float, step_s: float = 0.02) -> float:
    """Await ``condition()`` (an async callable) until true; the seconds it took."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        await asyncio.sleep(step_s)
    return time.monotonic() - started


# -- (a) a dead replica is out of rotation within 2 s -------------------------------------------


async def test_active_checks_take_a_stopped_replica_out_within_2s_and_back(
    tmp_path: Path,
) -> None:
    async with _fakes(2) as (dead, live):
        upstreams = _entries([dead, live], health_check_path="/health")
        # healthy_threshold 4: re-admission takes ≥ 1.5 s, time to show it has not happened yet.
        health = {"interval_s": 0.5, "timeout_s": 0.5, "healthy_threshold": 4}
        async with _gateway(tmp_path, upstreams, health=health, pools=ROUND_ROBIN) as (_, http):
            assert {(await _chat(http))[1] for _ in range(4)} == {f"{MODEL}/u0", f"{MODEL}/u1"}
            await dead.stop()
            stopped = time.monotonic()

            async def unhealthy() -> bool:
                state = await _metric(
                    http, "tidegate_replica_state", replica="u0", state="unhealthy"
                )
                return state == 1.0

            # No requests meanwhile: this is the active checks' doing, not passive ejection.
            await _until(unhealthy, timeout_s=5)
            assert time.monotonic() - stopped <= 2.0
            assert await _metric(http, "tidegate_pool_ready_replicas", model=MODEL) == 1.0
            for _ in range(10):
                assert await _chat(http) == (200, f"{MODEL}/u1")

            await dead.start()  # back on the same port: in rotation only after 4 good checks
            served_before = len(dead.requests)
            for _ in range(6):
                assert await _chat(http) == (200, f"{MODEL}/u1")
            assert len(dead.requests) == served_before

            async def ready() -> bool:
                state = await _metric(http, "tidegate_replica_state", replica="u0", state="ready")
                return state == 1.0

            await _until(ready, timeout_s=5)
            assert {(await _chat(http))[1] for _ in range(4)} == {f"{MODEL}/u0", f"{MODEL}/u1"}


async def test_refused_connections_eject_a_stopped_replica_at_once(tmp_path: Path) -> None:
    async with _fakes(2) as (dead, live):
        # No health path: passive health only. A long ejection, so it holds for the whole test.
        health = {"base_ejection_s": 30}
        async with _gateway(tmp_path, _entries([dead, live]), health=health, pools=ROUND_ROBIN) as (
            _,
            http,
        ):
            await dead.stop()
            stopped = time.monotonic()

            async def ejected() -> bool:
                # Every request succeeds: a refused connection is retried elsewhere, for free.
                assert await _chat(http) == (200, f"{MODEL}/u1")
                count = await _metric(http, "tidegate_pool_ejected_replicas", model=MODEL)
                return count == 1.0

            await _until(ejected, timeout_s=5, step_s=0)
            assert time.monotonic() - stopped <= 2.0
            # Back up on the same port, but ejected: it gets none of the traffic.
            await dead.start()
            for _ in range(10):
                assert await _chat(http) == (200, f"{MODEL}/u1")
            assert dead.requests == []
            assert len(live.requests) >= 10


# -- (b) 5xx outlier ejection -------------------------------------------------------------------


async def _send_until(http: httpx.AsyncClient, condition: Any, *, timeout_s: float) -> None:
    """Send requests one at a time until ``condition()`` holds."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        await _chat(http)


async def _send_for(http: httpx.AsyncClient, until: float) -> int:
    """Send requests one at a time until ``time.monotonic()`` reaches ``until``; how many."""
    sent = 0
    while time.monotonic() < until:
        await _chat(http)
        sent += 1
        await asyncio.sleep(0.01)
    return sent


async def test_5xx_replica_is_ejected_after_n_failures_and_readmitted_with_doubling(
    tmp_path: Path,
) -> None:
    async with _fakes(2) as (failing, good):
        failing.behaviour.fault = "status_500"
        health = {"consecutive_failures": 3, "base_ejection_s": 0.4, "max_ejection_s": 10}
        async with _gateway(
            tmp_path, _entries([failing, good]), health=health, pools=ROUND_ROBIN
        ) as (
            _,
            http,
        ):
            await _send_until(http, lambda: len(failing.requests) == 3, timeout_s=5)
            ejected_at = time.monotonic()  # the third failure ejected it (0.4 s)
            assert await _send_for(http, ejected_at + 0.2) > 0
            assert len(failing.requests) == 3
            # Eligible again once the ejection runs out; three more failures eject it again.
            await _send_until(http, lambda: len(failing.requests) == 4, timeout_s=5)
            await _send_until(http, lambda: len(failing.requests) == 6, timeout_s=5)
            ejected_at = time.monotonic()
            # The second ejection without a success in between lasts twice as long (0.8 s).
            assert await _send_for(http, ejected_at + 0.6) > 0
            assert len(failing.requests) == 6
            await _send_until(http, lambda: len(failing.requests) == 7, timeout_s=5)


async def test_at_most_the_max_share_of_a_pool_is_ejected(tmp_path: Path) -> None:
    async with _fakes(4) as fakes:
        for fake in fakes:
            fake.behaviour.fault = "status_500"
        health = {"consecutive_failures": 2, "base_ejection_s": 30, "max_ejected_share": 0.5}
        async with _gateway(tmp_path, _entries(fakes), health=health, pools=ROUND_ROBIN) as (
            _,
            http,
        ):
            for _ in range(16):
                assert (await _chat(http))[0] == 502
            assert await _metric(http, "tidegate_pool_ejected_replicas", model=MODEL) == 2.0
            before = [len(f.requests) for f in fakes]
            for _ in range(8):
                await _chat(http)
            grew = [len(f.requests) > b for f, b in zip(fakes, before, strict=True)]
            assert grew.count(True) == 2  # the two still in rotation take all of it


# -- (c) the retry budget -----------------------------------------------------------------------


async def test_retries_add_at_most_the_budget_ratio_of_upstream_requests(tmp_path: Path) -> None:
    async with _fakes(2) as (failing, good):
        failing.behaviour.fault = "status_500"
        # Never ejected: the budget alone must hold retries down.
        health = {"consecutive_failures": 1_000_000, "retry_budget_ratio": 0.2}
        async with _gateway(
            tmp_path, _entries([failing, good]), health=health, pools=ROUND_ROBIN
        ) as (
            _,
            http,
        ):
            clients = 240
            statuses: list[int] = []
            for _ in range(clients // 8):
                batch = await asyncio.gather(*(_chat(http) for _ in range(8)))
                statuses += [status for status, _ in batch]
            upstream = len(failing.requests) + len(good.requests)
            retried = upstream - clients
            assert upstream <= 1.2 * clients
            assert retried >= 0.15 * clients  # the budget is used, not just respected
            assert set(statuses) <= {200, 502}
            # Every request that reached the good replica, retried ones included, succeeded.
            assert statuses.count(200) == len(good.requests)
            assert statuses.count(502) == len(failing.requests) - retried


# -- (d) no retry once bytes reached the client -------------------------------------------------


async def test_a_stream_dropped_mid_way_ends_in_band_and_is_not_retried(tmp_path: Path) -> None:
    async with _fakes(2) as (dropping, good):
        dropping.behaviour.fault = "drop_mid_stream"
        dropping.behaviour.fault_after_tokens = 3
        async with _gateway(tmp_path, _entries([dropping, good]), health={}, pools=ROUND_ROBIN) as (
            _,
            http,
        ):
            backends = []
            for _ in range(2):
                async with http.stream(
                    "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
                ) as response:
                    assert response.status_code == 200
                    backend = response.headers["x-tidegate-backend"]
                    events = [e for e in (await response.aread()).split(b"\n\n") if e]
                backends.append(backend)
                assert events[-1] == b"data: [DONE]"
                last = orjson.loads(events[-2].removeprefix(b"data: "))
                if backend == f"{MODEL}/u0":
                    assert last["error"]["type"] == "upstream_error"
                else:
                    assert "error" not in last
            assert sorted(backends) == [f"{MODEL}/u0", f"{MODEL}/u1"]
            # The dropped stream was not sent again: the good replica got only its own request.
            assert (len(dropping.requests), len(good.requests)) == (1, 1)


# -- (e) circuit breaking with a fallback pool --------------------------------------------------


async def test_open_breaker_sends_straight_to_the_fallback_pool_until_a_probe_succeeds(
    tmp_path: Path,
) -> None:
    async with _fakes(2) as (primary, fallback):
        primary.behaviour.fault = "status_500"
        upstreams = [
            {"url": primary.base_url, "model": MODEL, "pool": "A"},
            {"url": fallback.base_url, "model": MODEL, "pool": "B"},
        ]
        health = {
            "breaker_failures": 3,
            "breaker_open_s": 0.5,
            "consecutive_failures": 1_000_000,  # the breaker's doing, not ejection
            "retry_budget_ratio": 1.0,  # every failure may fall back: clients see only 200s
        }
        routes = [{"model": MODEL, "pools": ["A", "B"]}]
        async with _gateway(tmp_path, upstreams, health=health, routes=routes) as (_, http):
            for _ in range(3):
                assert await _chat(http) == (200, "B/u1")  # A failed, B took it
            opened_at = time.monotonic()
            assert len(primary.requests) == 3
            assert await _metric(http, "tidegate_pool_circuit_open", model="A") == 1.0
            while time.monotonic() < opened_at + 0.3:  # open: A is not even tried
                assert await _chat(http) == (200, "B/u1")
            assert len(primary.requests) == 3

            # Half-open, A still failing: one probe reaches it, fails, and opens it again.
            await asyncio.sleep(max(0.0, opened_at + 0.5 - time.monotonic()))
            probe_window = time.monotonic()
            while time.monotonic() < probe_window + 0.3:
                assert await _chat(http) == (200, "B/u1")
            assert len(primary.requests) == 4
            reopened_before = time.monotonic()  # the failed probe came back inside the window

            # A recovers (slowly). While the next probe is in flight, others go to B.
            primary.behaviour.fault = "none"
            primary.behaviour.first_token_delay_s = 0.3
            await asyncio.sleep(max(0.0, reopened_before + 0.5 - time.monotonic()))
            probe = asyncio.create_task(_chat(http))
            await _until(_async(lambda: primary.active == 1), timeout_s=5, step_s=0.005)
            others = await asyncio.gather(*(_chat(http) for _ in range(5)))
            assert others == [(200, "B/u1")] * 5
            assert await probe == (200, "A/u0")
            assert await _metric(http, "tidegate_pool_circuit_open", model="A") == 0.0
            primary.behaviour.first_token_delay_s = 0.0
            for _ in range(5):
                assert await _chat(http) == (200, "A/u0")  # closed: A serves again


def _async(check: Any) -> Any:
    async def condition() -> bool:
        return bool(check())

    return condition


# -- (f) x-tidegate-backend ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_backend_header_names_the_pool_and_replica_that_served(
    tmp_path: Path, stream: bool
) -> None:
    async with _fakes(2) as fakes:
        async with _gateway(tmp_path, _entries(fakes), health={}, pools=ROUND_ROBIN) as (_, http):
            for _ in range(4):
                before = [len(f.requests) for f in fakes]
                response = await http.post("/v1/chat/completions", json={**CHAT, "stream": stream})
                assert response.status_code == 200
                served = [i for i, f in enumerate(fakes) if len(f.requests) > before[i]]
                assert response.headers["x-tidegate-backend"] == f"{MODEL}/u{served[0]}"
