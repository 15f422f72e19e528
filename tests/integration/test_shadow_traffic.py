"""Shadow traffic through a real gateway on loopback: two fake pools behind one public model,
the shadow turned on by a traffic policy row in the store (as the admin API writes it), which
the gateway's policy sync picks up."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import delete
from typer.testing import CliRunner

from tests.integration.test_scheduling import sample
from tests.support.gateway import (
    ADMIN_KEY,
    MemberKey,
    RunningGateway,
    auth,
    create_member,
    free_port,
    serve,
    usage_records,
)
from tidegate.cli import app
from tidegate.config import Config
from tidegate.store import create_engine, create_sessionmaker, migrate
from tidegate.store.models import TrafficPolicy
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

SYNC_S = 0.1
GOOD_JSON = '{"city": "Paris", "mail": "bob@example.com"}'
BROKEN_JSON = '{"city": "Paris", "mail": '


@dataclass
class Env:
    gateway: RunningGateway
    http: httpx.AsyncClient
    stable: FakeUpstream
    shadow: FakeUpstream
    store_url: str
    home: Path
    revision: int = 0

    async def set_shadow(self, sample: float) -> None:
        """Write the model's traffic policy and wait until the gateway has re-read it."""
        self.revision += 1
        engine = create_engine(self.store_url)
        try:
            async with create_sessionmaker(engine).begin() as session:
                await session.execute(delete(TrafficPolicy).where(TrafficPolicy.model == "chat"))
                session.add(
                    TrafficPolicy(
                        model="chat",
                        stable_pool="stable",
                        weights=[],
                        shadow_pool="shadow",
                        shadow_sample=sample,
                        revision=self.revision,
                        updated_at=datetime.now(UTC),
                        updated_by="test",
                    )
                )
        finally:
            await engine.dispose()
        await asyncio.sleep(SYNC_S * 4)

    async def chat(self, key: MemberKey, **fields: Any) -> httpx.Response:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **fields}
        response = await self.http.post("/v1/chat/completions", json=body, headers=key.headers)
        assert response.status_code == 200, response.text
        return response

    async def shadow_count(self, outcome: str) -> float:
        metrics = (
            await self.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        return sample(metrics, "tidegate_shadow_requests_total", model="chat", outcome=outcome)

    async def summary(self, count: int) -> dict[str, Any]:
        """The admin summary once ``count`` comparisons are stored."""
        deadline = time.monotonic() + 15
        while True:
            response = await self.http.get("/admin/models/chat/shadow", headers=auth(ADMIN_KEY))
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            if data and data[0]["count"] >= count:
                assert data[0]["count"] == count
                return dict(data[0])
            assert time.monotonic() < deadline, f"never {count} comparisons: {data}"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def environment(
    tmp_path: Path,
    store_url: str,
    *,
    stable: FakeBehaviour,
    shadow: FakeBehaviour,
    max_concurrency: int = 8,
) -> AsyncIterator[Env]:
    async with AsyncExitStack() as stack:
        fakes = []
        for name, behaviour in (("stable", stable), ("shadow", shadow)):
            fake = FakeUpstream(model=f"fake-{name}", behaviour=behaviour)
            await fake.start()
            stack.push_async_callback(fake.stop)
            fakes.append(fake)
        config = Config(
            home=tmp_path,
            admin_key=ADMIN_KEY,
            server={"port": free_port(), "idle_timeout_s": 10.0},
            store={"url": store_url},
            engines={"replicas": 0},
            upstreams=[
                {"url": fake.base_url, "model": fake.model, "pool": pool}
                for pool, fake in zip(("stable", "shadow"), fakes, strict=True)
            ],
            routing={"routes": [{"model": "chat", "pools": ["stable"]}]},
            metering={"flush_interval_s": 0.05},
            rollouts={
                "sync_interval_s": SYNC_S,
                "shadow_max_concurrency": max_concurrency,
                "shadow_timeout_s": 10.0,
            },
        )
        gateway = await stack.enter_async_context(serve(config))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=gateway.url, timeout=30))
        yield Env(gateway, http, fakes[0], fakes[1], config.store_url, tmp_path)


async def timed(env: Env, key: MemberKey, n: int, **fields: Any) -> list[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await env.chat(key, **fields)
        latencies.append(time.perf_counter() - started)
    return latencies


async def test_a_slow_shadow_leaves_the_primary_alone_and_sheds_beyond_capacity(
    tmp_path: Path, store_url: str
) -> None:
    delay = 2.0
    async with environment(
        tmp_path,
        store_url,
        stable=FakeBehaviour(tokens=8),
        shadow=FakeBehaviour(tokens=8, first_token_delay_s=delay),
        max_concurrency=4,
    ) as env:
        key = await create_member(env.http, "acme")
        await timed(env, key, 3)  # warm up connections and caches
        off = await timed(env, key, 12)
        await env.set_shadow(1.0)
        started = time.perf_counter()
        on = await timed(env, key, 12)
        burst_s = time.perf_counter() - started

        # Every primary came back long before the shadow's first token could.
        assert max(on) < delay / 2, on
        assert statistics.median(on) < max(3 * statistics.median(off), 0.1), (off, on)
        assert burst_s < delay  # so the four mirrored were all still in flight: the rest dropped
        assert await env.shadow_count("mirrored") == 4
        assert await env.shadow_count("dropped") == 8
        assert len(env.stable.requests) == 27

        summary = await env.summary(4)
        assert summary["primary_pool"] == "stable" and summary["shadow_pool"] == "shadow"
        assert summary["shadow"]["error_rate"] == 0 and summary["primary"]["error_rate"] == 0
        assert summary["shadow"]["ttft_p50_ms"] >= delay * 1000 * 0.95
        assert summary["primary"]["e2e_p95_ms"] < delay * 1000 / 2
        assert summary["difference_rate"] == 0 and summary["mean_similarity"] == 1.0
        # The shadow got the same request, as a stream with usage, under its own model name.
        for sent in env.shadow.requests:
            assert sent["model"] == "fake-shadow" and sent["stream"] is True
            assert sent["messages"] == [{"role": "user", "content": "hi"}]


async def test_comparison_fields_metering_and_texts(tmp_path: Path, store_url: str) -> None:
    async with environment(
        tmp_path,
        store_url,
        stable=FakeBehaviour(content=GOOD_JSON),
        shadow=FakeBehaviour(content=BROKEN_JSON),
    ) as env:
        logged = await create_member(
            env.http,
            "logged",
            {
                "log_prompts": True,
                "prompt_retention_days": 7,
                "budgets": {"daily_tokens": 100_000},
            },
        )
        quiet = await create_member(env.http, "quiet")
        await env.set_shadow(1.0)
        json_mode = {"response_format": {"type": "json_object"}}
        first = await env.chat(logged, **json_mode)
        second = await env.chat(quiet, stream=True, **json_mode)
        assert first.json()["choices"][0]["message"]["content"] == GOOD_JSON  # unchanged
        assert second.text.endswith("data: [DONE]\n\n")

        summary = await env.summary(2)
        assert summary["primary"]["json_valid_rate"] == 1.0
        assert summary["shadow"]["json_valid_rate"] == 0.0
        assert summary["difference_rate"] == 1.0
        assert 0 < summary["mean_similarity"] < 1
        assert summary["primary"]["refusal_rate"] == 0.0
        assert summary["primary"]["tool_calls_ok_rate"] is None

        page = await env.http.get(
            "/admin/models/chat/shadow/comparisons", params={"limit": 1}, headers=auth(ADMIN_KEY)
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["has_more"] is True
        rest = await env.http.get(
            "/admin/models/chat/shadow/comparisons",
            params={"after": body["last_id"]},
            headers=auth(ADMIN_KEY),
        )
        rows = {row["tenant_id"]: row for row in [*body["data"], *rest.json()["data"]]}
        assert set(rows) == {logged.tenant_id, quiet.tenant_id}
        kept, bare = rows[logged.tenant_id], rows[quiet.tenant_id]
        assert kept["request_id"] == first.headers["x-request-id"]
        assert kept["primary"]["json_valid"] is True and kept["shadow"]["json_valid"] is False
        assert kept["shadow"]["finish_reason"] == "stop"
        assert kept["shadow"]["completion_tokens"] == 7
        # Texts only under the tenant's logging policy, and redacted.
        assert kept["primary"]["text"].startswith('{"city": "Paris"')
        assert "bob@example.com" not in kept["primary"]["text"]
        assert "text" not in bare["primary"] and "text" not in bare["shadow"]
        # Texts go with the tenant's prompt retention, figures alone after 30 days.
        assert kept["expires_at"] - kept["created_at"] == pytest.approx(7 * 86400, abs=2)
        assert bare["expires_at"] - bare["created_at"] == pytest.approx(30 * 86400, abs=2)
        assert bare["primary"]["ttft_ms"] is not None  # the streamed primary's TTFT
        assert bare["primary"]["itl_ms"] is not None

        # Shadow usage is metered apart, priced at nothing, and not in the charged usage.
        ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
        records = await usage_records(env.http, [*ids, *(f"{rid}:shadow" for rid in ids)])
        shadows = [r for r in records if r["kind"] == "shadow"]
        assert {r["tenant_id"] for r in shadows} == {logged.tenant_id, quiet.tenant_id}
        assert all(r["cost_usd"] == 0 and r["replica"] == "u1" for r in shadows)
        assert all(r["model"] == "chat" for r in shadows)
        primary_tokens = sum(
            r["prompt_tokens"] + r["completion_tokens"]
            for r in records
            if r["kind"] == "live" and r["tenant_id"] == logged.tenant_id
        )
        rollup = await env.http.get(
            "/admin/usage", params={"tenant_id": logged.tenant_id}, headers=auth(ADMIN_KEY)
        )
        (day,) = rollup.json()["data"]
        assert day["requests"] == 1 and day["total_tokens"] == primary_tokens

        # The CLI reads the same summary from the store.
        config = tmp_path / "cli.yaml"
        config.write_text(yaml.safe_dump({"home": str(tmp_path), "store": {"url": store_url}}))
        env.gateway.access_log.flush()
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["shadow", "report", "chat", "--config", str(config)],
            env={"COLUMNS": "200", "TIDEGATE_CONFIG": None},
        )
        assert result.exit_code == 0, result.output
        assert "stable (primary) vs shadow (shadow), 2 requests" in result.stdout
        (json_line,) = [line for line in result.stdout.splitlines() if "JSON valid" in line]
        assert json_line.split()[-2:] == ["100.0%", "0.0%"]
        assert "outputs differ" in result.stdout


async def test_shadow_errors_never_reach_the_primary(tmp_path: Path, store_url: str) -> None:
    async with environment(
        tmp_path, store_url, stable=FakeBehaviour(), shadow=FakeBehaviour(fault="status_500")
    ) as env:
        key = await create_member(env.http, "acme")
        await env.set_shadow(1.0)
        for _ in range(6):  # more than the outlier detector's consecutive-failure threshold
            await env.chat(key)
        summary = await env.summary(6)
        assert summary["shadow"]["error_rate"] == 1.0
        assert summary["primary"]["error_rate"] == 0.0
        assert await env.shadow_count("error") == 6
        await env.set_shadow(0.0)
        await env.chat(key)
        assert len(env.shadow.requests) == 6  # off again


async def test_the_shadow_admin_routes_are_for_the_operator(tmp_path: Path, store_url: str) -> None:
    async with environment(
        tmp_path, store_url, stable=FakeBehaviour(), shadow=FakeBehaviour()
    ) as env:
        tenant = await env.http.post(
            "/admin/tenants", json={"name": "acme"}, headers=auth(ADMIN_KEY)
        )
        body = {"name": "acme admin", "role": "admin", "tenant_id": tenant.json()["id"]}
        tenant_admin = await env.http.post("/admin/keys", json=body, headers=auth(ADMIN_KEY))
        headers = auth(tenant_admin.json()["key"])
        for path in ("/admin/models/chat/shadow", "/admin/models/chat/shadow/comparisons"):
            refused = await env.http.get(path, headers=headers)
            assert refused.status_code == 403, refused.text
            assert (await env.http.get(path)).status_code == 401
        empty = await env.http.get("/admin/models/chat/shadow", headers=auth(ADMIN_KEY))
        assert empty.status_code == 200 and empty.json()["data"] == []
        bad = await env.http.get(
            "/admin/models/chat/shadow/comparisons",
            params={"limit": 0},
            headers=auth(ADMIN_KEY),
        )
        assert bad.status_code == 400


async def test_without_rollouts_the_routes_say_so(tmp_path: Path) -> None:
    fake = FakeUpstream(model="fake-model")
    await fake.start()
    try:
        config = Config(
            home=tmp_path,
            admin_key=ADMIN_KEY,
            server={"port": free_port()},
            engines={"replicas": 0},
            upstreams=[{"url": fake.base_url, "model": fake.model}],
            rollouts={"enabled": False},
        )
        await migrate(config.store_url)
        async with serve(config) as gateway, httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.get("/admin/models/fake-model/shadow", headers=auth(ADMIN_KEY))
            assert response.status_code == 404
            assert "rollouts.enabled" in response.json()["error"]["message"]
    finally:
        await fake.stop()
