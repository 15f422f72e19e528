"""An autoscaling local pool through the real gateway: uvicorn on loopback, the real supervisor
starting and stopping replicas, the real scheduler queueing. Each replica is the fake vLLM-shaped
server, started by a stand-in ``python`` in the engine venv; it serves 2 requests at once
(max_num_seqs 2) and answers each after ~1 s, so a burst of 8 clients queues in the gateway.

With a warm standby: the burst promotes it at once (1 → 2 routed), the cool-down drains one
replica while a request is in flight on it (the request still succeeds), stops it, and a new
standby loads in its place; every request of the run succeeds. Without one: the new replica
joins only once loaded, and takes its first request after it became ready.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import ADMIN_KEY, auth, free_port, serve
from tidegate.config import AutoscalingPolicy, Config, EngineProfile, EnginesConfig
from tidegate.engines.state_file import STATE_FILE_NAME, read_state

MODEL = "smol"
_STAND_IN = """#!{python}
# The engine venv's python for these tests: "loads" for FAKE_LOAD_S, then serves the fake
# vLLM-shaped server under --served-model-name, answering after --first-token-delay-s.
import argparse, os, time
from tidegate_testing.fake_server import main
parser = argparse.ArgumentParser(allow_abbrev=False)
parser.add_argument("--port")
parser.add_argument("--served-model-name")
parser.add_argument("--first-token-delay-s", default="0")
known, _ = parser.parse_known_args()
time.sleep(float(os.environ.get("FAKE_LOAD_S", "0")))
main(["--port", known.port, "--model", known.served_model_name,
      "--first-token-delay-s", known.first_token_delay_s, "--tokens", "4"])
"""


def stand_in_venv(tmp_path: Path) -> Path:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(_STAND_IN.format(python=sys.executable))
    python.chmod(0o755)
    return tmp_path / "venv"


def model_dir(tmp_path: Path) -> str:
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return str(path)


def scaling_config(tmp_path: Path, *, warm_standby: int, load_s: float = 0.0) -> Config:
    return Config(
        home=tmp_path / "home",
        admin_key=ADMIN_KEY,
        server={"port": free_port()},
        engines=EnginesConfig(
            model=model_dir(tmp_path),
            served_model_name=MODEL,
            venv=str(stand_in_venv(tmp_path)),
            health_interval_s=0.2,
            drain_grace_s=15,
            stop_timeout_s=5,
            profile=EngineProfile(
                device="cpu",
                max_num_seqs=2,
                extra_args=["--first-token-delay-s", "1.0"],
                extra_env={"FAKE_LOAD_S": str(load_s)},
            ),
            autoscaling=AutoscalingPolicy(
                enabled=True,
                min_replicas=1,
                max_replicas=2,
                warm_standby=warm_standby,
                signal="in_flight_per_replica",
                target=2.0,
                scale_down_stabilization_s=2.0,
                cooldown_s=3.0,
                idle_scale_to_min_s=0,
                evaluation_interval_s=0.2,
            ),
        ),
    )


class Gateway:
    def __init__(self, http: httpx.AsyncClient, config: Config) -> None:
        self.http = http
        self.config = config
        self.statuses: list[int] = []
        self.backends: list[str] = []

    async def chat(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        response = await self.http.post("/v1/chat/completions", json=body, headers=auth(ADMIN_KEY))
        self.statuses.append(response.status_code)
        self.backends.append(response.headers.get("x-tidegate-backend", ""))

    async def clients(self, count: int, seconds: float) -> None:
        """``count`` clients sending one request after another for ``seconds``."""
        deadline = time.monotonic() + seconds

        async def client() -> None:
            while time.monotonic() < deadline:
                await self.chat()

        await asyncio.gather(*(client() for _ in range(count)))

    async def metric(self, name: str, **labels: str) -> float:
        text = (await self.http.get("/metrics", headers=auth(ADMIN_KEY))).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    async def replicas(self, state: str) -> float:
        return await self.metric("tidegate_pool_replicas", pool=MODEL, state=state)

    async def events(self, direction: str, reason: str) -> float:
        return await self.metric(
            "tidegate_pool_scale_events_total", pool=MODEL, direction=direction, reason=reason
        )

    async def until(self, check: Callable[[], Any], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.1)


@asynccontextmanager
async def gateway(config: Config) -> AsyncIterator[Gateway]:
    async with (
        serve(config) as running,
        httpx.AsyncClient(base_url=running.url, timeout=60) as http,
    ):
        yield Gateway(http, config)


async def test_a_burst_promotes_the_standby_and_the_cool_down_drains_one(tmp_path: Path) -> None:
    config = scaling_config(tmp_path, warm_standby=1)
    async with gateway(config) as gw:

        async def loaded() -> bool:
            return await gw.replicas("ready") == 1 and await gw.replicas("standby") == 1

        await gw.until(loaded)
        # The standby takes no request: everything before the burst goes to r0.
        await gw.chat()
        assert gw.backends == [f"{MODEL}/r0"]

        # Burst: 8 clients on a capacity of 2 per replica.
        burst = asyncio.create_task(gw.clients(8, seconds=4.0))

        async def promoted() -> bool:
            return await gw.replicas("ready") == 2

        await gw.until(promoted, timeout=10)
        assert await gw.events("up", "queue_pressure") == 1
        assert await gw.replicas("standby") == 0  # max_replicas 2: no room for another
        await burst
        assert f"{MODEL}/r1" in gw.backends  # the promoted standby served the burst

        # Cool-down: 2 clients, one request in flight on each replica, 1 per replica of a
        # target of 2: one replica goes, draining its request first.
        cool = asyncio.create_task(gw.clients(2, seconds=8.0))

        async def drained() -> bool:
            return await gw.events("down", "low_load") == 1

        await gw.until(drained, timeout=15)

        async def refilled() -> bool:
            return await gw.replicas("ready") == 1 and await gw.replicas("standby") == 1

        await gw.until(refilled, timeout=30)
        await cool
        assert await gw.events("up", "standby_refill") == 1
        assert await gw.events("down", "low_load") == 1  # once: load stayed at the target

    # No request was lost: the burst queued, the drained replica finished its own.
    assert gw.statuses and set(gw.statuses) == {200}, sorted(set(gw.statuses))
    snapshot = read_state(config.state_dir / STATE_FILE_NAME)
    assert snapshot is not None
    assert [p.desired_routed for p in snapshot.pools] == [1]


async def test_scale_events_are_audited(tmp_path: Path) -> None:
    config = scaling_config(tmp_path, warm_standby=1)
    async with gateway(config) as gw:

        async def loaded() -> bool:
            return await gw.replicas("standby") == 1

        await gw.until(loaded)
        burst = asyncio.create_task(gw.clients(6, seconds=2.0))

        async def promoted() -> bool:
            return await gw.events("up", "queue_pressure") == 1

        await gw.until(promoted, timeout=10)
        await burst

        async def audited() -> list[dict[str, Any]]:
            page = await gw.http.get("/admin/audit", headers=auth(ADMIN_KEY))
            assert page.status_code == 200, page.text
            return [e for e in page.json()["data"] if e["action"] == "pool.scale"]

        async def has_event() -> bool:
            return bool(await audited())

        await gw.until(has_event, timeout=10)
        (event, *_) = await audited()
        assert event["actor"]["name"] == "tidegate:autoscaler"
        assert event["target"] == {"type": "pool", "id": MODEL}
        assert event["details"]["action"] == "promoted"
        assert event["details"]["reason"] == "queue_pressure"
        assert event["details"]["replica"] == "r1"


async def test_a_new_replica_takes_its_first_request_once_ready(tmp_path: Path) -> None:
    config = scaling_config(tmp_path, warm_standby=0, load_s=2.0)
    async with gateway(config) as gw:

        async def loaded() -> bool:
            return await gw.replicas("ready") == 1

        await gw.until(loaded)
        burst = asyncio.create_task(gw.clients(8, seconds=6.0))

        async def loading() -> bool:
            return await gw.replicas("starting") == 1

        await gw.until(loading, timeout=10)
        assert await gw.replicas("ready") == 1  # in the table, but not ready: not routed

        async def second() -> bool:
            return await gw.replicas("ready") == 2

        await gw.until(second, timeout=20)
        await burst
        first = await gw.metric(
            "tidegate_replica_first_request_timestamp_seconds", pool=MODEL, replica="r1"
        )
        snapshot = read_state(config.state_dir / STATE_FILE_NAME)
        assert snapshot is not None
        (r1,) = [r for r in snapshot.replicas if r.id == "r1"]
        assert r1.ready_at is not None and r1.started_at is not None
        assert r1.ready_at - r1.started_at >= 2.0  # it really loaded for FAKE_LOAD_S
        assert r1.ready_at <= first  # no request before it was ready
    assert set(gw.statuses) == {200}
