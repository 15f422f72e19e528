"""Batch durability with real `tidegate up` processes: a gateway dies (``os._exit(137)``, like
kill -9) at injected points of a line's life and is restarted without the fault; and two
gateways share one store and run one batch together.

After every trial: each custom_id is in exactly one of the output and error files (zero lost,
zero duplicated), the request counts add up, and the usage metered for the batch equals what
the fake upstream served (one record per served answer, with its tokens). The runner executes
one line at a time in the crash trials, so "what the upstream served" is exact: the line that
was in flight when the process died is either served and metered, or neither.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from openai import AsyncOpenAI
from sqlalchemy import select

from tests.support.gateway import ADMIN_KEY
from tests.support.processes import (
    AdminClient,
    GatewaySettings,
    Process,
    gateway_process,
    shared_store_url,
)
from tidegate.store import create_engine, create_sessionmaker
from tidegate.store.models import UsageRecord
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

MODEL = "fake-model"
TOKENS = 3
LINES = 12
TRIALS = [
    ("after_claim", 2),
    ("after_upstream", 5),
    ("before_commit", 9),
    ("during_output", 1),
]
"""(crash point, at its Nth occurrence): every point once, early and late in the batch."""
_STOPPED = (0, -15)  # uvicorn re-raises SIGTERM once it has shut down cleanly


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return shared_store_url(request, tmp_path)


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream(model=MODEL, behaviour=FakeBehaviour(tokens=TOKENS))
    await upstream.start()
    yield upstream
    await upstream.stop()


def settings(tmp_path: Path, store: str, concurrency: int, lease_s: float = 1.0) -> GatewaySettings:
    """``lease_s``: short in the crash trials, so a dead process's lines come back quickly."""
    env = {
        "TIDEGATE_BATCH__FILES_DIR": str(tmp_path / "files"),  # shared, like S3 would be
        "TIDEGATE_BATCH__LEASE_S": str(lease_s),
        "TIDEGATE_BATCH__POLL_INTERVAL_S": "0.05",
        "TIDEGATE_BATCH__CONCURRENCY_PER_BATCH": str(concurrency),
    }
    return GatewaySettings(
        store_url=store,
        redis_prefix="unused",
        wal_dir=tmp_path / "wal",
        limits_backend="memory",
        extra_env=env,
    )


def line(custom_id: str) -> bytes:
    body = {"model": MODEL, "prompt": f"say {custom_id}", "max_tokens": TOKENS}
    return orjson.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/completions", "body": body}
    )


async def submit(gateway: Process, key: str, ids: list[str]) -> str:
    api = AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=2)
    data = b"\n".join(line(i) for i in ids) + b"\n"
    uploaded = await api.files.create(file=("in.jsonl", data), purpose="batch")
    batch = await api.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h"
    )
    return batch.id


async def wait_done(gateway: Process, key: str, batch_id: str, timeout_s: float = 30) -> Any:
    api = AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=2)
    deadline = time.monotonic() + timeout_s
    while True:
        batch = await api.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"{batch_id} still {batch.status}"
        await asyncio.sleep(0.05)


async def check_results(gateway: Process, key: str, batch: Any, ids: list[str]) -> None:
    api = AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=2)
    assert batch.status == "completed", batch
    assert batch.error_file_id is None
    content = (await api.files.content(batch.output_file_id)).content
    output = [orjson.loads(raw) for raw in content.splitlines()]
    assert sorted(o["custom_id"] for o in output) == sorted(ids), "lost or duplicated lines"
    assert all(o["response"]["status_code"] == 200 for o in output)
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (len(ids), len(ids), 0)


async def metered(store: str, batch_id: str) -> list[tuple[str, int, int]]:
    engine = create_engine(store)
    try:
        async with create_sessionmaker(engine)() as session:
            u = UsageRecord
            rows = await session.execute(
                select(u.request_id, u.status, u.completion_tokens).where(
                    u.request_id.like(f"batch_req_{batch_id}_%")
                )
            )
            return [(r[0], r[1], r[2]) for r in rows]
    finally:
        await engine.dispose()


async def wait_exit(process: Process, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    assert process.popen is not None
    while process.popen.poll() is None:
        assert time.monotonic() < deadline, f"{process.name} did not reach its crash point"
        await asyncio.sleep(0.05)
    return process.popen.returncode


async def test_crash_at_every_point_loses_and_duplicates_nothing(
    tmp_path: Path, store: str, fake: FakeUpstream
) -> None:
    started = time.monotonic()
    root = f"http://{fake.host}:{fake.port}"
    gateway = gateway_process(tmp_path, 0, root, settings(tmp_path, store, 1))
    clean_env = dict(gateway.env)
    served_before = 0
    batches: list[tuple[str, int]] = []
    try:
        gateway.start()
        await gateway.wait_ready("/readyz")
        async with aiohttp.ClientSession() as session:
            _, key = await AdminClient(session, gateway.url).tenant_with_key("crashy", {})
        for n, (point, after) in enumerate(TRIALS):
            ids = [f"t{n}-{i}" for i in range(LINES)]
            gateway.kill()  # idle: its usage is in the WAL, which the next start replays
            gateway.env = {
                **clean_env,
                "TIDEGATE_BATCH__CRASH_POINT": point,
                "TIDEGATE_BATCH__CRASH_AFTER": str(after),
            }
            gateway.start()
            await gateway.wait_ready("/readyz")
            batch_id = await submit(gateway, key, ids)
            assert await wait_exit(gateway) == 137, gateway.log_tail()
            gateway.env = clean_env
            gateway.start()
            await gateway.wait_ready("/readyz")
            batch = await wait_done(gateway, key, batch_id)
            await check_results(gateway, key, batch, ids)
            batches.append((batch_id, fake.completed - served_before))
            served_before = fake.completed
    except BaseException:
        await gateway.stop(timeout_s=3)
        print(gateway.log_tail(8000))
        raise
    assert await gateway.stop() in _STOPPED  # a clean stop flushes every usage record
    for (point, after), (batch_id, served) in zip(TRIALS, batches, strict=True):
        rows = await metered(store, batch_id)
        ok = [r for r in rows if r[1] == 200]
        assert len({r[0] for r in rows}) == len(rows), "a request id metered twice"
        assert len(ok) == served, (point, after, len(ok), served)
        assert sum(r[2] for r in ok) == served * TOKENS
        assert served >= LINES
    redone = sum(served for _, served in batches) - LINES * len(TRIALS)
    print(
        f"{len(TRIALS)} crash trials, {redone} lines executed twice, "
        f"{time.monotonic() - started:.1f} s"
    )


async def test_two_gateways_share_one_batch(tmp_path: Path, store: str, fake: FakeUpstream) -> None:
    fake.behaviour.first_token_delay_s = 0.01
    root = f"http://{fake.host}:{fake.port}"
    # Leases long enough that no line outlives its lease on a loaded box: then every line runs
    # exactly once and the upstream's count is exact.
    config = settings(tmp_path, store, 4, lease_s=10.0)
    gateways = [gateway_process(tmp_path, i, root, config) for i in range(2)]
    try:
        for gateway in gateways:
            gateway.start()
        await asyncio.gather(*(g.wait_ready("/readyz") for g in gateways))
        async with aiohttp.ClientSession() as session:
            _, key = await AdminClient(session, gateways[0].url).tenant_with_key("shared", {})
        ids = [f"s-{i}" for i in range(150)]
        batch_id = await submit(gateways[0], key, ids)
        batch = await wait_done(gateways[1], key, batch_id, timeout_s=60)
        await check_results(gateways[1], key, batch, ids)
        served = []
        async with httpx.AsyncClient() as http:
            for gateway in gateways:
                text = (
                    await http.get(
                        gateway.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
                    )
                ).text
                served.append(
                    sum(
                        float(row.rsplit(" ", 1)[1])
                        for row in text.splitlines()
                        if row.startswith("tidegate_requests_total{") and 'outcome="ok"' in row
                    )
                )
        assert all(count > 0 for count in served), f"one gateway ran every line: {served}"
    except BaseException:
        await asyncio.gather(*(g.stop(timeout_s=3) for g in gateways))
        for gateway in gateways:
            print(gateway.log_tail())
        raise
    for gateway in gateways:
        assert await gateway.stop() in _STOPPED
    rows = await metered(store, batch_id)
    assert len([r for r in rows if r[1] == 200]) == fake.completed == len(ids)
