"""kill -9 of a `tidegate up` process under load, then a restart on the same home, WAL
directory and store: every request whose response a client fully received has exactly one usage
record, and requests cut by the kill have at most one.

The clients send their own x-request-id (kept as the record's client_request_id; the record's
key is the gateway's own id), so each response can be matched to its record. Limits
run on Redis (as with several replicas), so every request also settles a reservation there.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from sqlalchemy import Row, func, select

from tests.support.processes import (
    AdminClient,
    GatewaySettings,
    redis_prefix,
    running_cluster,
    shared_store_url,
)
from tidegate.store import create_engine, create_sessionmaker
from tidegate.store.models import UsageRecord

MODEL = "fake-model"
PROMPT = [11, 12, 13, 14, 15]
TOKENS = 8
CLIENTS = 20
KILL_AFTER = 300  # fully received responses before the kill, at least
BATCH = 100  # usage records per flush
DONE = b"data: [DONE]\n\n"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with redis_prefix("crash") as name:
        yield name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return shared_store_url(request, tmp_path)


class Load:
    """Closed-loop clients; remembers which request ids were fully received."""

    def __init__(self, url: str, key: str, run: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.run = run
        self.ids = itertools.count()
        self.complete: set[str] = set()
        self.cut: set[str] = set()  # sent, but no complete answer came back
        self.unexpected: list[str] = []
        self.stop = False

    async def one(self, http: aiohttp.ClientSession) -> None:
        n = next(self.ids)
        rid = f"{self.run}-{n:05d}"
        stream = n % 2 == 0
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": TOKENS, "stream": stream}
        headers = {**self.headers, "x-request-id": rid}
        try:
            async with http.post(self.url + "/v1/completions", json=body, headers=headers) as r:
                data = await r.read()
                if r.status != 200:
                    self.unexpected.append(f"{rid}: {r.status} {data[:200]!r}")
                    return
                assert r.headers["x-request-id"] == rid
                if stream:
                    ok = data.endswith(DONE) and b'"error"' not in data
                    ok = ok and data.count(b"tok ") == TOKENS
                else:
                    ok = orjson.loads(data)["usage"]["completion_tokens"] == TOKENS
                (self.complete if ok else self.cut).add(rid)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            self.cut.add(rid)

    async def drive(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def client() -> None:
                while not self.stop:
                    await self.one(http)

            await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def test_kill_9_mid_load_leaves_one_record_per_completed_request(
    tmp_path: Path, prefix: str, shared_store: str
) -> None:
    settings = GatewaySettings(
        store_url=shared_store,
        redis_prefix=prefix,
        wal_dir=tmp_path / "wal",
        # Flushes come only from full batches, so the kill can be timed to leave some records
        # committed and some only in the WAL.
        flush_interval_s=60,
        extra_env={"TIDEGATE_METERING__BATCH_SIZE": str(BATCH)},
    )
    started = time.monotonic()
    async with running_cluster(
        tmp_path,
        settings,
        gateways=1,
        tokens=TOKENS,
        token_delay_s=0.005,
        first_token_delay_s=0.01,
    ) as cluster:
        gateway = cluster.gateways[0]
        async with aiohttp.ClientSession() as http:
            tenant_id, key = await AdminClient(http, gateway.url).tenant_with_key(
                "steady",
                {
                    "limits": {"requests_per_minute": 1_000_000, "tokens_per_minute": 10**8},
                    "budgets": {"daily_tokens": 10**9},
                },
            )
        before = Load(gateway.url, key, "before")
        driving = asyncio.create_task(before.drive())
        try:
            deadline = time.monotonic() + 20
            # A full batch is flushed soon after it fills (with the few records that arrive
            # meanwhile): a kill 40-80 records past one leaves dozens only in the WAL.
            while len(before.complete) < KILL_AFTER or not 40 <= len(before.complete) % BATCH <= 80:
                assert time.monotonic() < deadline, f"too slow: {len(before.complete)} done"
                assert not driving.done(), driving
                await asyncio.sleep(0.005)
            gateway.kill()  # mid-load: requests are in flight
            killed_at = len(before.complete)
        finally:
            before.stop = True
            await asyncio.wait_for(driving, timeout=15)
        assert before.unexpected == []
        committed = await stored_ids(shared_store, tenant_id)
        only_in_wal = before.complete - committed
        assert len(only_in_wal) >= 10, "the kill left too little to replay"
        assert committed <= before.complete

        gateway.start()  # same home, WAL directory and store: replays the dead process's WAL
        await gateway.wait_ready("/readyz")
        after = Load(gateway.url, key, "after")  # it serves again
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(after.one(http) for _ in range(20)))
        assert after.unexpected == [] and len(after.complete) == 20
    # Stopped cleanly: everything it metered is in the store.
    assert not any((tmp_path / "wal").glob("*.wal")), "the WAL was not replayed and emptied"

    rows, total = await stored_rows(shared_store, tenant_id)
    ids = [row[0] for row in rows]
    by_id = {row[0]: row for row in rows}
    complete = before.complete | after.complete
    missing = sorted(complete - by_id.keys())
    cut_recorded = before.cut & by_id.keys()
    print(
        f"{len(before.complete)} complete before the kill (killed at {killed_at}; "
        f"{len(committed)} committed, {len(only_in_wal)} only in the WAL), "
        f"{len(before.cut)} cut by it, {len(after.complete)} after the restart; "
        f"{len(rows)} records for the tenant ({total} in all), {len(missing)} complete ones "
        f"missing, {len(cut_recorded)} cut ones recorded; {time.monotonic() - started:.1f} s"
    )
    assert len(ids) == len(set(ids)), "duplicate request ids"
    assert missing == [], f"{len(missing)} fully received requests have no record: {missing[:5]}"
    for rid in complete:
        _, status, prompt, completion = by_id[rid]
        assert (status, prompt, completion) == (200, len(PROMPT), TOKENS), by_id[rid]
    # Nothing but what the clients sent (and no request recorded under two ids).
    assert by_id.keys() <= complete | before.cut


async def stored_rows(store_url: str, tenant_id: str) -> tuple[list[Row[Any]], int]:
    """(client request id, status, prompt tokens, completion tokens) of the tenant's records,
    and the number of records in the store."""
    engine = create_engine(store_url)
    try:
        async with create_sessionmaker(engine)() as session:
            u = UsageRecord
            statement = select(u.client_request_id, u.status, u.prompt_tokens, u.completion_tokens)
            rows = (await session.execute(statement.where(u.tenant_id == tenant_id))).all()
            total = await session.scalar(select(func.count()).select_from(u))
    finally:
        await engine.dispose()
    return list(rows), int(total or 0)


async def stored_ids(store_url: str, tenant_id: str) -> set[str]:
    rows, _ = await stored_rows(store_url, tenant_id)
    return {row[0] for row in rows}
