"""The scheduler through real HTTP: a real gateway (uvicorn on loopback) in front of a fake
upstream that serves 2 requests at once (max_concurrency 2) and streams tokens slowly.

Interactive requests overtake queued batch work; the upstream never has more than its capacity in
flight; a full queue is refused with 429 in well under 50 ms; a queue timeout or a deadline gives
503 with Retry-After; a client that goes away while queued frees its place at once; classes come
from the tenant tier, the key and the request header, and reach vLLM as `priority`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import ADMIN_KEY, MemberKey, RunningGateway, auth, run_gateway
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

CAPACITY = 2


def chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], **fields}


def sample(metrics: str, name: str, **labels: str) -> float:
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(
            part.split("=", 1) for part in line[len(name) + 1 : line.index("}")].split(",")
        )
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@dataclass
class Env:
    gateway: RunningGateway
    http: httpx.AsyncClient
    upstream: FakeUpstream

    async def member(
        self, name: str, tier: str = "interactive", key_settings: dict[str, Any] | None = None
    ) -> MemberKey:
        tenant = await self.http.post(
            "/admin/tenants", json={"name": name, "tier": tier}, headers=auth(ADMIN_KEY)
        )
        assert tenant.status_code == 201, tenant.text
        body = {"name": name, "role": "member", "tenant_id": tenant.json()["id"]}
        body["settings"] = key_settings
        key = await self.http.post("/admin/keys", json=body, headers=auth(ADMIN_KEY))
        assert key.status_code == 201, key.text
        return MemberKey(tenant.json()["id"], key.json()["id"], key.json()["key"])

    async def chat(
        self, key: MemberKey, content: str, headers: dict[str, str] | None = None, **fields: Any
    ) -> httpx.Response:
        return await self.http.post(
            "/v1/chat/completions",
            json=chat(content, max_tokens=50, **fields),
            headers={**key.headers, **(headers or {})},
        )

    async def busy(self, timeout_s: float = 5.0) -> None:
        """Until the upstream has its full capacity in flight."""
        deadline = time.monotonic() + timeout_s
        while self.upstream.active < CAPACITY:
            assert time.monotonic() < deadline, "the upstream never got busy"
            await asyncio.sleep(0.005)

    async def queued(self, klass: str, depth: int, timeout_s: float = 5.0) -> None:
        """Until the gateway's queue of ``klass`` holds ``depth`` requests."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = (
                await self.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            ).text
            if (
                sample(text, "tidegate_queue_depth", model="fake-model", **{"class": klass})
                == depth
            ):
                return
            assert time.monotonic() < deadline, f"the {klass} queue never held {depth}"
            await asyncio.sleep(0.01)


@asynccontextmanager
async def environment(
    tmp_path: Path,
    *,
    tokens: int = 5,
    delay_s: float = 0.3,
    scheduling: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
) -> AsyncIterator[Env]:
    # Each answer takes delay_s before its first token (the whole body, when not streamed).
    behaviour = FakeBehaviour(tokens=tokens, first_token_delay_s=delay_s, token_delay_s=0.005)
    fake = FakeUpstream(model="fake-model", behaviour=behaviour)
    await fake.start()
    try:
        async with (
            run_gateway(
                tmp_path,
                upstreams=[fake],
                upstream_options={"max_concurrency": CAPACITY, **(upstream or {})},
                sections={
                    "scheduling": {"interactive_reserve": 0.0, **(scheduling or {})},
                    "metering": {"flush_interval_s": 0.05},
                },
            ) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            yield Env(gateway, http, fake)
    finally:
        await fake.stop()


@asynccontextmanager
async def peak_in_flight(upstream: FakeUpstream) -> AsyncIterator[list[int]]:
    """Samples the upstream's in-flight count every millisecond; yields [peak]."""
    peak = [0]

    async def watch() -> None:
        while True:
            peak[0] = max(peak[0], upstream.active)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(watch())
    try:
        yield peak
    finally:
        task.cancel()


async def test_interactive_overtakes_queued_batch_and_capacity_holds(tmp_path: Path) -> None:
    # Each batch request holds its slot for 1 s: long enough for the interactive one to reach
    # the queue before a slot frees, even on a loaded host.
    async with environment(tmp_path, delay_s=1.0) as env:
        batch = await env.member("offline", tier="batch")
        chat_user = await env.member("chat", tier="interactive")
        async with peak_in_flight(env.upstream) as peak:
            batch_calls = [asyncio.create_task(env.chat(batch, f"batch {i}")) for i in range(6)]
            await env.queued("batch", 6 - CAPACITY)
            interactive = asyncio.create_task(env.chat(chat_user, "interactive"))
            responses = await asyncio.gather(*batch_calls, interactive)
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        order = [r["messages"][0]["content"] for r in env.upstream.requests]
        # The two batch requests in flight were first; the interactive one went next, ahead of
        # the four batch requests that had queued before it arrived.
        assert order.index("interactive") == CAPACITY, order
        assert peak[0] <= CAPACITY


async def test_the_upstream_never_sees_more_than_capacity(tmp_path: Path) -> None:
    async with environment(tmp_path, delay_s=0.03) as env:
        a = await env.member("a")
        b = await env.member("b", tier="batch")
        async with peak_in_flight(env.upstream) as peak:
            calls = [env.chat(a if i % 2 else b, f"r{i}", stream=i % 3 == 0) for i in range(24)]
            responses = await asyncio.gather(*calls)
        assert all(r.status_code == 200 for r in responses)
        assert 1 <= peak[0] <= CAPACITY
        metrics = (
            await env.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        assert sample(metrics, "tidegate_pool_in_flight_requests", model="fake-model") == 0
        assert (
            sample(
                metrics,
                "tidegate_queue_wait_seconds_count",
                model="fake-model",
                **{"class": "batch"},
            )
            == 12
        )


async def test_a_full_queue_is_refused_fast_with_retry_after(tmp_path: Path) -> None:
    scheduling = {"batch": {"max_queue_depth": 1, "queue_timeout_s": 30}}
    async with environment(tmp_path, delay_s=0.5, scheduling=scheduling) as env:
        batch = await env.member("offline", tier="batch")
        running = [asyncio.create_task(env.chat(batch, f"b{i}")) for i in range(3)]
        await env.queued("batch", 1)
        started = time.perf_counter()
        refused = await env.chat(batch, "one too many")
        elapsed = time.perf_counter() - started
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        assert elapsed < 0.05, f"429 took {elapsed * 1000:.1f} ms"
        assert all(r.status_code == 200 for r in await asyncio.gather(*running))
        metrics = (
            await env.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        labels = {"model": "fake-model", "class": "batch", "reason": "queue_full"}
        assert sample(metrics, "tidegate_queue_rejections_total", **labels) == 1


async def test_queue_timeout_and_deadline_give_503_with_retry_after(tmp_path: Path) -> None:
    scheduling = {"interactive": {"max_queue_depth": 8, "queue_timeout_s": 0.3}}
    async with environment(tmp_path, delay_s=1.0, scheduling=scheduling) as env:
        user = await env.member("chat")
        running = [asyncio.create_task(env.chat(user, f"slow {i}")) for i in range(CAPACITY)]
        await env.busy()
        started = time.perf_counter()
        timed_out = await env.chat(user, "waits too long")
        waited = time.perf_counter() - started
        assert timed_out.status_code == 503, timed_out.text
        assert timed_out.json()["error"]["code"] == "queue_timeout"
        assert int(timed_out.headers["retry-after"]) >= 1
        assert 0.25 <= waited < 1.0
        started = time.perf_counter()
        late = await env.chat(user, "in a hurry", headers={"x-tidegate-deadline-ms": "50"})
        assert late.status_code == 503 and late.json()["error"]["code"] == "deadline"
        assert time.perf_counter() - started < 0.25
        bad = await env.chat(user, "?", headers={"x-tidegate-deadline-ms": "soon"})
        assert bad.status_code == 400
        assert all(r.status_code == 200 for r in await asyncio.gather(*running))
        assert "waits too long" not in [r["messages"][0]["content"] for r in env.upstream.requests]


async def test_a_client_that_leaves_while_queued_frees_its_place(tmp_path: Path) -> None:
    scheduling = {"interactive": {"max_queue_depth": 1, "queue_timeout_s": 30}}
    async with environment(tmp_path, delay_s=0.5, scheduling=scheduling) as env:
        user = await env.member("chat")
        running = [asyncio.create_task(env.chat(user, f"slow {i}")) for i in range(CAPACITY)]
        await env.busy()
        async with httpx.AsyncClient(base_url=env.gateway.url, timeout=30) as other:
            leaving = asyncio.create_task(
                other.post(
                    "/v1/chat/completions", json=chat("leaves", max_tokens=5), headers=user.headers
                )
            )
            await env.queued("interactive", 1)
            leaving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leaving
        await env.queued("interactive", 0, timeout_s=1.0)
        # The place is free: the next request queues (it would get 429 otherwise) and is served.
        after = await env.chat(user, "after")
        assert after.status_code == 200, after.text
        assert all(r.status_code == 200 for r in await asyncio.gather(*running))
        assert "leaves" not in [r["messages"][0]["content"] for r in env.upstream.requests]
        metrics = (
            await env.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        assert sample(metrics, "tidegate_pool_in_flight_requests", model="fake-model") == 0


async def test_classes_reach_the_engine_as_vllm_priority(tmp_path: Path) -> None:
    async with environment(tmp_path, upstream={"priority_scheduling": True}) as env:
        user = await env.member("chat")
        demoted = await env.member("chat-batch-key", key_settings={"priority": "batch"})
        offline = await env.member("offline", tier="batch")
        assert (await env.chat(user, "plain")).status_code == 200
        lowered = await env.chat(user, "lowered", headers={"x-tidegate-priority": "batch"})
        assert lowered.status_code == 200
        assert (await env.chat(demoted, "key")).status_code == 200
        # A header may only lower the class: a batch tenant stays batch.
        raised = await env.chat(offline, "raised", headers={"x-tidegate-priority": "interactive"})
        assert raised.status_code == 200
        bad = await env.chat(user, "bad", headers={"x-tidegate-priority": "urgent"})
        assert bad.status_code == 400
        priorities = {r["messages"][0]["content"]: r["priority"] for r in env.upstream.requests}
        assert priorities == {"plain": 0, "lowered": 10, "key": 10, "raised": 10}


async def test_no_priority_field_for_upstreams_without_priority_scheduling(
    tmp_path: Path,
) -> None:
    async with environment(tmp_path) as env:
        user = await env.member("chat")
        assert (await env.chat(user, "plain")).status_code == 200
        assert "priority" not in env.upstream.requests[0]


async def test_slots_come_back_when_streams_end_early_or_fail(tmp_path: Path) -> None:
    async with environment(tmp_path, tokens=50, delay_s=0.0) as env:
        env.upstream.behaviour.token_delay_s = 0.02
        user = await env.member("chat")
        for _ in range(3):  # more times than there are slots: a leak would block the third
            body = chat("stream", max_tokens=50, stream=True)
            async with env.http.stream(
                "POST", "/v1/chat/completions", json=body, headers=user.headers
            ) as response:
                async for _ in response.aiter_bytes():
                    break  # the client goes away mid-stream
        env.upstream.behaviour.fault = "status_500"
        failed = await env.chat(user, "fails")
        assert failed.status_code >= 500
        env.upstream.behaviour.fault = "none"
        env.upstream.behaviour.token_delay_s = 0.0
        deadline = time.monotonic() + 5
        while True:
            metrics = (
                await env.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            ).text
            if sample(metrics, "tidegate_pool_in_flight_requests", model="fake-model") == 0:
                break
            assert time.monotonic() < deadline, "slots were not given back"
            await asyncio.sleep(0.01)
        ok = await asyncio.gather(*(env.chat(user, f"after {i}") for i in range(4)))
        assert all(r.status_code == 200 for r in ok)
        assert (
            sample(metrics, "tidegate_queue_depth", model="fake-model", **{"class": "interactive"})
            == 0
        )
