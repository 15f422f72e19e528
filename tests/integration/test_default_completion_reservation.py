"""A request without max_tokens to a model whose context length is unknown reserves a bounded
default (``validation.default_completion_reservation``), not the tenant's whole budget; a pool
without a configured context length learns it from its engine's ``GET /v1/models``.

Real gateways (uvicorn on loopback) in front of the real fake upstream; the limiter tests run on
both limit stores (in-process, and the real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.support.gateway import create_member, run_gateway
from tests.support.limit_stores import STORE_KINDS, StoreKind, limiter_on, redis_reachable
from tidegate.config import Config
from tidegate.errors import LimitExceededError
from tidegate.pipeline.context_lengths import ContextLengths
from tidegate.pipeline.limits import Admission, Limiter
from tidegate.pipeline.model_limits import models_for_pools, pool_limits
from tidegate.tenancy.policy import Budgets, RateLimits
from tidegate_testing.fake_server import FakeUpstream

NOW = datetime(2030, 3, 14, 12, 0, tzinfo=UTC).timestamp()
DEFAULT = 4096


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **fields}


# -- the limiter, on both stores --------------------------------------------------------------


@pytest.fixture(params=STORE_KINDS)
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    kind: StoreKind = request.param
    if kind == "redis":
        await redis_reachable()
    async with limiter_on(kind, lambda: NOW) as made:
        yield made


async def admit(
    limiter: Limiter,
    *,
    budgets: Budgets | None = None,
    tpm: int | None = None,
    rpm: int | None = None,
    prompt: int = 10,
    sequences: int = 1,
    tenant: str = "t1",
) -> Admission:
    return await limiter.admit(
        tenant_id=tenant,
        key_id=f"{tenant}-key",
        tenant_limits=RateLimits(tokens_per_minute=tpm, requests_per_minute=rpm),
        key_limits=RateLimits(),
        budgets=budgets or Budgets(),
        model="free",
        prompt_tokens=prompt,
        max_tokens=None,
        sequences=sequences,
        failure_mode="closed",
        default_max_tokens=DEFAULT,
    )


async def test_a_large_budget_admits_concurrent_requests_at_the_default(limiter: Limiter) -> None:
    budgets = Budgets(daily_tokens=1_000_000)
    admitted = await asyncio.gather(*(admit(limiter, budgets=budgets) for _ in range(10)))
    # Each reserves the default (and has it written), not all that is left.
    assert [a.completion_allowance for a in admitted] == [DEFAULT] * 10
    assert [a.completion_limit for a in admitted] == [DEFAULT] * 10
    for each in admitted:
        await each.settle(prompt_tokens=10, completion_tokens=5)
    # 150 spent: the rest is what a request sees next, capped by the default still.
    again = await admit(limiter, budgets=budgets, sequences=2)
    assert again.completion_allowance == DEFAULT and again.completion_limit == 2 * DEFAULT


async def test_the_default_is_lowered_to_what_the_budget_has_left(limiter: Limiter) -> None:
    budgets = Budgets(daily_tokens=100)
    first = await admit(limiter, budgets=budgets)
    assert (first.completion_allowance, first.completion_limit) == (90, 90)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, budgets=budgets, prompt=1)
    assert refused.value.code == "budget_exceeded"


async def test_a_token_bucket_smaller_than_the_default_gives_what_it_has(
    limiter: Limiter,
) -> None:
    # 500 tpm holds less than the default: the request gets the bucket's rest, not a refusal.
    first = await admit(limiter, tpm=500)
    assert (first.completion_allowance, first.completion_limit) == (490, 490)
    with pytest.raises(LimitExceededError) as refused:
        await admit(limiter, tpm=500, prompt=1)
    assert refused.value.code == "rate_limit_exceeded"
    # A bucket with room for several defaults admits them side by side.
    big = await asyncio.gather(*(admit(limiter, tpm=100_000, tenant="t2") for _ in range(5)))
    assert [a.completion_allowance for a in big] == [DEFAULT] * 5


async def test_no_token_limit_writes_nothing(limiter: Limiter) -> None:
    admission = await admit(limiter, rpm=10)
    assert admission.completion_allowance is None and admission.completion_limit is None


async def test_200_concurrent_requests_at_the_default_never_exceed_the_budget(
    limiter: Limiter,
) -> None:
    budget = 50_000
    budgets = Budgets(daily_tokens=budget)

    async def one(index: int) -> int:
        try:
            admission = await admit(limiter, budgets=budgets, prompt=10 + index % 7)
        except LimitExceededError:
            return 0
        assert admission.completion_allowance is not None
        assert admission.completion_allowance <= DEFAULT
        # The engine generates what was written, all of it.
        used = 10 + index % 7 + admission.completion_allowance
        await admission.settle(
            prompt_tokens=10 + index % 7, completion_tokens=admission.completion_allowance
        )
        return used

    used = await asyncio.gather(*(one(i) for i in range(200)))
    assert sum(used) <= budget
    assert sum(1 for u in used if u) >= 12  # 50,000 holds 12 full defaults


# -- through a gateway --------------------------------------------------------------------------


async def test_concurrent_requests_without_max_tokens_are_not_serialised(tmp_path: Path) -> None:
    """No context_length and an engine that lists none: 10 concurrent requests from a tenant
    with a 1M-token budget are all served, each forwarded with max_tokens <= the default."""
    fake = FakeUpstream(model="fake-model", max_model_len=None)
    fake.behaviour.first_token_delay_s = 0.3  # all ten in flight at once
    await fake.start()
    try:
        async with (
            run_gateway(tmp_path, upstreams=[fake]) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            key = await create_member(http, "big", {"budgets": {"daily_tokens": 1_000_000}})
            rpm_only = await create_member(http, "rpm", {"limits": {"requests_per_minute": 100}})
            responses = await asyncio.gather(
                *(
                    http.post("/v1/chat/completions", json=chat(), headers=key.headers)
                    for _ in range(10)
                )
            )
            assert [r.status_code for r in responses] == [200] * 10, responses[0].text
            assert len(fake.requests) == 10
            assert all(r["max_completion_tokens"] == DEFAULT for r in fake.requests)
            # A tenant without token limits is forwarded as it asked (no limit written).
            plain = await http.post("/v1/chat/completions", json=chat(), headers=rpm_only.headers)
            assert plain.status_code == 200, plain.text
            last = fake.requests[-1]
            assert "max_completion_tokens" not in last and "max_tokens" not in last
    finally:
        await fake.stop()


async def test_the_default_is_configurable(tmp_path: Path) -> None:
    fake = FakeUpstream(model="fake-model", max_model_len=None)
    await fake.start()
    try:
        async with (
            run_gateway(
                tmp_path,
                upstreams=[fake],
                sections={"validation": {"default_completion_reservation": 256}},
            ) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            key = await create_member(http, "tpm", {"limits": {"tokens_per_minute": 100_000}})
            response = await http.post(
                "/v1/completions",
                json={"model": "fake-model", "prompt": "hi"},
                headers=key.headers,
            )
            assert response.status_code == 200, response.text
            assert fake.requests[-1]["max_tokens"] == 256
    finally:
        await fake.stop()


async def test_the_context_length_is_learned_from_the_engine(tmp_path: Path) -> None:
    """The fake lists max_model_len 300 at /v1/models, as vLLM does: with no context_length in
    the config the gateway validates and reserves against it."""
    fake = FakeUpstream(model="fake-model", max_model_len=300)
    await fake.start()
    try:
        async with (
            run_gateway(tmp_path, upstreams=[fake]) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            key = await create_member(http, "ctx", {"budgets": {"daily_tokens": 1_000_000}})
            too_long = await http.post(
                "/v1/chat/completions", json=chat(max_tokens=400), headers=key.headers
            )
            assert too_long.status_code == 400, too_long.text
            error = too_long.json()["error"]
            assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
            assert "300" in error["message"]
            assert fake.requests == []
            # Without max_tokens: reserved up to the context, which the engine defaults to
            # itself, so nothing is written.
            served = await http.post("/v1/chat/completions", json=chat(), headers=key.headers)
            assert served.status_code == 200, served.text
            assert "max_completion_tokens" not in fake.requests[-1]
    finally:
        await fake.stop()


async def test_learned_lengths_reach_every_model_of_the_pool_and_yield_to_config(
    tmp_path: Path,
) -> None:
    """Straight on the learner: the smallest length of a pool's engines wins, a configured
    context_length is never overwritten, an engine that is down or lists no length changes
    nothing."""
    small, large = FakeUpstream(model="m", max_model_len=1000), FakeUpstream(model="m")
    silent = FakeUpstream(model="quiet", max_model_len=None)
    configured = FakeUpstream(model="fixed", max_model_len=9999)
    for each in (small, large, silent, configured):
        await each.start()
    config = Config(
        home=tmp_path,
        engines={"replicas": 0},
        upstreams=[
            {"url": large.base_url, "model": "m"},
            {"url": small.base_url, "model": "m"},
            {"url": "http://127.0.0.1:9/v1", "model": "m"},  # nothing listens
            {"url": silent.base_url, "model": "quiet"},
            {"url": configured.base_url, "model": "fixed", "context_length": 512},
        ],
        routing={"routes": [{"model": "alias", "pools": ["m"]}]},
    )
    try:
        with ThreadPoolExecutor(1) as executor:
            pools = pool_limits(config, local_model_dir=None, executor=executor)
        models = models_for_pools(config, pools)
        async with aiohttp.ClientSession() as session:
            learner = ContextLengths(config=config, pools=pools, session=session, timeout_s=1.0)
            await learner.start()
            await learner.stop()
        assert models["m"].context_length == 1000  # min(2048, 1000)
        assert models["alias"] is models["m"]
        assert models["quiet"].context_length is None
        assert models["fixed"].context_length == 512
    finally:
        for each in (small, large, silent, configured):
            await each.stop()


async def test_a_small_token_bucket_lowers_the_context_room_instead_of_refusing(
    tmp_path: Path,
) -> None:
    """A known context of 2048 and 500 tokens per minute: a request without max_tokens asks
    for the context's room only implicitly, so it gets what the bucket holds (written into the
    request), not a refusal for a request that could never fit."""
    fake = FakeUpstream(model="fake-model")  # lists max_model_len 2048
    await fake.start()
    try:
        async with (
            run_gateway(tmp_path, upstreams=[fake]) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            key = await create_member(http, "tpm", {"limits": {"tokens_per_minute": 500}})
            response = await http.post("/v1/chat/completions", json=chat(), headers=key.headers)
            assert response.status_code == 200, response.text
            written = fake.requests[-1]["max_completion_tokens"]
            assert 0 < written < 500
            # An explicit max_tokens that the bucket can never hold is still refused.
            refused = await http.post(
                "/v1/chat/completions", json=chat(max_tokens=1000), headers=key.headers
            )
            assert refused.status_code == 429, refused.text
            assert len(fake.requests) == 1
    finally:
        await fake.stop()
