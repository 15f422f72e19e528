"""An autoscaling local pool of real vLLM CPU replicas behind the real gateway.

One replica at min, max 2, each replica serving 2 sequences at once so a burst of 8 clients
queues in the gateway: the autoscaler starts a second vLLM (on its own share of the cores),
routes to it only once it has loaded, and after the burst, with short windows, drains it and
stops it again. Every request of the run is answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.support.gateway import ADMIN_KEY, RunningGateway, auth, free_port, serve
from tidegate.config import AutoscalingPolicy, Config
from tidegate.engines.state_file import STATE_FILE_NAME, read_state

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MODEL = "smollm2-135m-instruct"
POLICY = AutoscalingPolicy(
    enabled=True,
    min_replicas=1,
    max_replicas=2,
    signal="in_flight_per_replica",
    target=2.0,
    scale_up_stabilization_s=0.0,
    scale_down_stabilization_s=5.0,
    cooldown_s=10.0,
    idle_scale_to_min_s=0.0,
    evaluation_interval_s=0.5,
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(engine_config: Config) -> AsyncIterator[RunningGateway]:
    engines = engine_config.engines.model_copy(
        update={
            "replicas": 1,
            "autoscaling": POLICY,
            "profile": engine_config.engines.profile.model_copy(update={"max_num_seqs": 2}),
        }
    )
    config = engine_config.model_copy(
        update={
            "admin_key": SecretStr(ADMIN_KEY),
            "server": engine_config.server.model_copy(update={"port": free_port()}),
            "engines": engines,
        }
    )
    async with serve(config) as running:
        yield running


async def _metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await http.get("/metrics", headers=auth(ADMIN_KEY))).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _replicas(http: httpx.AsyncClient, state: str) -> float:
    return await _metric(http, "tidegate_pool_replicas", pool=MODEL, state=state)


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        await asyncio.sleep(0.5)


async def test_a_burst_scales_the_pool_to_two_and_the_cool_down_back_to_one(
    gateway: RunningGateway,
) -> None:
    statuses: list[int] = []
    backends: list[str] = []
    stop = asyncio.Event()
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count from one to twenty."}],
        "max_tokens": 24,
        "temperature": 0,
    }
    async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as http:

        async def one_ready() -> bool:
            return await _replicas(http, "ready") == 1

        await _until(one_ready, 300, "the first replica was not ready")

        async def client() -> None:
            while not stop.is_set():
                response = await http.post(
                    "/v1/chat/completions", json=body, headers=auth(ADMIN_KEY)
                )
                statuses.append(response.status_code)
                backends.append(response.headers.get("x-tidegate-backend", ""))

        clients = [asyncio.create_task(client()) for _ in range(8)]
        burst_at = time.time()

        async def scaled_up() -> bool:
            return await _metric(http, "tidegate_pool_desired_replicas", pool=MODEL) == 2

        await _until(scaled_up, 30, "the burst did not raise the desired replicas to 2")

        async def two_ready() -> bool:
            return await _replicas(http, "ready") == 2

        await _until(two_ready, 300, "the second replica was not ready")

        async def second_serves() -> bool:
            return f"{MODEL}/r1" in backends

        await _until(second_serves, 60, "the second replica served nothing")
        stop.set()
        await asyncio.gather(*clients)
        first = await _metric(
            http, "tidegate_replica_first_request_timestamp_seconds", pool=MODEL, replica="r1"
        )
        snapshot = read_state(gateway.config.state_dir / STATE_FILE_NAME)
        assert snapshot is not None
        (r1,) = [r for r in snapshot.replicas if r.id == "r1"]
        assert r1.ready_at is not None and r1.ready_at <= first  # routed only once loaded
        print(f"burst start to r1's first request: {first - burst_at:.1f} s")
        up = await _metric(
            http,
            "tidegate_pool_scale_events_total",
            pool=MODEL,
            direction="up",
            reason="queue_pressure",
        )
        assert up == 1

        # Cool-down: no load, a 5 s down window, then r1 is drained and stopped.
        async def back_to_one() -> bool:
            return (
                await _replicas(http, "ready") == 1
                and await _replicas(http, "draining") == 0
                and await _metric(http, "tidegate_pool_desired_replicas", pool=MODEL) == 1
            )

        await _until(back_to_one, 60, "the pool did not scale back to one replica")
        down = await _metric(
            http,
            "tidegate_pool_scale_events_total",
            pool=MODEL,
            direction="down",
            reason="low_load",
        )
        assert down == 1
        snapshot = read_state(gateway.config.state_dir / STATE_FILE_NAME)
        assert snapshot is not None
        assert [(r.id, r.state) for r in snapshot.replicas] == [("r0", "ready")]
        # Still served after the scale-down.
        response = await http.post("/v1/chat/completions", json=body, headers=auth(ADMIN_KEY))
        assert response.status_code == 200
        assert response.headers["x-tidegate-backend"] == f"{MODEL}/r0"
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
