"""The Redis limit store when a gateway dies or Redis loses its data: concurrency leases are
renewed while held and reclaimed soon after their holder stops; a budget or tokens-per-minute
counter missing in Redis is rebuilt from the usage records, never read as zero.

Real Redis (the local one, a key prefix per test) and a real store (SQLite and PostgreSQL) with
usage records written by the meter. Deleting a tenant's keys stands in for a Redis restart.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.usage_events import usage_event
from tidegate.errors import LimitExceededError
from tidegate.metering import UsageMeter, UsageQueries
from tidegate.pipeline.limits import Admission, Limiter, RedisLimitStore, lua
from tidegate.pipeline.limits.metrics import RedisStoreCollector
from tidegate.pipeline.limits.periods import day_period
from tidegate.pipeline.pricing import PriceTable
from tidegate.tenancy.policy import Budgets, RateLimits

REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
Sessions = async_sessionmaker[AsyncSession]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """Limiters sharing one key prefix, as gateway replicas share one Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.limiters: list[Limiter] = []

    def limiter(
        self,
        *,
        usage: UsageQueries | None = None,
        clock: Clock | None = None,
        lease_s: float = 6.0,
        renew_every_s: float = 3600.0,
    ) -> Limiter:
        store = RedisLimitStore(
            url=REDIS_URL,
            timeout_s=2.0,
            key_prefix=self.prefix,
            lease_s=lease_s,
            renew_every_s=renew_every_s,
            cooldown_s=0.0,
            clock=clock,
            usage=usage,
        )
        limiter = Limiter(store=store, prices=PriceTable(prices={}), clock=clock or time.time)
        self.limiters.append(limiter)
        return limiter

    async def lose_everything(self) -> None:
        """What a Redis restart without persistence does to this test's keys."""
        keys = [key async for key in self.client.scan_iter(match=f"{self.prefix}:*")]
        if keys:
            await self.client.delete(*keys)

    def day_key(self, tenant: str = "t1") -> str:
        return f"{self.prefix}:{{{tenant}}}:b:{day_period(time.time()).key}"


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as error:
        if os.environ.get("TIDEGATE_TEST_REQUIRE_REDIS"):
            raise
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {error}")
    made = Rig(client, f"tidegate-test-recovery-{uuid.uuid4().hex[:12]}")
    yield made
    for limiter in made.limiters:
        await limiter.aclose()
    await made.lose_everything()
    await client.aclose()


async def usage_of(sessions: Sessions, tmp_path: Path, **records: dict[str, Any]) -> UsageQueries:
    """The store holding one usage record per keyword (its fields), written by the meter."""
    meter = UsageMeter(
        sessions=sessions, wal_dir=tmp_path / "wal", flush_interval_s=60, batch_size=100
    )
    await meter.start()
    for request_id, fields in records.items():
        values: dict[str, Any] = {"tenant_id": "t1", "key_id": "k1", "created_at": now_utc()}
        values.update(fields)
        meter.record(usage_event(request_id, **values))
    await meter.stop()
    return UsageQueries(sessions=sessions)


def now_utc() -> datetime:
    return datetime.now(UTC)


async def admit(
    limiter: Limiter,
    *,
    tenant: RateLimits | None = None,
    key: RateLimits | None = None,
    budgets: Budgets | None = None,
    prompt: int = 10,
    max_tokens: int = 10,
) -> Admission:
    return await limiter.admit(
        tenant_id="t1",
        key_id="k1",
        tenant_limits=tenant or RateLimits(),
        key_limits=key or RateLimits(),
        budgets=budgets or Budgets(),
        model="m",
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        failure_mode="closed",
    )


async def refused(call: Callable[[], Any]) -> LimitExceededError:
    with pytest.raises(LimitExceededError) as caught:
        await call()
    return caught.value


# --- leases ---------------------------------------------------------------------------------


async def test_a_lease_is_kept_while_renewed_and_reclaimed_once_its_holder_stops(
    rig: Rig,
) -> None:
    clock = Clock(1_900_000_000.0)
    dying, survivor = rig.limiter(clock=clock), rig.limiter(clock=clock)
    one = RateLimits(concurrent_requests=1)
    held = await admit(dying, tenant=one)
    registry = CollectorRegistry()
    registry.register(RedisStoreCollector(dying._store))  # type: ignore[arg-type]
    assert registry.get_sample_value("tidegate_limiter_leases_held") == 1
    clock.now += 4
    assert await dying._store.renew_leases() == 1  # type: ignore[attr-defined]
    clock.now += 4  # 8 s after the admission, 4 after the renewal: still held
    error = await refused(lambda: admit(survivor, tenant=one))
    assert error.code == "concurrency_limit"
    clock.now += 2.5  # the holder stopped renewing: its lease ran out
    taken = await admit(survivor, tenant=one)
    # The dead holder's renewal and settle touch only its own lease, which is gone.
    assert await dying._store.renew_leases() == 1  # type: ignore[attr-defined]
    await held.settle(prompt_tokens=10, completion_tokens=10)
    conc = f"{rig.prefix}:{{t1}}:conc"
    assert await rig.client.zcard(conc) == 1
    await refused(lambda: admit(dying, tenant=one))
    await taken.settle(prompt_tokens=10, completion_tokens=10)
    assert await rig.client.zcard(conc) == 0


async def test_the_background_renewal_keeps_leases_until_the_gateway_stops(rig: Rig) -> None:
    holder = rig.limiter(lease_s=1.0, renew_every_s=0.2)
    other = rig.limiter(lease_s=1.0, renew_every_s=0.2)
    limits = RateLimits(concurrent_requests=1)
    await admit(holder, tenant=limits, key=limits)  # never settled, as in a kill -9
    await asyncio.sleep(1.6)  # longer than a lease: only the renewals kept it
    await refused(lambda: admit(other, tenant=limits, key=limits))
    await holder.aclose()  # the renewals stop
    await asyncio.sleep(1.3)
    admitted = await admit(other, tenant=limits, key=limits)
    await admitted.settle(prompt_tokens=10, completion_tokens=10)


# --- lost counters --------------------------------------------------------------------------


async def test_the_admit_script_says_which_counters_are_missing(rig: Rig) -> None:
    t = f"{rig.prefix}:{{t1}}"
    keys = [f"{t}:rpm", f"{t}:tpm", f"{t}:conc", f"{t}:k:k1:rpm", f"{t}:k:k1:tpm"]
    keys += [f"{t}:k:k1:conc", f"{t}:b:d1", f"{t}:b:m1"]
    # tenant tpm 600 and a month token budget; the key's tpm and the day's budget: none
    args = [0, 600, 0, 0, 0, 0, 0, 0, 1000, 0, 10, 10, 0, "0.0", "2e9", "2e9", "id", "6", ""]
    args += [1, 2**40]
    reply = await rig.client.eval(lua.ADMIT, len(keys), *keys, *args)
    assert reply[:2] == [2, 1 | 8]
    assert await rig.client.exists(*keys) == 0  # a refusal to guess reserves nothing
    seed = [1 | 8, "gen1", "", 600, 100, 0, 0, 0, 0, 0, 700, 7, int(2e9)]
    seeded = [keys[1], keys[4], keys[6], keys[7]]
    assert await rig.client.eval(lua.SEED, 4, *seeded, *seed) == 1 | 8
    # A second gateway's rebuild, racing the first, changes nothing.
    again = [1 | 8, "gen2", "", 600, 0, 0, 0, 0, 0, 0, 0, 0, int(2e9)]
    assert await rig.client.eval(lua.SEED, 4, *seeded, *again) == 0
    assert await rig.client.hget(keys[7], "t") == b"700"
    assert await rig.client.hget(keys[1], "g") == b"gen1"
    reply = await rig.client.eval(lua.ADMIT, len(keys), *keys, *args)
    assert reply[0] == 1
    assert abs(float(reply[4]) - (600 - 100 - 20)) < 1  # the rebuilt level, less this request
    assert reply[9:] == [b"gen1", b"", b"", b"gen1"]


async def test_a_lost_budget_is_rebuilt_from_the_usage_records(
    rig: Rig, sessions: Sessions, tmp_path: Path
) -> None:
    usage = await usage_of(sessions, tmp_path, r1={"prompt_tokens": 600, "completion_tokens": 300})
    budgets = Budgets(daily_tokens=1000)
    limiter = rig.limiter(usage=usage)
    first = await admit(limiter, budgets=budgets, prompt=50, max_tokens=100)
    assert first.completion_allowance == 50  # 900 spent before: 50 + 50 fit
    await first.settle(prompt_tokens=50, completion_tokens=50)
    await usage_of(sessions, tmp_path, r2={"prompt_tokens": 50, "completion_tokens": 50})
    error = await refused(lambda: admit(limiter, budgets=budgets, prompt=1, max_tokens=1))
    assert error.code == "budget_exceeded"
    await rig.lose_everything()
    # A fresh gateway on the restarted Redis: the spend comes back from the records.
    fresh = rig.limiter(usage=usage)
    error = await refused(lambda: admit(fresh, budgets=budgets, prompt=1, max_tokens=1))
    assert error.code == "budget_exceeded"
    assert int(await rig.client.hget(rig.day_key(), "t") or 0) == 1000
    registry = CollectorRegistry()
    registry.register(RedisStoreCollector(fresh._store))  # type: ignore[arg-type]
    rebuilt = "tidegate_limiter_counters_rebuilt_total"
    assert registry.get_sample_value(rebuilt, {"counter": "day"}) == 1
    assert registry.get_sample_value(rebuilt, {"counter": "tenant_tpm"}) == 0


async def test_a_request_in_flight_across_a_rebuild_is_charged_its_real_usage(
    rig: Rig, sessions: Sessions, tmp_path: Path
) -> None:
    usage = await usage_of(sessions, tmp_path)
    budgets = Budgets(daily_tokens=1000)
    limiter = rig.limiter(usage=usage)
    before = await admit(limiter, budgets=budgets, prompt=10, max_tokens=10)
    await rig.lose_everything()
    after = await admit(limiter, budgets=budgets, prompt=10, max_tokens=10)  # rebuilt: 0 + 20
    await before.settle(prompt_tokens=10, completion_tokens=5)  # no refund: charged 15
    await after.settle(prompt_tokens=10, completion_tokens=5)  # refunds its own 5
    assert int(await rig.client.hget(rig.day_key(), "t") or 0) == 30


async def test_a_lost_tokens_per_minute_bucket_holds_the_last_minute(
    rig: Rig, sessions: Sessions, tmp_path: Path
) -> None:
    recent = now_utc() - timedelta(seconds=20)
    long_ago = now_utc() - timedelta(minutes=5)
    usage = await usage_of(
        sessions,
        tmp_path,
        # finished 19 s ago: counts; arrived 5 min ago, finished 10 s ago: counts too
        r1={"created_at": recent, "duration_ms": 1000, "prompt_tokens": 300,
            "completion_tokens": 0},
        r2={"created_at": long_ago, "duration_ms": 290_000, "prompt_tokens": 100,
            "completion_tokens": 0},
        # finished 4 minutes ago: the bucket has refilled since
        r3={"created_at": long_ago, "duration_ms": 60_000, "prompt_tokens": 5000,
            "completion_tokens": 0},
        r4={"created_at": recent, "key_id": "k2", "prompt_tokens": 50, "completion_tokens": 0},
    )  # fmt: skip
    tpm = RateLimits(tokens_per_minute=600)
    limiter = rig.limiter(usage=usage)
    # Tenant: 600 - 450 = 150 left; the key: 600 - 400 = 200 left.
    error = await refused(lambda: admit(limiter, tenant=tpm, key=tpm, prompt=100, max_tokens=60))
    assert error.code == "rate_limit_exceeded"
    admitted = await admit(limiter, tenant=tpm, key=tpm, prompt=100, max_tokens=40)
    await admitted.settle(prompt_tokens=100, completion_tokens=40)
    await refused(lambda: admit(limiter, tenant=tpm, key=tpm, prompt=100, max_tokens=40))
