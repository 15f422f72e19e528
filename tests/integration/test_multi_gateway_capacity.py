"""Three `tidegate up` processes sharing PostgreSQL and Redis in front of one fake pool of
capacity 8: together they never have more than 8 requests in flight at the upstream, whatever
comes and goes; interactive requests find slots while other gateways carry a batch flood; a
gateway killed with -9 gives its slots back within seconds."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.store_fixtures import reset_postgres
from tests.support.cluster_rig import (
    complete,
    gateway_sample,
    reset_peak,
    upstream_in_flight,
)
from tests.support.processes import (
    AdminClient,
    Cluster,
    GatewaySettings,
    Process,
    gateway_process,
    redis_prefix,
    running_cluster,
)

pytestmark = pytest.mark.postgres

MODEL = "fake-model"
CAPACITY = 8
HOLD_S = 0.15
"""How long the fake upstream holds each request (so slots stay taken)."""
RELEASE_DEADLINE_S = 10.0


@pytest.fixture
async def settings(tmp_path: Path, postgres_url: str) -> AsyncIterator[GatewaySettings]:
    reset_postgres(postgres_url)
    async with redis_prefix("capacity") as prefix:
        yield GatewaySettings(
            store_url=postgres_url,
            redis_prefix=prefix,
            wal_dir=tmp_path / "wal",
            upstream_max_concurrency=CAPACITY,
            extra_env={"TIDEGATE_SCHEDULING__CLUSTER__HEARTBEAT_S": "0.25"},
        )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        yield session


@pytest.fixture
async def cluster(tmp_path: Path, settings: GatewaySettings) -> AsyncIterator[Cluster]:
    async with running_cluster(
        tmp_path, settings, gateways=3, first_token_delay_s=HOLD_S
    ) as running:
        yield running


async def api_key(http: aiohttp.ClientSession, cluster: Cluster) -> str:
    admin = AdminClient(http, cluster.gateways[0].url)
    _, key = await admin.tenant_with_key("flood", {})
    return key


async def shares(http: aiohttp.ClientSession, gateways: list[Process]) -> list[float]:
    return [
        await gateway_sample(http, g, "tidegate_cluster_share", {"pool": MODEL}) or 0.0
        for g in gateways
    ]


async def wait_for_shares(
    http: aiohttp.ClientSession, gateways: list[Process], timeout_s: float = RELEASE_DEADLINE_S
) -> float:
    """Seconds until the gateways' shares add up to the whole capacity, each of them seeing
    exactly ``len(gateways)`` members."""
    start = time.monotonic()
    while True:
        members = [
            await gateway_sample(http, g, "tidegate_cluster_members", {"pool": MODEL})
            for g in gateways
        ]
        if sum(await shares(http, gateways)) == CAPACITY and set(members) == {len(gateways)}:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout_s, (members, await shares(http, gateways))
        await asyncio.sleep(0.1)


async def sustained_flood(
    http: aiohttp.ClientSession,
    gateways: list[Process],
    key: str,
    stop: asyncio.Event,
    *,
    workers_per_gateway: int = 8,
) -> list[int]:
    """Each worker sends one request after the other to its gateway until ``stop``; the
    statuses. A worker whose gateway went away (stopped or killed) ends: -1."""
    statuses: list[int] = []

    async def worker(gateway: Process) -> None:
        while not stop.is_set() and gateway.running:
            try:
                outcome = await complete(http, gateway, key, model=MODEL)
            except aiohttp.ClientError:
                statuses.append(-1)
                return
            statuses.append(outcome.status)

    await asyncio.gather(*(worker(g) for g in gateways for _ in range(workers_per_gateway)))
    return statuses


async def test_in_flight_never_exceeds_capacity_as_gateways_come_and_go(
    http: aiohttp.ClientSession, cluster: Cluster, settings: GatewaySettings, tmp_path: Path
) -> None:
    key = await api_key(http, cluster)
    await wait_for_shares(http, cluster.gateways)
    await reset_peak(http, cluster.upstream)

    # A burst through all three at once: 150 requests for 8 slots.
    gateways = itertools.cycle(cluster.gateways)
    burst = await asyncio.gather(
        *(complete(http, next(gateways), key, model=MODEL) for _ in range(150))
    )
    assert [o.status for o in burst] == [200] * 150, {o.status for o in burst}
    stats = await upstream_in_flight(http, cluster.upstream)
    assert stats["peak_in_flight"] <= CAPACITY, stats
    assert stats["peak_in_flight"] >= CAPACITY - 2, stats  # the shares are used, not idle

    # Sustained load while a fourth gateway joins and one of the three stops.
    await reset_peak(http, cluster.upstream)
    stop = asyncio.Event()
    flood = asyncio.create_task(sustained_flood(http, cluster.gateways, key, stop))
    joiner = gateway_process(tmp_path, 3, cluster.upstream.url, settings)
    cluster.gateways.append(joiner)
    joiner.start()
    await joiner.wait_ready("/readyz")
    second = asyncio.create_task(sustained_flood(http, [joiner], key, stop))
    await wait_for_shares(http, cluster.gateways)
    await cluster.gateways[1].stop()
    survivors = [g for g in cluster.gateways if g.running]
    await wait_for_shares(http, survivors)
    await asyncio.sleep(1.0)
    stop.set()
    statuses = [*await flood, *await second]
    stats = await upstream_in_flight(http, cluster.upstream)
    assert stats["peak_in_flight"] <= CAPACITY, stats
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert counts.get(200, 0) > 50, counts
    assert set(counts) <= {200, -1}, counts  # -1: the stopped gateway's workers


async def test_interactive_requests_get_slots_ahead_of_a_batch_flood_through_other_gateways(
    http: aiohttp.ClientSession, cluster: Cluster
) -> None:
    key = await api_key(http, cluster)
    await wait_for_shares(http, cluster.gateways)
    flooded, quiet = cluster.gateways[:2], cluster.gateways[2]
    batch = [
        asyncio.create_task(complete(http, g, key, model=MODEL, priority="batch"))
        for g in flooded
        for _ in range(60)
    ]
    await asyncio.sleep(1.0)  # the flood holds every slot batch may take and queues the rest
    interactive = []
    for gateway in [quiet, quiet, quiet, *flooded, *flooded]:
        interactive.append(await complete(http, gateway, key, model=MODEL))
    done_at = time.monotonic()
    outcomes = await asyncio.gather(*batch)
    assert [o.status for o in outcomes] == [200] * len(outcomes)
    assert [o.status for o in interactive] == [200] * len(interactive)
    # Behind the flood, an interactive request would wait seconds (120 requests through at most
    # 8 slots at 0.15 s each); ahead of it, it waits for nothing but its own service time.
    assert max(o.latency_s for o in interactive) < 1.0, [o.latency_s for o in interactive]
    still_queued = sum(1 for o in outcomes if o.finished_at > done_at)
    assert still_queued >= 20, still_queued
    stats = await upstream_in_flight(http, cluster.upstream)
    assert stats["peak_in_flight"] <= CAPACITY, stats


async def test_a_gateway_killed_with_sigkill_gives_its_slots_back_within_seconds(
    http: aiohttp.ClientSession, cluster: Cluster
) -> None:
    key = await api_key(http, cluster)
    await wait_for_shares(http, cluster.gateways)
    victim, survivors = cluster.gateways[2], cluster.gateways[:2]
    stop = asyncio.Event()
    flood = asyncio.create_task(sustained_flood(http, [victim], key, stop))
    await asyncio.sleep(0.5)  # the victim holds its share of slots
    victim.kill()
    killed_at = time.monotonic()
    await wait_for_shares(http, survivors)
    released_s = time.monotonic() - killed_at
    assert released_s < RELEASE_DEADLINE_S
    stop.set()
    await flood

    # The slots are usable again: a burst through the survivors fills the whole pool.
    await reset_peak(http, cluster.upstream)
    gateways = itertools.cycle(survivors)
    burst = await asyncio.gather(
        *(complete(http, next(gateways), key, model=MODEL) for _ in range(64))
    )
    assert [o.status for o in burst] == [200] * 64
    stats = await upstream_in_flight(http, cluster.upstream)
    assert CAPACITY - 1 <= stats["peak_in_flight"] <= CAPACITY, stats
