"""Three `tidegate up` processes on one Redis when something dies: a gateway killed with -9
gives its tenants' concurrency slots back within seconds, and a Redis restarted mid-run (no
persistence: every counter gone) never hands out a fresh budget.

Requests use token-id prompts on /v1/completions, so the gateway counts the prompt exactly and
the fake upstream reports 5 prompt tokens plus max_tokens completion tokens: 20 per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from benchmarks.budget_race import metered
from tests.support.own_servers import own_redis
from tests.support.processes import (
    AdminClient,
    Cluster,
    GatewaySettings,
    Process,
    redis_prefix,
    running_cluster,
)

PROMPT = [11, 12, 13, 14, 15]
MAX_TOKENS = 15
PER_REQUEST = len(PROMPT) + MAX_TOKENS
FREED_WITHIN_S = 10.0


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with redis_prefix("recovery") as name:
        yield name


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'store' / 'tidegate.db'}"


async def post(
    http: aiohttp.ClientSession, gateway: Process, key: str, **body: Any
) -> tuple[int, str]:
    """One non-streamed completion: its status and error code ('' for a 200)."""
    payload = {"model": "fake-model", "prompt": PROMPT, "max_tokens": MAX_TOKENS, **body}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(gateway.url + "/v1/completions", json=payload, headers=headers) as r:
        data = await r.json()
        return r.status, "" if r.status == 200 else str(data["error"]["code"])


async def test_a_gateway_killed_holding_a_tenants_slots_frees_them_within_seconds(
    tmp_path: Path, prefix: str
) -> None:
    settings = GatewaySettings(
        store_url=sqlite_url(tmp_path), redis_prefix=prefix, wal_dir=tmp_path / "wal"
    )
    # A streamed answer of 400 tokens takes 40 s: the three held requests outlive the test.
    async with running_cluster(
        tmp_path, settings, gateways=3, tokens=400, token_delay_s=0.1
    ) as cluster:
        doomed, survivors = cluster.gateways[0], cluster.gateways[1:]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            _, key = await AdminClient(http, doomed.url).tenant_with_key(
                "three-slots", {"limits": {"concurrent_requests": 3}}
            )
            held: list[aiohttp.ClientResponse] = []
            for _ in range(3):
                response = await http.post(
                    doomed.url + "/v1/completions",
                    json={"model": "fake-model", "prompt": PROMPT, "max_tokens": 400,
                          "stream": True},
                    headers={"Authorization": f"Bearer {key}"},
                )  # fmt: skip
                assert response.status == 200, await response.text()
                await response.content.readline()  # the first event: it is being served
                held.append(response)
            for gateway in survivors:
                assert await post(http, gateway, key, max_tokens=1) == (429, "concurrency_limit")

            doomed.kill()
            killed_at = time.monotonic()
            for response in held:
                response.close()
            answers: list[tuple[int, str]] = []
            served_after: float | None = None
            for gateway in itertools.cycle(survivors):
                answers.append(await post(http, gateway, key, max_tokens=1))
                if answers[-1][0] == 200:
                    served_after = time.monotonic() - killed_at
                    break
                if time.monotonic() - killed_at > FREED_WITHIN_S + 5:
                    break
                await asyncio.sleep(0.2)
            assert served_after is not None and served_after <= FREED_WITHIN_S, (
                f"not served {time.monotonic() - killed_at:.1f} s after the kill: {answers[-3:]}"
            )
            assert {a for a in answers if a[0] != 200} <= {(429, "concurrency_limit")}
            # All three slots are back, not just one: three 1 s streams at once (tried again
            # while the probe above may not have been settled yet: it answers before it settles).
            deadline = time.monotonic() + 5
            while True:
                at_once = await asyncio.gather(
                    *(streamed(http, survivors[i % 2], key, max_tokens=10) for i in range(3))
                )
                if at_once == [200] * 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            assert at_once == [200] * 3


async def streamed(
    http: aiohttp.ClientSession, gateway: Process, key: str, *, max_tokens: int
) -> int:
    """One streamed completion, read to its end: its status."""
    payload = {"model": "fake-model", "prompt": PROMPT, "max_tokens": max_tokens, "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(gateway.url + "/v1/completions", json=payload, headers=headers) as r:
        await r.read()
        return r.status


@dataclass
class Tally:
    ok: int = 0
    codes: list[str] = field(default_factory=list)
    refused_by: set[str] = field(default_factory=set)
    """Gateways that answered budget_exceeded."""


async def flood(
    http: aiohttp.ClientSession,
    cluster: Cluster,
    key: str,
    tally: Tally,
    *,
    stop: asyncio.Event,
    workers: int,
) -> None:
    """Closed-loop streamed requests over all gateways until every gateway refused with
    budget_exceeded, or ``stop``."""
    gateways = itertools.cycle(cluster.gateways)
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": "fake-model",
        "prompt": PROMPT,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async def worker() -> None:
        while not stop.is_set() and len(tally.refused_by) < len(cluster.gateways):
            gateway = next(gateways)
            try:
                url = gateway.url + "/v1/completions"
                async with http.post(url, json=body, headers=headers) as r:
                    raw = await r.read()
            except aiohttp.ClientError:
                continue
            if r.status == 200:
                assert b"[DONE]" in raw
                tally.ok += 1
                continue
            code = str(orjson.loads(raw)["error"]["code"])
            tally.codes.append(code)
            if code == "budget_exceeded":
                tally.refused_by.add(gateway.name)
            else:
                await asyncio.sleep(0.05)  # limiter_unavailable while Redis is down

    await asyncio.gather(*(worker() for _ in range(workers)))


async def test_a_redis_restarted_mid_run_never_hands_out_a_fresh_budget(tmp_path: Path) -> None:
    spent_budget, busy_budget = 10 * PER_REQUEST, 100 * PER_REQUEST
    with own_redis(tmp_path / "redis") as redis:
        settings = GatewaySettings(
            store_url=sqlite_url(tmp_path),
            redis_prefix="tidegate-recovery",
            wal_dir=tmp_path / "wal",
            extra_env={"TIDEGATE_LIMITS__REDIS_URL": redis.url},
        )
        async with running_cluster(
            tmp_path, settings, gateways=3, tokens=MAX_TOKENS, token_delay_s=0.02
        ) as cluster:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                admin = AdminClient(http, cluster.gateways[0].url)
                spent_id, spent_key = await admin.tenant_with_key(
                    "spent", {"budgets": {"daily_tokens": spent_budget}}
                )
                busy_id, busy_key = await admin.tenant_with_key(
                    "busy", {"budgets": {"daily_tokens": busy_budget}}
                )
                # One tenant spends its whole budget before the restart.
                spent = [await post(http, cluster.gateways[i % 3], spent_key) for i in range(12)]
                assert spent.count((200, "")) == 10 and spent[10:] == [(429, "budget_exceeded")] * 2

                # The other is mid-flood when Redis restarts, with requests in flight.
                tally, stop = Tally(), asyncio.Event()
                busy = asyncio.create_task(
                    flood(http, cluster, busy_key, tally, stop=stop, workers=6)
                )
                try:
                    deadline = time.monotonic() + 20
                    while tally.ok < 30 and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    assert tally.ok >= 30, tally
                    redis.stop()
                    await asyncio.sleep(0.5)
                    redis.start()  # empty: every counter is gone

                    # The spent tenant is refused on every gateway once Redis answers again.
                    for gateway in cluster.gateways:
                        answers = []
                        deadline = time.monotonic() + 15
                        while time.monotonic() < deadline:
                            answers.append(await post(http, gateway, spent_key))
                            if answers[-1] != (503, "limiter_unavailable"):
                                break
                            await asyncio.sleep(0.2)
                        assert answers[-1] == (429, "budget_exceeded"), (gateway.name, answers)
                        assert (200, "") not in answers

                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(busy), timeout=30)
                finally:
                    stop.set()
                    await busy
                assert tally.refused_by == {g.name for g in cluster.gateways}, tally
                assert set(tally.codes) <= {"budget_exceeded", "limiter_unavailable"}, tally
    # Every gateway stopped cleanly: every usage record is in the store.
    _, spent_tokens = await metered(settings.store_url, spent_id)
    _, busy_tokens = await metered(settings.store_url, busy_id)
    assert spent_tokens == spent_budget
    assert busy_tokens <= busy_budget, f"overspent: {busy_tokens} of {busy_budget}"
    assert tally.ok * PER_REQUEST <= busy_budget
