"""The budget race of ``make bench-abuse``: many concurrent requests of one tenant through several
``tidegate up`` processes sharing Redis and PostgreSQL, and the tokens admitted (summed from the
usage store) against what the tenant's budget or rate allowed.

The upstream is a fake one of its own, with neither a tokenizer nor a context length configured
and no max_model_len on its model card: the case where a gateway knows least about what a
request will cost. Every variant gets a fresh tenant on
the same gateways; the PostgreSQL database and the Redis key prefix are the run's own and are
removed afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.abuse_batches import Gateway
from benchmarks.batch_procs import gateway_launch
from benchmarks.raw_http import send
from benchmarks.targets import Processes, fake_upstream_launch, free_port
from tidegate.store import create_engine, create_sessionmaker
from tidegate.store.models import UsageRecord

PROMPT = "Please say hello to the budget race benchmark."


@dataclass(frozen=True)
class Variant:
    name: str
    settings: dict[str, Any]
    max_tokens: int | None
    daily_tokens: int | None = None
    tokens_per_minute: int | None = None
    stream: bool = False

    def bound(self, elapsed_s: float) -> float:
        """The most tokens the tenant may be served in ``elapsed_s``."""
        return limit_bound(self.daily_tokens, self.tokens_per_minute, elapsed_s)


def limit_bound(daily_tokens: int | None, tokens_per_minute: int | None, elapsed_s: float) -> float:
    """The most tokens a tenant with these limits (None: not that one) may be served in
    ``elapsed_s``: the budget, and a full tpm bucket plus its refill meanwhile."""
    bounds = [] if daily_tokens is None else [float(daily_tokens)]
    if tokens_per_minute is not None:
        bounds.append(tokens_per_minute + tokens_per_minute * elapsed_s / 60)
    return min(bounds)


def variants(daily_tokens: int, tokens_per_minute: int, max_tokens: int) -> list[Variant]:
    budget = {"budgets": {"daily_tokens": daily_tokens}}
    rate = {"limits": {"tokens_per_minute": tokens_per_minute}}
    return [
        Variant(
            f"daily {daily_tokens:,}, max_tokens {max_tokens}",
            budget,
            max_tokens,
            daily_tokens=daily_tokens,
        ),
        Variant(f"daily {daily_tokens:,}, no max_tokens", budget, None, daily_tokens=daily_tokens),
        Variant(
            f"daily {daily_tokens:,}, no max_tokens, streamed",
            budget,
            None,
            daily_tokens=daily_tokens,
            stream=True,
        ),
        Variant(
            f"tpm {tokens_per_minute}, max_tokens {max_tokens}",
            rate,
            max_tokens,
            tokens_per_minute=tokens_per_minute,
        ),
        Variant(
            f"tpm {tokens_per_minute}, no max_tokens",
            rate,
            None,
            tokens_per_minute=tokens_per_minute,
        ),
    ]


@dataclass(frozen=True)
class RaceOptions:
    postgres_url: str
    redis_url: str
    gateways: int = 3
    requests: int = 200
    daily_tokens: int = 2_000
    tokens_per_minute: int = 500
    max_tokens: int = 12
    ready_timeout_s: float = 90.0


@asynccontextmanager
async def fresh_database(base_url: str) -> AsyncIterator[str]:
    """A database of its own next to ``base_url``'s, dropped on the way out."""
    name = f"tidegate_bench_abuse_{secrets.token_hex(6)}"
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await admin.dispose()


@asynccontextmanager
async def redis_prefix(url: str) -> AsyncIterator[str]:
    """A key prefix of its own; its keys are deleted on the way out."""
    client = aioredis.Redis.from_url(url)
    prefix = f"tidegate-bench-abuse-{secrets.token_hex(6)}"
    try:
        await cast(Awaitable[bool], client.ping())  # fail early when Redis is not there
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _gateway_config(
    options: RaceOptions, store_url: str, prefix: str, upstream: str, model: str
) -> dict[str, Any]:
    return {
        "server": {"access_log": False, "log_level": "warning"},
        "store": {"url": store_url},
        "limits": {
            "backend": "redis",
            "redis_url": options.redis_url,
            "key_prefix": prefix,
            "redis_timeout_s": 2.0,
        },
        "metering": {"flush_interval_s": 0.1},
        "batch": {"enabled": False},
        "upstreams": [{"url": upstream, "model": model}],
    }


async def run_race(
    options: RaceOptions,
    *,
    procs: Processes,
    workdir: Path,
    model: str,
    log: Any,
) -> dict[str, Any]:
    """Start the upstream and the gateways, race every variant, return the figures (JSON-ready)."""
    upstream_port = free_port()
    upstream = fake_upstream_launch(port=upstream_port, model=model, tokens=16, max_model_len=None)
    await asyncio.to_thread(procs.start, "race-upstream", upstream, 30)
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    async with (
        fresh_database(options.postgres_url) as store_url,
        redis_prefix(options.redis_url) as prefix,
    ):
        config = _gateway_config(options, store_url, prefix, upstream_url, model)
        gateways: list[tuple[int, str]] = []
        launches = []
        for index in range(options.gateways):
            home = workdir / f"race-gw{index}"
            home.mkdir()
            port = free_port()
            launch, admin_key = gateway_launch(home=home, port=port, config=config)
            launches.append((f"race-gateway-{index}", launch))
            gateways.append((port, admin_key))
        log(f"budget race: starting {options.gateways} gateways on PostgreSQL and Redis")
        await asyncio.gather(
            *(
                asyncio.to_thread(procs.start, name, launch, options.ready_timeout_s)
                for name, launch in launches
            )
        )
        results = []
        for variant in variants(
            options.daily_tokens, options.tokens_per_minute, options.max_tokens
        ):
            name = "race-" + secrets.token_hex(4)
            admin = Gateway(gateways[0][0], gateways[0][1])
            tenant_id, key = await create_tenant(admin, name, variant.settings)
            log(f"budget race: {variant.name}, {options.requests} requests")
            results.append(
                await _race(
                    variant, [p for p, _ in gateways], key, tenant_id, store_url, options, model
                )
            )
    return {
        "gateways": options.gateways,
        "requests": options.requests,
        "store": "postgresql",
        "limits": "redis",
        "upstream": "fake, 16 tokens per answer, no tokenizer, no context length",
        "variants": results,
    }


async def create_tenant(admin: Gateway, name: str, settings: dict[str, Any]) -> tuple[str, str]:
    """A tenant with ``settings`` and a member key of it: (tenant id, key)."""
    status, tenant = await admin.json(
        "POST", "/admin/tenants", {"name": name, "tier": "interactive", "settings": settings}
    )
    if status != 201:
        raise RuntimeError(f"creating tenant {name}: {status} {tenant}")
    status, key = await admin.json(
        "POST", "/admin/keys", {"name": name, "role": "member", "tenant_id": tenant["id"]}
    )
    if status != 201:
        raise RuntimeError(f"creating a key of {name}: {status} {key}")
    return str(tenant["id"]), str(key["key"])


async def _race(
    variant: Variant,
    ports: list[int],
    key: str,
    tenant_id: str,
    store_url: str,
    options: RaceOptions,
    model: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if variant.max_tokens is not None:
        body["max_tokens"] = variant.max_tokens
    if variant.stream:
        body["stream"] = True  # served tokens then come from the usage store only
    data = orjson.dumps(body)
    headers = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
    statuses: Counter[int] = Counter()
    codes: Counter[str] = Counter()
    served = 0

    async def one(index: int) -> None:
        nonlocal served
        reply = await send(
            ports[index % len(ports)],
            "POST",
            "/v1/chat/completions",
            headers=headers,
            chunks=[data],
            length=len(data),
            timeout_s=30,
        )
        statuses[reply.status] += 1
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return
        if reply.status == 200:
            usage = answer.get("usage") or {}
            served += int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
        elif isinstance(answer.get("error"), dict):
            codes[str(answer["error"].get("code"))] += 1

    elapsed = await fire_together(options.requests, one, settle_s=0.2)
    records, admitted = await metered(store_url, tenant_id, expected=options.requests)
    bound = variant.bound(elapsed)
    return {
        "variant": variant.name,
        "settings": variant.settings,
        "max_tokens": variant.max_tokens,
        "stream": variant.stream,
        "elapsed_s": round(elapsed, 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "error_codes": dict(codes),
        "served_tokens_seen_by_clients": served,
        "usage_records": records,
        "admitted_tokens": admitted,
        "bound_tokens": round(bound, 1),
        "overspend_pct": round(max(0.0, admitted - bound) / bound * 100, 2),
        # A limit that refused nearly everything would never overspend either.
        "used_pct": round(admitted / bound * 100, 1),
    }


async def fire_together(
    count: int, one: Callable[[int], Awaitable[None]], *, settle_s: float = 0.1
) -> float:
    """Run ``one(0)`` … ``one(count - 1)`` released at the same instant (their tasks are
    created and given ``settle_s`` to reach the gate first); the seconds from the release to
    the last one done."""
    gate = asyncio.Event()

    async def gated(index: int) -> None:
        await gate.wait()
        await one(index)

    tasks = [asyncio.create_task(gated(i)) for i in range(count)]
    await asyncio.sleep(settle_s)
    started = time.monotonic()
    gate.set()
    await asyncio.gather(*tasks)
    return time.monotonic() - started


async def metered(store_url: str, tenant_id: str, *, expected: int = 0) -> tuple[int, int]:
    """(usage records, prompt + completion tokens) of the tenant once ``expected`` records are
    in the store (or 15 s passed); with no ``expected``, what is there now."""
    engine = create_engine(store_url)
    sessions = create_sessionmaker(engine)
    tokens = UsageRecord.prompt_tokens + UsageRecord.completion_tokens
    query = select(func.count(), func.coalesce(func.sum(tokens), 0)).where(
        UsageRecord.tenant_id == tenant_id
    )
    deadline = time.monotonic() + 15
    try:
        while True:
            async with sessions() as session:
                row = (await session.execute(query)).one()
            if int(row[0]) >= expected or time.monotonic() > deadline:
                return int(row[0]), int(row[1])
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
