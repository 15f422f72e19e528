"""Cost- and time-aware routing through real HTTP: a real gateway on loopback in front of two
fake upstream pools, "local" (self-hosted, priced by the accelerator hour over its throughput)
and "managed" (an API priced per token), on a fake wall clock.

In working hours (Berlin) a rule sends each request to the cheaper of the two whose predicted
TTFT meets the interactive target; outside them the route's default chain (the managed API)
serves. Every answer and usage row says which pool served and why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import ADMIN_KEY, auth, free_port, serve, usage_records
from tests.support.tiny_model import write_tiny_model
from tidegate.config import Config
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

BACKEND = "x-tidegate-backend"
REASON = "x-tidegate-route-reason"
LONG_PROMPT = "hello " * 300  # the managed API charges these 300 tokens; local does not
SHORT_PROMPT = "hi"
LOCAL_DELAY_S = 0.6
"""Each local answer takes this long: the scheduler learns it as the pool's hold time."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def set(self, year: int, month: int, day: int, hour: int, minute: int) -> None:
        """To this UTC time."""
        self.now = datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


@dataclass
class Env:
    http: httpx.AsyncClient
    clock: FakeClock
    fakes: dict[str, FakeUpstream]

    async def chat(self, content: str, max_tokens: int, model: str = "chat") -> httpx.Response:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
        }
        response = await self.http.post("/v1/chat/completions", json=body, headers=auth(ADMIN_KEY))
        assert response.status_code == 200, response.text
        return response


def served(response: httpx.Response) -> tuple[str, str]:
    return response.headers[BACKEND].split("/")[0], response.headers[REASON]


@asynccontextmanager
async def environment(tmp_path: Path) -> AsyncIterator[Env]:
    tokenizer = write_tiny_model(tmp_path / "tiny")
    async with AsyncExitStack() as stack:
        fakes = {
            "local": FakeUpstream(
                model="fake-local", behaviour=FakeBehaviour(first_token_delay_s=LOCAL_DELAY_S)
            ),
            "managed": FakeUpstream(model="fake-managed"),
        }
        for fake in fakes.values():
            await fake.start()
            stack.push_async_callback(fake.stop)
        common = {"tokenizer": str(tokenizer)}
        config = Config(
            home=tmp_path,
            admin_key=ADMIN_KEY,
            server={"port": free_port()},
            engines={"replicas": 0},
            upstreams=[
                {
                    "url": fakes["local"].base_url,
                    "model": "fake-local",
                    "pool": "local",
                    "max_concurrency": 1,
                    **common,
                },
                {"url": fakes["managed"].base_url, "model": "fake-managed", "pool": "managed"},
                # Nothing listens here: every connection is refused, so the next pool serves.
                {"url": f"http://127.0.0.1:{free_port()}/v1", "model": "down", "pool": "down"},
            ],
            pricing={"managed-api": {"input_per_million": 0.15, "output_per_million": 0.6}},
            scheduling={"interactive_reserve": 0.0, "interactive": {"ttft_target_s": 0.5}},
            routing={
                "pools": [
                    # 3.6 USD an hour at 1000 output tokens/s: 1 USD per million output tokens.
                    {
                        "name": "local",
                        "cost": {"accelerator_per_hour": 3.6, "output_throughput": 1000},
                        "expected_ttft_s": 0.05,
                    },
                    {
                        "name": "managed",
                        "cost": {"pricing_model": "managed-api"},
                        "expected_ttft_s": 0.3,
                    },
                ],
                "routes": [
                    {
                        "model": "chat",
                        "pools": ["managed"],
                        "rules": [
                            {
                                "pools": ["local", "managed"],
                                "window": {"cron": "* 8-19 * * 1-5", "timezone": "Europe/Berlin"},
                                "select": "cheapest",
                            }
                        ],
                    },
                    {"model": "chat-backup", "pools": ["down", "managed"]},
                ],
            },
            metering={"flush_interval_s": 0.05},
        )
        clock = FakeClock()
        await stack.enter_async_context(serve(config, clock=clock))
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.server.port}", timeout=30)
        )
        yield Env(http, clock, fakes)


async def test_the_route_moves_between_local_and_managed_by_time_and_cost(
    tmp_path: Path,
) -> None:
    async with environment(tmp_path) as env:
        rids: dict[str, tuple[str, str]] = {}

        async def check(content: str, max_tokens: int, pool: str, reason: str) -> None:
            response = await env.chat(content, max_tokens)
            assert served(response) == (pool, reason), (env.clock.now, content[:10], max_tokens)
            assert response.json()["model"] == f"fake-{pool}"
            rids[response.headers["x-request-id"]] = (pool, reason)

        # Wednesday 10:00 in Berlin (09:00 UTC): inside the window, the cheaper pool serves.
        env.clock.set(2026, 12, 2, 9, 0)
        # A long prompt and a short answer: 8 output tokens locally (8e-6 USD) beat 300 prompt
        # and 8 output tokens on the API (5e-5 USD).
        await check(LONG_PROMPT, 8, "local", "time_window:0/cheapest")
        # A short prompt and a long answer: 200 tokens at 0.6 USD/M on the API beat 1 USD/M.
        await check(SHORT_PROMPT, 200, "managed", "time_window:0/cheapest")
        # Wednesday 21:00 in Berlin: outside the window the default chain (the API) serves
        # even the request local would have done cheaper.
        env.clock.set(2026, 12, 2, 20, 0)
        await check(LONG_PROMPT, 8, "managed", "default")
        # Saturday noon: not a weekday.
        env.clock.set(2026, 12, 5, 11, 0)
        await check(LONG_PROMPT, 8, "managed", "default")
        # Back in working hours (Monday 08:00 Berlin), the same request goes local again.
        env.clock.set(2026, 12, 7, 7, 0)
        await check(LONG_PROMPT, 8, "local", "time_window:0/cheapest")

        # Local's only slot is taken: its predicted TTFT (a queue wait of one hold time,
        # LOCAL_DELAY_S, plus 0.05 s) breaks the 0.5 s target, so the dearer API serves.
        busy = asyncio.create_task(env.chat(LONG_PROMPT, 8))
        deadline = time.monotonic() + 5
        while env.fakes["local"].active != 1:
            assert time.monotonic() < deadline, "the local request never started"
            await asyncio.sleep(0.005)
        await check(LONG_PROMPT, 8, "managed", "time_window:0/only_meeting_target")
        assert served(await busy) == ("local", "time_window:0/cheapest")

        # A pool passed over before the first byte: the next one serves, and says so.
        backup = await env.chat(SHORT_PROMPT, 8, model="chat-backup")
        assert served(backup) == ("managed", "default/fallback")
        rids[backup.headers["x-request-id"]] = ("managed", "default/fallback")

        records = {r["request_id"]: r for r in await usage_records(env.http, list(rids))}
        assert {rid: (records[rid]["pool"], records[rid]["route_reason"]) for rid in rids} == rids


@pytest.mark.parametrize("stream", [True])
async def test_a_streamed_answer_says_why_too(tmp_path: Path, stream: bool) -> None:
    async with environment(tmp_path) as env:
        env.clock.set(2026, 12, 2, 9, 0)
        body: dict[str, Any] = {
            "model": "chat",
            "messages": [{"role": "user", "content": SHORT_PROMPT}],
            "max_tokens": 200,
            "stream": stream,
        }
        async with env.http.stream(
            "POST", "/v1/chat/completions", json=body, headers=auth(ADMIN_KEY)
        ) as response:
            assert response.status_code == 200
            assert served(response) == ("managed", "time_window:0/cheapest")
            assert [line async for line in response.aiter_lines() if line][-1] == "data: [DONE]"
