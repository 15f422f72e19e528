"""Pools, routing rules, fallback chains and spillover through real HTTP: a real gateway on
loopback in front of several fake upstreams (one per pool) and the fake Anthropic API.

Every answer names the pool and replica that served it (x-tidegate-backend: POOL/REPLICA, the
replica being ``u<index of its upstream entry>``), and the fakes count what reached them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.test_scheduling import sample
from tests.support.gateway import (
    ADMIN_KEY,
    MemberKey,
    RunningGateway,
    auth,
    free_port,
    serve,
    usage_records,
)
from tests.support.tiny_model import write_tiny_model
from tidegate.config import Config
from tidegate_testing.fake_anthropic import FakeAnthropic
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

BACKEND = "x-tidegate-backend"


def chat(content: str = "hello", model: str = "chat", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **fields}


@dataclass
class Env:
    gateway: RunningGateway
    http: httpx.AsyncClient
    fakes: dict[str, FakeUpstream]
    """Pool name → its fake (one replica per pool unless a test adds more)."""

    async def member(self, name: str, tier: str = "interactive") -> MemberKey:
        tenant = await self.http.post(
            "/admin/tenants", json={"name": name, "tier": tier}, headers=auth(ADMIN_KEY)
        )
        assert tenant.status_code == 201, tenant.text
        body = {"name": name, "role": "member", "tenant_id": tenant.json()["id"]}
        key = await self.http.post("/admin/keys", json=body, headers=auth(ADMIN_KEY))
        assert key.status_code == 201, key.text
        return MemberKey(tenant.json()["id"], key.json()["id"], key.json()["key"])

    async def chat(
        self, key: MemberKey | None = None, headers: dict[str, str] | None = None, **body: Any
    ) -> httpx.Response:
        return await self.http.post(
            "/v1/chat/completions",
            json=chat(**body),
            headers={**(key.headers if key else auth(ADMIN_KEY)), **(headers or {})},
        )

    def counts(self) -> dict[str, int]:
        return {pool: len(fake.requests) for pool, fake in self.fakes.items()}

    async def metric(self, name: str, **labels: str) -> float:
        return sample(
            (
                await self.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            ).text,
            name,
            **labels,
        )

    async def until_active(self, pool: str, active: int) -> None:
        """Until ``active`` requests are in progress at the pool's fake."""
        deadline = time.monotonic() + 5
        while self.fakes[pool].active != active:
            assert time.monotonic() < deadline, f"pool {pool} never had {active} in progress"
            await asyncio.sleep(0.005)

    async def until_metric(self, name: str, value: float, **labels: str) -> None:
        deadline = time.monotonic() + 5
        while await self.metric(name, **labels) != value:
            assert time.monotonic() < deadline, f"{name}{labels} never reached {value}"
            await asyncio.sleep(0.01)


def upstream(fake: FakeUpstream, pool: str, **fields: Any) -> dict[str, Any]:
    return {"url": fake.base_url, "model": fake.model, "pool": pool, **fields}


def refusing(pool: str, model: str = "down") -> dict[str, Any]:
    """An upstream entry nothing listens at: every connection is refused."""
    return {"url": f"http://127.0.0.1:{free_port()}/v1", "model": model, "pool": pool}


@asynccontextmanager
async def environment(
    tmp_path: Path,
    pools: dict[str, FakeBehaviour | None],
    *,
    routes: list[dict[str, Any]],
    entries: list[dict[str, Any]] | None = None,
    upstream_options: dict[str, Any] | None = None,
    scheduling: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> AsyncIterator[Env]:
    """One fake per pool (model ``fake-<pool>``, upstream entries in ``pools`` order), then
    ``entries`` as they are."""
    async with AsyncExitStack() as stack:
        fakes: dict[str, FakeUpstream] = {}
        for pool, behaviour in pools.items():
            fake = FakeUpstream(model=f"fake-{pool}", behaviour=behaviour)
            await fake.start()
            stack.push_async_callback(fake.stop)
            fakes[pool] = fake
        config = Config(
            home=tmp_path,
            admin_key=ADMIN_KEY,
            server={"port": free_port(), "idle_timeout_s": 5.0},
            engines={"replicas": 0},
            upstreams=[
                *(upstream(fake, pool, **(upstream_options or {})) for pool, fake in fakes.items()),
                *(entries or []),
            ],
            scheduling={"interactive_reserve": 0.0, **(scheduling or {})},
            routing={"routes": routes, "health": health or {}},
            metering={"flush_interval_s": 0.05},
        )
        gateway = await stack.enter_async_context(serve(config))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=gateway.url, timeout=30))
        yield Env(gateway, http, fakes)


# -- rules ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


RULES = [
    {"pools": ["quality"], "quality": ["high"]},
    {"pools": ["batch"], "tiers": ["batch"]},
    {"pools": ["json"], "response_format": ["json_object", "json_schema"]},
    {"pools": ["long"], "min_prompt_tokens": 30},
]
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object"}},
}


@asynccontextmanager
async def rules_environment(tmp_path: Path, tiny_dir: Path) -> AsyncIterator[Env]:
    async with environment(
        tmp_path,
        dict.fromkeys(["default", "quality", "batch", "json", "long"]),
        routes=[{"model": "chat", "pools": ["default"], "rules": RULES}],
        upstream_options={"tokenizer": str(tiny_dir)},
    ) as env:
        yield env


async def test_each_rule_condition_picks_its_pool(tmp_path: Path, tiny_dir: Path) -> None:
    async with rules_environment(tmp_path, tiny_dir) as env:
        interactive = await env.member("acme")
        batch = await env.member("nightly", tier="batch")
        cases: list[tuple[str, MemberKey, dict[str, Any]]] = [
            ("default", interactive, {}),
            ("batch", batch, {}),
            ("quality", interactive, {"headers": {"x-tidegate-quality": "high"}}),
            ("default", interactive, {"headers": {"x-tidegate-quality": "low"}}),
            ("json", interactive, {"response_format": {"type": "json_object"}}),
            ("json", interactive, {"response_format": JSON_SCHEMA}),
            ("default", interactive, {"response_format": {"type": "text"}}),
            ("long", interactive, {"content": "hello " * 40}),
            ("default", interactive, {"content": "hello " * 5}),
        ]
        for pool, key, fields in cases:
            before = env.counts()
            response = await env.chat(key, **fields)
            assert response.status_code == 200, (pool, fields, response.text)
            assert response.headers[BACKEND] == f"{pool}/u{list(env.fakes).index(pool)}"
            after = env.counts()
            assert {p: after[p] - before[p] for p in after if after[p] != before[p]} == {pool: 1}
            # The pool's own model name went upstream, not the route's; the client's key not.
            assert env.fakes[pool].requests[-1]["model"] == f"fake-{pool}"
            assert "authorization" not in env.fakes[pool].request_headers[-1]
            assert response.json()["model"] == f"fake-{pool}"


async def test_the_first_matching_rule_wins(tmp_path: Path, tiny_dir: Path) -> None:
    """Rules are checked in config order: quality, tier, response_format, prompt tokens."""
    async with rules_environment(tmp_path, tiny_dir) as env:
        batch = await env.member("nightly", tier="batch")
        interactive = await env.member("acme")
        json_mode = {"type": "json_object"}
        high = {"x-tidegate-quality": "high"}
        cases: list[tuple[str, MemberKey, dict[str, Any]]] = [
            ("quality", batch, {"headers": high, "response_format": json_mode}),
            ("batch", batch, {"response_format": json_mode, "content": "hello " * 40}),
            ("json", interactive, {"response_format": json_mode, "content": "hello " * 40}),
        ]
        for pool, key, fields in cases:
            response = await env.chat(key, **fields)
            assert response.status_code == 200, response.text
            assert response.headers[BACKEND].split("/")[0] == pool
        assert env.counts() == {"default": 0, "quality": 1, "batch": 1, "json": 1, "long": 0}


async def test_backend_header_streamed_and_not_and_models_listed(tmp_path: Path) -> None:
    async with environment(
        tmp_path,
        {"a": FakeBehaviour(tokens=3), "b": None},
        routes=[{"model": "chat", "pools": ["a", "b"]}],
        upstream_options={"api_key": "sk-upstream"},
    ) as env:
        whole = await env.chat()
        assert whole.status_code == 200 and whole.headers[BACKEND] == "a/u0"
        # The configured key goes upstream in place of the client's.
        assert env.fakes["a"].request_headers[0]["authorization"] == "Bearer sk-upstream"
        async with env.http.stream(
            "POST",
            "/v1/chat/completions",
            json=chat(stream=True),
            headers=auth(ADMIN_KEY),
        ) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers[BACKEND] == "a/u0"
            assert streamed.headers["content-type"].startswith("text/event-stream")
            body = await streamed.aread()
        assert body.endswith(b"data: [DONE]\n\n") and body.count(b'"content":"tok "') == 3
        # Implicit routes serve each upstream's own model name from its pool.
        direct = await env.chat(model="fake-b")
        assert direct.status_code == 200 and direct.headers[BACKEND] == "b/u1"
        assert env.counts() == {"a": 2, "b": 1}
        models = await env.http.get("/v1/models", headers=auth(ADMIN_KEY))
        assert [m["id"] for m in models.json()["data"]] == ["chat", "fake-a", "fake-b"]


# -- fallback -------------------------------------------------------------------------------------


async def test_a_pool_whose_replicas_refuse_falls_back_to_the_next(tmp_path: Path) -> None:
    async with environment(
        tmp_path,
        {"b": None},
        entries=[refusing("a")],
        routes=[{"model": "chat", "pools": ["a", "b"]}],
    ) as env:
        for _ in range(3):
            response = await env.chat()
            assert response.status_code == 200, response.text
            assert response.headers[BACKEND] == "b/u0"
        async with env.http.stream(
            "POST", "/v1/chat/completions", json=chat(stream=True), headers=auth(ADMIN_KEY)
        ) as streamed:
            assert streamed.headers[BACKEND] == "b/u0"
            assert (await streamed.aread()).endswith(b"data: [DONE]\n\n")
        assert env.counts() == {"b": 4}
        # The first request found the refusal (an error) and ejected the replica; the rest
        # passed the pool over without trying it.
        assert await env.metric("tidegate_pool_fallbacks_total", pool="a", reason="error") == 1
        unavailable = await env.metric(
            "tidegate_pool_fallbacks_total", pool="a", reason="unavailable"
        )
        assert unavailable == 3


async def test_a_full_queue_falls_back_to_the_next_pool(tmp_path: Path) -> None:
    async with environment(
        tmp_path,
        {"a": FakeBehaviour(tokens=2, first_token_delay_s=0.5), "b": None},
        routes=[{"model": "chat", "pools": ["a", "b"]}],
        upstream_options={"max_concurrency": 1},
        scheduling={"interactive": {"max_queue_depth": 0}},
    ) as env:
        first = asyncio.create_task(env.chat())
        await env.until_active("a", 1)
        started = time.monotonic()
        second = await env.chat()
        assert second.status_code == 200, second.text
        assert second.headers[BACKEND] == "b/u1"
        assert time.monotonic() - started < 0.4  # did not wait for pool a
        assert (await first).headers[BACKEND] == "a/u0"
        assert env.counts() == {"a": 1, "b": 1}
        assert await env.metric("tidegate_pool_fallbacks_total", pool="a", reason="overloaded") == 1


async def test_a_pool_answering_500_falls_back_within_the_retry_budget(tmp_path: Path) -> None:
    async with environment(
        tmp_path,
        {"a": FakeBehaviour(tokens=2), "b": FakeBehaviour(tokens=2)},
        routes=[{"model": "chat", "pools": ["a", "b"]}],
        health={"retry_budget_ratio": 1.0},
    ) as env:
        env.fakes["a"].behaviour.fault = "status_500"
        response = await env.chat()
        assert response.status_code == 200, response.text
        assert response.headers[BACKEND] == "b/u1"
        assert env.counts() == {"a": 1, "b": 1}
        assert await env.metric("tidegate_pool_fallbacks_total", pool="a", reason="error") == 1
        line = env.gateway.access_lines()[-1]
        assert (line["status"], line["model"], line["replica"]) == (200, "chat", "u1")
        # Streamed: the failure comes before the first byte, so b serves this one too.
        async with env.http.stream(
            "POST", "/v1/chat/completions", json=chat(stream=True), headers=auth(ADMIN_KEY)
        ) as streamed:
            assert streamed.status_code == 200 and streamed.headers[BACKEND] == "b/u1"
            assert (await streamed.aread()).endswith(b"data: [DONE]\n\n")
        assert env.counts() == {"a": 2, "b": 2}


async def test_a_pool_whose_breaker_is_probing_falls_back(tmp_path: Path) -> None:
    """Half-open: one probe request goes to the failing pool; the others take the next pool
    at once instead of getting 503."""
    async with environment(
        tmp_path,
        {"a": FakeBehaviour(tokens=2), "b": FakeBehaviour(tokens=2)},
        routes=[{"model": "chat", "pools": ["a", "b"]}],
        health={"retry_budget_ratio": 1.0, "breaker_failures": 1, "breaker_open_s": 0.2},
    ) as env:
        env.fakes["a"].behaviour.fault = "status_500"
        opened = await env.chat()  # a fails: its breaker opens, b serves
        assert opened.headers[BACKEND] == "b/u1"
        passed_over = await env.chat()  # open: a is not tried
        assert passed_over.headers[BACKEND] == "b/u1"
        assert env.counts() == {"a": 1, "b": 2}
        await asyncio.sleep(0.25)  # breaker_open_s has passed: the next request probes a
        env.fakes["a"].behaviour = FakeBehaviour(tokens=2, first_token_delay_s=0.5)
        probe = asyncio.create_task(env.chat())
        await env.until_active("a", 1)
        during = await env.chat()
        assert during.status_code == 200, during.text
        assert during.headers[BACKEND] == "b/u1"
        assert (await probe).headers[BACKEND] == "a/u0"  # its success closes the breaker
        assert (await env.chat()).headers[BACKEND] == "a/u0"
        assert env.counts() == {"a": 3, "b": 3}


async def test_no_fallback_on_500_once_the_retry_budget_is_spent(tmp_path: Path) -> None:
    async with environment(
        tmp_path,
        {"a": FakeBehaviour(tokens=2), "b": FakeBehaviour(tokens=2)},
        routes=[{"model": "chat", "pools": ["a", "b"]}],
        health={"retry_budget_ratio": 0.0},
    ) as env:
        env.fakes["a"].behaviour.fault = "status_500"
        response = await env.chat()
        assert response.status_code == 502, response.text
        assert "HTTP 500" in response.json()["error"]["message"]
        assert env.counts() == {"a": 1, "b": 0}


# -- spillover ------------------------------------------------------------------------------------

HOLD_S = 0.5


async def test_spillover_moves_on_when_the_predicted_wait_breaks_the_ttft_target(
    tmp_path: Path,
) -> None:
    """Pool a serves one request at a time, each for HOLD_S. With one in service and none
    queued, a new request's predicted wait is ~HOLD_S (under the 0.75 s target): it queues in
    a. With one queued too, it is ~2 × HOLD_S: on the route with spillover it goes to b; on
    the route without, it waits in a."""
    async with environment(
        tmp_path,
        {"a": FakeBehaviour(tokens=2, first_token_delay_s=HOLD_S), "b": None},
        routes=[
            {"model": "chat", "pools": ["a", "b"], "spillover": True},
            {"model": "steady", "pools": ["a", "b"]},
        ],
        upstream_options={"max_concurrency": 1},
        scheduling={"interactive": {"ttft_target_s": 0.75}},
    ) as env:
        key = await env.member("acme")
        # Warm-up: the pool learns how long a request holds its slot.
        assert (await env.chat(key)).headers[BACKEND] == "a/u0"

        async def wave(model: str) -> list[httpx.Response]:
            in_service = asyncio.create_task(env.chat(key, model=model))
            await env.until_active("a", 1)
            queued = asyncio.create_task(env.chat(key, model=model))
            await env.until_metric("tidegate_queue_depth", 1, model="a", **{"class": "interactive"})
            third = await env.chat(key, model=model)
            return [await in_service, await queued, third]

        spilled = await wave("chat")
        assert [r.headers[BACKEND] for r in spilled] == ["a/u0", "a/u0", "b/u1"]
        assert env.counts() == {"a": 3, "b": 1}
        assert await env.metric("tidegate_pool_fallbacks_total", pool="a", reason="spillover") == 1

        waited = await wave("steady")
        assert [r.headers[BACKEND] for r in waited] == ["a/u0"] * 3
        assert env.counts() == {"a": 6, "b": 1}


# -- the Anthropic provider -----------------------------------------------------------------------

ANTHROPIC_KEY = "sk-ant-test"


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic(model="claude-x", api_key=ANTHROPIC_KEY)
    await server.start()
    yield server
    await server.stop()


def claude(fake: FakeAnthropic, **fields: Any) -> dict[str, Any]:
    return {
        "provider": "anthropic",
        "url": fake.base_url,
        "model": "claude",
        "upstream_model": fake.model,
        **fields,
    }


async def test_anthropic_through_the_gateway_with_the_openai_client(
    tmp_path: Path, anthropic_fake: FakeAnthropic
) -> None:
    async with environment(
        tmp_path, {}, entries=[claude(anthropic_fake, api_key=ANTHROPIC_KEY)], routes=[]
    ) as env:
        key = await env.member("acme")
        client = openai.AsyncOpenAI(base_url=env.gateway.base_url, api_key=key.key, max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            model="claude", messages=[{"role": "user", "content": "hello there"}], max_tokens=50
        )
        assert raw.headers[BACKEND] == "claude/u0"
        answer = raw.parse()
        assert answer.choices[0].message.content == "tok " * 8
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage is not None and answer.usage.completion_tokens == 8
        assert answer.usage.prompt_tokens > 0

        raw_stream = await client.chat.completions.with_raw_response.create(
            model="claude",
            messages=[{"role": "user", "content": "hello again"}],
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert raw_stream.headers[BACKEND] == "claude/u0"
        text, usage = "", None
        async for chunk in raw_stream.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage is not None:
                usage = chunk.usage
        assert text == "tok " * 8
        assert usage is not None and usage.completion_tokens == 8

        # The configured key went upstream; the client's gateway key never did.
        assert len(anthropic_fake.requests) == 2
        for headers in anthropic_fake.request_headers:
            assert headers["x-api-key"] == ANTHROPIC_KEY
            assert "authorization" not in headers
            assert all(key.key not in value for value in headers.values())
        assert anthropic_fake.requests[1]["stream"] is True

        rids = [raw.headers["x-request-id"], raw_stream.headers["x-request-id"]]
        records = {r["request_id"]: r for r in await usage_records(env.http, rids)}
        for rid in rids:
            record = records[rid]
            assert record["completion_tokens"] == 8 and record["prompt_tokens"] > 0
            assert record["model"] == "claude" and record["outcome"] == "ok"
            assert record["tenant_id"] == key.tenant_id


async def test_fallback_from_an_openai_pool_to_anthropic_with_a_key_from_the_env(
    tmp_path: Path, anthropic_fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_TEST_ANTHROPIC_KEY", ANTHROPIC_KEY)
    async with environment(
        tmp_path,
        {"local": FakeBehaviour(tokens=2)},
        entries=[claude(anthropic_fake, pool="cloud", api_key_env="TIDEGATE_TEST_ANTHROPIC_KEY")],
        routes=[{"model": "chat", "pools": ["local", "cloud"]}],
        health={"retry_budget_ratio": 1.0},
    ) as env:
        client = openai.AsyncOpenAI(base_url=env.gateway.base_url, api_key=ADMIN_KEY, max_retries=0)
        served = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
        assert served.headers[BACKEND] == "local/u0"
        assert served.parse().choices[0].message.content == "tok " * 2

        env.fakes["local"].behaviour.fault = "status_500"
        fell_back = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
        assert fell_back.headers[BACKEND] == "cloud/u1"
        assert fell_back.parse().choices[0].message.content == "tok " * 8
        assert env.counts() == {"local": 2}
        [sent] = anthropic_fake.requests
        assert sent["model"] == "claude-x" and sent["max_tokens"] == 20
        assert anthropic_fake.request_headers[0]["x-api-key"] == ANTHROPIC_KEY
