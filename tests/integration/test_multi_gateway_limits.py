"""Three `tidegate up` processes sharing one store and one Redis: rate limits and budgets hold
across all of them.

Requests use token-id prompts on /v1/completions, so the gateway counts the prompt exactly
without a tokenizer (5 ids = 5 tokens) and the fake upstream reports the same 5 prompt tokens
plus exactly ``max_tokens`` completion tokens: what is reserved at admission is what is used, and
the bounds below are exact.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from benchmarks.budget_race import fire_together
from tests.store_fixtures import reset_postgres
from tests.support.budget_race import budget_race
from tests.support.processes import (
    AdminClient,
    Cluster,
    GatewaySettings,
    redis_prefix,
    running_cluster,
    shared_store_url,
)
from tidegate.store import create_engine, create_sessionmaker
from tidegate.store.models import UsageRecord

MODEL = "fake-model"
PROMPT = [11, 12, 13, 14, 15]  # 5 prompt tokens, counted as they are
MAX_TOKENS = 15
PER_REQUEST = len(PROMPT) + MAX_TOKENS  # 20 tokens reserved and used
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with redis_prefix("multi-gw") as name:
        yield name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return shared_store_url(request, tmp_path)


def completion_body() -> dict[str, Any]:
    return {"model": MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS}


@dataclass
class Outcomes:
    """What the clients saw for one tenant."""

    ok: int = 0
    ok_tokens: int = 0
    rejected: int = 0
    other: list[tuple[int, str]] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)

    @property
    def sent(self) -> int:
        return self.ok + self.rejected + len(self.other)


async def send(
    http: aiohttp.ClientSession,
    url: str,
    key: str,
    outcomes: Outcomes,
    *,
    error_code: str,
    rate_headers: tuple[str, ...] = RATE_HEADERS,
) -> None:
    """One request; checks the answer's shape. ``rate_headers``: the x-ratelimit-* headers every
    answer must carry (only limits the tenant has get headers)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(url + "/v1/completions", json=completion_body(), headers=headers) as r:
        body = await r.read()
        if r.status == 200:
            missing = [h for h in rate_headers if h not in r.headers]
            assert not missing, f"a 200 lacks {missing}"
            usage = (await r.json())["usage"]
            assert usage["prompt_tokens"] + usage["completion_tokens"] == PER_REQUEST, usage
            outcomes.ok += 1
            outcomes.ok_tokens += PER_REQUEST
        elif r.status == 429:
            missing = [h for h in ("retry-after", *rate_headers) if h not in r.headers]
            assert not missing, f"a 429 lacks {missing}"
            assert int(r.headers["retry-after"]) >= 1
            code = (await r.json())["error"]["code"]
            assert code == error_code, body
            outcomes.rejected += 1
            outcomes.codes.add(code)
        else:
            outcomes.other.append((r.status, body.decode(errors="replace")[:300]))


async def hammer(
    cluster: Cluster, key: str, outcomes: Outcomes, *, until: float, workers: int
) -> None:
    """``workers`` closed-loop clients, round robin over the gateways, until ``until``."""
    urls = itertools.cycle([g.url for g in cluster.gateways])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as http:

        async def worker() -> None:
            while time.monotonic() < until:
                await send(http, next(urls), key, outcomes, error_code="rate_limit_exceeded")

        await asyncio.gather(*(worker() for _ in range(workers)))


async def test_rate_limits_hold_across_three_gateways(tmp_path: Path, prefix: str) -> None:
    rpm, tpm = 120, 120 * PER_REQUEST  # 2 requests/s, 40 tokens/s; buckets start full
    settings = GatewaySettings(
        store_url=f"sqlite+aiosqlite:///{tmp_path / 'store' / 'tidegate.db'}",
        redis_prefix=prefix,
        wal_dir=tmp_path / "wal",
    )
    async with running_cluster(tmp_path, settings, gateways=3, tokens=MAX_TOKENS) as cluster:
        async with aiohttp.ClientSession() as http:
            admin = AdminClient(http, cluster.gateways[0].url)
            # Each tenant is bound by one limit; the other is set high so both header sets show.
            _, rpm_key = await admin.tenant_with_key(
                "rpm-bound",
                {"limits": {"requests_per_minute": rpm, "tokens_per_minute": 10_000_000}},
            )
            _, tpm_key = await admin.tenant_with_key(
                "tpm-bound",
                {"limits": {"requests_per_minute": 1_000_000, "tokens_per_minute": tpm}},
            )
        by_requests, by_tokens = Outcomes(), Outcomes()
        duration_s = 8.0
        started = time.monotonic()
        until = started + duration_s
        await asyncio.gather(
            hammer(cluster, rpm_key, by_requests, until=until, workers=12),
            hammer(cluster, tpm_key, by_tokens, until=until, workers=12),
        )
        elapsed = time.monotonic() - started  # bounds the time the buckets had to refill

    request_bound = (rpm + rpm / 60 * elapsed) * 1.01
    token_bound = (tpm + tpm / 60 * elapsed) * 1.01
    print(
        f"elapsed {elapsed:.2f} s; rpm tenant: {by_requests.ok} of {by_requests.sent} admitted "
        f"(bound {request_bound:.1f}); tpm tenant: {by_tokens.ok_tokens} tokens in "
        f"{by_tokens.ok} of {by_tokens.sent} admitted (bound {token_bound:.1f})"
    )
    for outcomes in (by_requests, by_tokens):
        assert outcomes.other == []
        # At least ten times the limit was offered, and the full bucket was admitted.
        assert outcomes.sent / elapsed >= 10 * rpm / 60
    assert by_requests.sent >= 3 * request_bound and by_tokens.sent >= 3 * token_bound / 20
    assert rpm <= by_requests.ok <= request_bound
    assert tpm <= by_tokens.ok_tokens <= token_bound


async def test_budget_race_across_three_gateways_never_overspends(
    tmp_path: Path, prefix: str, shared_store: str
) -> None:
    budget = 10 * PER_REQUEST  # fits exactly 10 requests
    settings = GatewaySettings(
        store_url=shared_store, redis_prefix=prefix, wal_dir=tmp_path / "wal"
    )
    async with running_cluster(tmp_path, settings, gateways=3, tokens=MAX_TOKENS) as cluster:
        async with aiohttp.ClientSession() as http:
            tenant_id, key = await AdminClient(http, cluster.gateways[0].url).tenant_with_key(
                "racer", {"budgets": {"daily_tokens": budget}}
            )
        outcomes = Outcomes()
        urls = [g.url for g in cluster.gateways]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=20)
        ) as http:

            async def one(index: int) -> None:
                await send(
                    http,
                    urls[index % 3],
                    key,
                    outcomes,
                    error_code="budget_exceeded",
                    rate_headers=(),  # the tenant has a budget but no rate limits
                )

            await fire_together(200, one)
    # The gateways stopped cleanly, so every usage record is in the store now.

    engine = create_engine(shared_store)
    try:
        sessions = create_sessionmaker(engine)
        async with sessions() as session:
            row = (
                await session.execute(
                    select(
                        func.count(),
                        func.coalesce(
                            func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0
                        ),
                        func.count().filter(UsageRecord.status == 200),
                    ).where(UsageRecord.tenant_id == tenant_id)
                )
            ).one()
    finally:
        await engine.dispose()
    records, spent, ok_records = int(row[0]), int(row[1]), int(row[2])
    print(
        f"200s: {outcomes.ok}, 429s: {outcomes.rejected}, other: {outcomes.other}; "
        f"spend recorded {spent} of budget {budget} in {records} records ({ok_records} ok)"
    )
    assert outcomes.other == []
    assert outcomes.ok + outcomes.rejected == 200
    assert spent <= budget
    assert outcomes.ok <= 10
    # Reservations equal real usage here, so exactly the budget's 10 requests fit.
    assert outcomes.ok == 10 and spent == budget
    assert outcomes.codes == {"budget_exceeded"}
    assert records == 200 and ok_records == 10  # every request metered once, refusals too


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("max_tokens", "stream"),
    [(12, False), (None, False), (None, True)],
    ids=["max_tokens-12", "no-max_tokens", "no-max_tokens-stream"],
)
async def test_budget_race_without_a_tokenizer_holds_exactly(
    tmp_path: Path,
    prefix: str,
    postgres_url: str,
    max_tokens: int | None,
    stream: bool,
) -> None:
    """The issue-13 race: 2,000 daily tokens, 200 concurrent chat requests over 3 gateways
    (PostgreSQL, Redis), with and without max_tokens, no tokenizer. Each prompt reserves its
    upper bound and each completion at most what the budget has left (written into the request),
    so what is metered never passes the budget; before, a request without max_tokens reserved 1
    token and counted its prompt as 0 (+70%)."""
    reset_postgres(postgres_url)
    race = await budget_race(
        tmp_path,
        store_url=postgres_url,
        redis_prefix=prefix,
        max_tokens=max_tokens,
        stream=stream,
        budget=2000,
        requests=200,
        gateways=3,
    )
    print(race.summary())
    assert race.other == []
    assert race.ok + race.refused == 200
    assert race.ok >= 1 and race.codes <= {"budget_exceeded"}
    assert race.records == 200  # every request metered once, refusals too
    assert race.client_tokens <= race.metered_tokens
    assert race.metered_tokens <= 2000, race.summary()


@pytest.mark.postgres
async def test_tokens_per_minute_race_without_max_tokens_holds(
    tmp_path: Path, prefix: str, postgres_url: str
) -> None:
    """500 tokens per minute, 200 concurrent requests without max_tokens over 3 gateways: what
    is served stays within a full bucket plus its refill during the race (it served 533)."""
    reset_postgres(postgres_url)
    race = await budget_race(
        tmp_path,
        store_url=postgres_url,
        redis_prefix=prefix,
        max_tokens=None,
        budget=None,
        tokens_per_minute=500,
    )
    print(race.summary())
    assert race.other == [] and race.ok >= 1
    assert race.codes <= {"rate_limit_exceeded"}
    assert race.metered_tokens <= race.allowed, race.summary()
