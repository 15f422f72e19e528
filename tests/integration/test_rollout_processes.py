"""A rollout driven across two ``tidegate up`` processes sharing one store: exactly one of them
(the holder of the controller lease) makes the moves, both follow the split and both feed the
statistics the gates judge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from sqlalchemy import select

from tests.integration.test_rollouts import (
    EQUAL_GATES,
    Load,
    moves,
    start_rollout,
    until_served_by,
    wait_for,
)
from tests.integration.test_scheduling import sample
from tests.support.gateway import ADMIN_KEY
from tests.support.processes import (
    GatewaySettings,
    Process,
    fake_upstream_process,
    gateway_process,
)
from tidegate.store import create_engine, create_sessionmaker
from tidegate.store.models import Lease, RolloutStepStats


@asynccontextmanager
async def two_gateways(tmp_path: Path, store_url: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Pools ``fake-model`` (stable, the --upstream of `tidegate up`) and ``green``, behind the
    public model ``chat``, on two gateway processes."""
    blue = fake_upstream_process(tmp_path / "blue", first_token_delay_s=0.05, token_delay_s=0.02)
    green = fake_upstream_process(tmp_path / "green", first_token_delay_s=0.05, token_delay_s=0.02)
    extra = {
        "TIDEGATE_UPSTREAMS": json.dumps(
            [{"url": green.url + "/v1", "model": "fake-model", "pool": "green"}]
        ),
        "TIDEGATE_ROUTING__ROUTES": json.dumps(
            [{"model": "chat", "pools": ["fake-model", "green"]}]
        ),
        "TIDEGATE_ROLLOUTS__SYNC_INTERVAL_S": "0.2",
        "TIDEGATE_ROLLOUTS__CONTROLLER_INTERVAL_S": "0.2",
        "TIDEGATE_ROLLOUTS__STATS_FLUSH_INTERVAL_S": "0.2",
        "TIDEGATE_ROLLOUTS__LOCK_TTL_S": "3",
        "TIDEGATE_ROUTING__HEALTH__CONSECUTIVE_FAILURES": "1000",
    }
    settings = GatewaySettings(
        store_url=store_url,
        redis_prefix="unused",
        wal_dir=tmp_path / "wal",
        limits_backend="memory",
        extra_env=extra,
    )
    gateways = [gateway_process(tmp_path, i, blue.url, settings) for i in range(2)]
    processes: list[Process] = [blue, green, *gateways]
    try:
        for process in processes:
            process.start()
        await asyncio.gather(blue.wait_ready("/health"), green.wait_ready("/health"))
        await asyncio.gather(*(g.wait_ready("/readyz") for g in gateways))
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=g.url, timeout=30))
                for g in gateways
            ]
            yield clients
    except BaseException:
        for process in processes:
            print(f"===== {process.name}\n{process.log_tail()}")
        raise
    finally:
        await asyncio.gather(*(p.stop() for p in processes))


async def promoted_metrics(http: httpx.AsyncClient, timeout_s: float = 10.0) -> str:
    """The gateway's /metrics once its rollout gauges (refreshed every controller round, on
    every gateway) show the promotion."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = (
            await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        if sample(metrics, "tidegate_rollout_state", model="chat", state="promoted") == 1:
            return metrics
        assert time.monotonic() < deadline, "the rollout gauges never showed the promotion"
        await asyncio.sleep(0.1)


async def test_one_of_two_gateway_processes_drives_the_rollout(
    tmp_path: Path, store_url: str
) -> None:
    async with two_gateways(tmp_path, store_url) as (first, second):
        async with Load(first).running(), Load(second).running():
            created = await start_rollout(first, gates=EQUAL_GATES)
            assert created["stable_pool"] == "fake-model"
            done = await wait_for(second, created["id"], timeout_s=120)
        assert done["state"] == "promoted", done["reason"]
        assert moves(done) == [("running", 0), ("running", 1), ("running", 2), ("promoted", 2)]

        # One controller made every move; both gateways follow the split.
        made = []
        for http in (first, second):
            metrics = await promoted_metrics(http)
            made.append(
                sum(
                    sample(metrics, "tidegate_rollout_transitions_total", model="chat", state=s)
                    for s in ("running", "promoted")
                )
            )
            await until_served_by(http, {"green"})
        assert sorted(made) == [0, 3]

    engine = create_engine(store_url)
    try:
        async with create_sessionmaker(engine)() as session:
            writers = set(await session.scalars(select(RolloutStepStats.gateway_id)))
            holders = list(await session.scalars(select(Lease.holder)))
    finally:
        await engine.dispose()
    assert len(writers) == 2  # both gateways' requests fed the gates
    assert len(holders) <= 1  # released on shutdown, or held by the last one
