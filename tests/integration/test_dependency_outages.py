"""Start-up and outages of Redis and PostgreSQL, with real processes: a gateway started with
``tidegate up``, a fake upstream, and the test's own redis-server and PostgreSQL (stopped and
started by the test; the machine's shared servers are never touched).

- A cold gateway answers a burst without a spurious ``limiter_unavailable``.
- Redis down: /readyz is 503 naming the limit store, each tenant gets its
  ``on_limiter_unavailable``; Redis back: ready again within seconds, no restart.
- PostgreSQL down mid-run (one run for at least 60 s): cached keys still authenticate, every
  request's usage record is in the store exactly once after it returns.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from tests.support.gateway import ADMIN_KEY
from tests.support.own_servers import (
    SlowConnectProxy,
    own_postgres,
    own_redis,
)
from tests.support.processes import (
    AdminClient,
    GatewaySettings,
    Process,
    fake_upstream_process,
    gateway_process,
)
from tidegate.store import create_engine, create_sessionmaker
from tidegate.store.models import UsageRecord

MODEL = "fake-model"
BODY = {"model": MODEL, "prompt": [11, 12, 13], "max_tokens": 4}
LIMIT_STORE_UP = 'tidegate_dependency_up{dependency="limit_store"}'
HIGH_LIMITS = {"limits": {"requests_per_minute": 1_000_000}}  # counted in Redis, never binding


@asynccontextmanager
async def gateway(
    directory: Path, *, redis_url: str, store_url: str, extra: dict[str, str] | None = None
) -> AsyncIterator[tuple[Process, Process]]:
    """A fake upstream and one gateway on ``redis_url`` and ``store_url``, both ready."""
    settings = GatewaySettings(
        store_url=store_url,
        redis_prefix="outage",
        wal_dir=directory / "wal",
        extra_env={
            "TIDEGATE_LIMITS__REDIS_URL": redis_url,
            "TIDEGATE_LIMITS__REDIS_TIMEOUT_S": "0.25",  # the default: what failed cold
            **(extra or {}),
        },
    )
    upstream = fake_upstream_process(directory, model=MODEL, tokens=4)
    gw = gateway_process(directory, 0, upstream.url, settings)
    try:
        upstream.start()
        gw.start()
        await upstream.wait_ready("/health")
        await gw.wait_ready("/readyz")
        yield upstream, gw
    except BaseException:
        print(f"===== {gw.name}\n{gw.log_tail()}\n===== upstream\n{upstream.log_tail()}")
        raise
    finally:
        await asyncio.gather(gw.stop(), upstream.stop())


async def post(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, str, str]:
    """One completion: (status, error code or "", request id)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(url + "/v1/completions", json=BODY, headers=headers) as response:
        data: dict[str, Any] = await response.json(content_type=None)
        code = "" if response.status == 200 else str(data["error"].get("code"))
        return response.status, code, response.headers.get("x-request-id", "")


async def readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url + "/readyz") as response:
        return response.status, await response.json()


async def until(condition: Any, *, timeout_s: float, what: str) -> float:
    """Polls the async ``condition`` every 0.1 s; returns the seconds it took."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what} not within {timeout_s} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_cold_gateway_answers_a_burst_without_limiter_unavailable(tmp_path: Path) -> None:
    """Connecting to Redis takes 0.3 s here, longer than a limit check may (0.25 s): the
    connections must be open before /readyz says ready, and a burst must reuse them."""
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    with own_redis(tmp_path / "redis") as redis_server:
        async with (
            SlowConnectProxy(redis_server.port, delay_s=0.3) as proxy,
            gateway(tmp_path, redis_url=proxy.url, store_url=store_url) as (_, gw),
        ):
            async with aiohttp.ClientSession() as http:
                _, key = await AdminClient(http, gw.url).tenant_with_key("cold", HIGH_LIMITS)
            await gw.stop()
            gw.start()  # a fresh process: no connection to Redis yet
            await gw.wait_ready("/readyz")
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                results = await asyncio.gather(*(post(http, gw.url, key) for _ in range(200)))
    seen = collections.Counter((status, code) for status, code, _ in results)
    assert seen[(503, "limiter_unavailable")] == 0, seen
    assert seen[(200, "")] == 200, seen


async def test_redis_down_and_back(tmp_path: Path) -> None:
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    with own_redis(tmp_path / "redis") as redis_server:
        async with (
            gateway(tmp_path, redis_url=redis_server.url, store_url=store_url) as (_, gw),
            aiohttp.ClientSession() as http,
        ):
            admin = AdminClient(http, gw.url)
            _, open_key = await admin.tenant_with_key(
                "fails-open", {**HIGH_LIMITS, "on_limiter_unavailable": "open"}
            )
            _, closed_key = await admin.tenant_with_key("fails-closed", HIGH_LIMITS)
            assert (await post(http, gw.url, closed_key))[:2] == (200, "")

            redis_server.stop()

            async def not_ready() -> bool:
                status, body = await readyz(http, gw.url)
                return status == 503 and body["components"]["limit_store"]["state"] == "down"

            await until(not_ready, timeout_s=10, what="/readyz 503 naming the limit store")
            status, body = await readyz(http, gw.url)
            assert body["components"]["store"]["state"] == "up", body
            assert any(p.startswith("limit_store unreachable") for p in body["problems"]), body
            assert "fails-" not in str(body)  # no tenant name in the probe's answer
            assert await metric(http, gw.url, LIMIT_STORE_UP) == 0
            assert (await post(http, gw.url, open_key))[:2] == (200, "")
            assert (await post(http, gw.url, closed_key))[:2] == (503, "limiter_unavailable")

            redis_server.start()  # empty: no persistence

            async def ready() -> bool:
                return (await readyz(http, gw.url))[0] == 200

            took = await until(ready, timeout_s=5, what="/readyz 200 after Redis is back")
            print(f"ready again {took:.1f} s after Redis was")
            assert await metric(http, gw.url, LIMIT_STORE_UP) == 1
            results = [await post(http, gw.url, closed_key) for _ in range(20)]
            assert {r[:2] for r in results} == {(200, "")}, results


async def stored_usage(store_url: str, tenant_id: str) -> list[str]:
    """Request ids of the tenant's usage records, one entry per row."""
    engine = create_engine(store_url)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(UsageRecord.request_id).where(UsageRecord.tenant_id == tenant_id)
            )
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with http.get(url + "/metrics", headers=headers) as response:
        text = await response.text()
    return float(next(x for x in text.splitlines() if x.startswith(name + " ")).split()[-1])


@pytest.mark.parametrize("outage_s", [5.0, 61.0], ids=["5s", "61s"])
async def test_postgres_down_mid_run_loses_no_usage(tmp_path: Path, outage_s: float) -> None:
    """Traffic goes on while PostgreSQL is down for ``outage_s`` (the key was verified before,
    so it still authenticates); once it is back every request's usage is stored exactly once."""
    with own_postgres() as postgres:
        extra = {"TIDEGATE_LIMITS__BACKEND": "memory"}
        async with (
            gateway(
                tmp_path, redis_url="redis://127.0.0.1:1/0", store_url=postgres.url, extra=extra
            ) as (_, gw),  # fmt: skip
            aiohttp.ClientSession() as http,
        ):
            tenant_id, key = await AdminClient(http, gw.url).tenant_with_key("metered", {})
            served: list[str] = []

            async def traffic(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    status, code, request_id = await post(http, gw.url, key)
                    assert (status, code) == (200, ""), (status, code)
                    served.append(request_id)
                    await asyncio.sleep(0.25)

            await traffic(1.0)
            postgres.stop()
            outage_started = time.monotonic()
            await traffic(min(outage_s, 3.0))
            status, body = await readyz(http, gw.url)
            assert status == 503 and body["components"]["store"]["state"] == "down", body
            assert await metric(http, gw.url, "tidegate_usage_wal_bytes") > 0
            unknown = await post(http, gw.url, "tg-" + "z" * 43)  # never verified: cannot be
            assert unknown[0] == 503, unknown  # checked now, so 503 (not 401, not served)
            await traffic(outage_s - (time.monotonic() - outage_started))
            postgres.start()
            await traffic(1.0)

            async def all_stored() -> bool:
                return len(await stored_usage(postgres.url, tenant_id)) >= len(served)

            took = await until(all_stored, timeout_s=15, what="every usage record stored")
            print(f"{len(served)} requests; all stored {took:.1f} s after PostgreSQL was back")
            await until(
                lambda: _ready(http, gw.url), timeout_s=5, what="/readyz 200 after PostgreSQL"
            )
            stored = await stored_usage(postgres.url, tenant_id)
    assert len(served) >= 2 * outage_s  # traffic went on throughout the outage
    assert sorted(stored) == sorted(served)  # each request once, no other row


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    return (await readyz(http, url))[0] == 200


async def test_a_full_usage_backlog_refuses_requests_until_the_store_is_back(
    tmp_path: Path,
) -> None:
    """metering.wal_max_bytes bounds what waits for a store that is down: past it, requests are
    refused with 503 rather than served unmetered; when the store is back they are served."""
    with own_postgres() as postgres:
        extra = {"TIDEGATE_LIMITS__BACKEND": "memory", "TIDEGATE_METERING__WAL_MAX_BYTES": "4000"}
        async with (
            gateway(
                tmp_path, redis_url="redis://127.0.0.1:1/0", store_url=postgres.url, extra=extra
            ) as (_, gw),  # fmt: skip
            aiohttp.ClientSession() as http,
        ):
            tenant_id, key = await AdminClient(http, gw.url).tenant_with_key("bounded", {})
            served = [await post(http, gw.url, key) for _ in range(2)]
            postgres.stop()
            refused: tuple[int, str, str] | None = None
            for _ in range(40):  # about 10 records fill 4000 bytes
                result = await post(http, gw.url, key)
                if result[0] != 200:
                    refused = result
                    break
                served.append(result)
            assert refused is not None and refused[0] == 503, refused
            assert 5 <= len(served) < 40
            postgres.start()

            async def serving() -> bool:
                result = await post(http, gw.url, key)
                if result[0] == 200:
                    served.append(result)
                return result[0] == 200

            await until(serving, timeout_s=15, what="requests served again")

            async def all_stored() -> bool:
                return len(await stored_usage(postgres.url, tenant_id)) >= len(served)

            await until(all_stored, timeout_s=15, what="every usage record stored")
            stored = await stored_usage(postgres.url, tenant_id)
    assert sorted(stored) == sorted(r[2] for r in served)
