"""The kinds table drives the limit stores: a table with kinds the gateway does not have (a
requests-per-hour and a tokens-per-hour bucket) is enforced by the in-process store and by the
Redis scripts generated from it, with its own refusals, headers, settings fields and CLI
options, and a lost tokens-per-hour counter in Redis is asked for by its own bit."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
import typer
from typer.testing import CliRunner

from tests.support.limit_stores import REDIS_URL, STORE_KINDS, StoreKind, redis_reachable
from tidegate.commands.policy_options import LimitValues, limit_options, limits_patch
from tidegate.errors import LimitExceededError
from tidegate.pipeline.limits import Limiter, MemoryLimitStore, RedisLimitStore
from tidegate.pipeline.limits.layout import Layout
from tidegate.pipeline.pricing import PriceTable
from tidegate.tenancy.limit_kinds import KINDS
from tidegate.tenancy.policy import section_model

_TPM = next(kind for kind in KINDS if kind.name == "tpm")
RPH = dataclasses.replace(
    next(kind for kind in KINDS if kind.name == "rpm"),
    name="rph",
    field="requests_per_hour",
    period="hour",
    what="requests per hour",
    option="--rph",
    help="Requests per hour (0: none).",
    headers=(b"x-test-limit-rph", b"x-test-remaining-rph", b"x-test-reset-rph"),
)
TPH = dataclasses.replace(
    _TPM,
    name="tph",
    field="tokens_per_hour",
    period="hour",
    what="tokens per hour",
    option="--tph",
    help="Tokens per hour (0: none).",
    headers=None,
)
TABLE = (*KINDS[:3], RPH, TPH, *KINDS[3:])
LAYOUT = Layout(TABLE)
Limits = section_model("RateLimits", "limits", TABLE)
Budgets = section_model("Budgets", "budgets", TABLE)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def limiter_on(kind: StoreKind, clock: Clock) -> AsyncIterator[Limiter]:
    prices = PriceTable(prices={})
    if kind == "memory":
        store: Any = MemoryLimitStore(clock=clock, layout=LAYOUT)
        limiter = Limiter(store=store, prices=prices, clock=clock, layout=LAYOUT)
        yield limiter
        await limiter.aclose()
        return
    await redis_reachable()
    prefix = f"tidegate-test-kinds-{uuid.uuid4().hex[:12]}"
    store = RedisLimitStore(
        url=REDIS_URL, timeout_s=5.0, key_prefix=prefix, clock=clock, layout=LAYOUT
    )
    limiter = Limiter(store=store, prices=prices, clock=clock, layout=LAYOUT)
    try:
        yield limiter
    finally:
        await limiter.aclose()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def admit(
    limiter: Limiter, *, tenant: dict[str, int], key: dict[str, int], prompt: int = 10
) -> Any:
    return await limiter.admit(
        tenant_id="t1",
        key_id="k1",
        tenant_limits=Limits(**tenant),  # type: ignore[arg-type]
        key_limits=Limits(**key),  # type: ignore[arg-type]
        budgets=Budgets(),  # type: ignore[arg-type]
        model="m",
        prompt_tokens=prompt,
        max_tokens=10,
        failure_mode="closed",
    )


def test_the_layout_places_the_new_kinds_after_the_old_rate_kinds() -> None:
    assert [kind.name for kind in LAYOUT.rates] == ["rpm", "tpm", "conc", "rph", "tph"]
    assert LAYOUT.check_of("rph", "API key") == 5 + 3
    assert LAYOUT.periods == ("day", "month")
    # Lost-counter bits: the tokens buckets of the tenant, then the key's, then the periods.
    assert [c.label for c in LAYOUT.rebuilt] == [
        "tenant_tpm",
        "tenant_tph",
        "key_tpm",
        "key_tph",
        "day",
        "month",
    ]


@pytest.mark.parametrize("store", STORE_KINDS)
async def test_a_requests_per_hour_bucket_is_enforced_by_both_stores(store: StoreKind) -> None:
    clock = Clock()
    async with limiter_on(store, clock) as limiter:
        tenant = {"requests_per_hour": 2, "requests_per_minute": 1000}
        for _ in range(2):
            admitted = await admit(limiter, tenant=tenant, key={})
            await admitted.settle(prompt_tokens=10, completion_tokens=1)
        assert (b"x-test-limit-rph", b"2") in admitted.headers
        assert (b"x-test-remaining-rph", b"0") in admitted.headers
        assert (b"x-ratelimit-limit-requests", b"1000") in admitted.headers
        with pytest.raises(LimitExceededError) as refused:
            await admit(limiter, tenant=tenant, key={})
        error = refused.value
        assert error.code == "rate_limit_exceeded"
        assert "the tenant's limit is 2 requests per hour (limits.requests_per_hour)" in str(error)
        assert error.retry_after_s == pytest.approx(1800, abs=1)  # one request per 30 min
        clock.now += 1801
        admitted = await admit(limiter, tenant=tenant, key={})
        await admitted.settle(prompt_tokens=10, completion_tokens=1)


@pytest.mark.parametrize("store", STORE_KINDS)
async def test_a_tokens_per_hour_bucket_of_a_key_reserves_and_refunds(store: StoreKind) -> None:
    clock = Clock()
    async with limiter_on(store, clock) as limiter:
        key = {"tokens_per_hour": 50}
        first = await admit(limiter, tenant={}, key=key, prompt=20)  # reserves 20 + 10
        with pytest.raises(LimitExceededError) as refused:
            await admit(limiter, tenant={}, key=key, prompt=20)
        assert "the API key's limit is 50 tokens per hour (limits.tokens_per_hour)" in str(
            refused.value
        )
        await first.settle(prompt_tokens=20, completion_tokens=0)  # 10 come back: 30 left
        second = await admit(limiter, tenant={}, key=key, prompt=20)
        await second.settle(prompt_tokens=20, completion_tokens=10)
        with pytest.raises(LimitExceededError) as too_large:
            await admit(limiter, tenant={}, key=key, prompt=100)
        assert too_large.value.retry_after_s is None  # more than the whole bucket


async def test_the_generated_admit_script_asks_for_a_lost_tokens_per_hour_counter() -> None:
    await redis_reachable()
    clock = Clock()
    async with limiter_on("redis", clock) as limiter:
        store: Any = limiter._store  # noqa: SLF001  # the script's reply, not the limiter's
        demand_args = await admit(limiter, tenant={}, key={"tokens_per_hour": 500})
        await demand_args.settle(prompt_tokens=10, completion_tokens=10)
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = store._keys_of("t1", "k1", limiter._periods.periods(clock()))  # noqa: SLF001
            assert keys[5 + 4].endswith(":k:k1:tph")
            generation = await client.hget(keys[5 + 4], "g")
            await client.delete(keys[5 + 4])  # lost: Redis restarted without it
            rebuilt_before = dict(store.rebuilt)
            again = await admit(limiter, tenant={}, key={"tokens_per_hour": 500})
            await again.settle(prompt_tokens=10, completion_tokens=10)
            assert store.rebuilt["key_tph"] == rebuilt_before["key_tph"] + 1
            assert await client.hget(keys[5 + 4], "g") not in (None, generation)
        finally:
            await client.aclose()


def test_the_cli_options_and_the_settings_fields_come_from_the_table() -> None:
    app = typer.Typer()
    seen: list[LimitValues] = []

    @app.command()
    @limit_options(budgets=True, kinds=TABLE)
    def set_limits(name: str, limits: LimitValues) -> None:
        seen.append(limits)

    result = CliRunner().invoke(app, ["acme", "--rph", "5", "--tph", "0", "--daily-cost", "2.5"])
    assert result.exit_code == 0, result.output
    patch = limits_patch(seen[0], TABLE)
    assert patch == {
        "limits": {"requests_per_hour": 5, "tokens_per_hour": None},
        "budgets": {"daily_cost_usd": 2.5},
    }
    assert Limits.model_validate(patch["limits"]).requests_per_hour == 5  # type: ignore[attr-defined]
    assert math.isclose(Budgets.model_validate(patch["budgets"]).daily_cost_usd, 2.5)  # type: ignore[attr-defined]
    help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "Requests per hour (0: none)." in help_text
