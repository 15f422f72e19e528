"""The gateway's protections through real HTTP: a real gateway (uvicorn on loopback) in front of
a real fake upstream, tenants and keys made through the admin API.

Rate limits, concurrency, budgets (also cut mid-stream), validation that never reaches the
upstream, exactly-once usage metering with prices, prompt logging with redaction, and the
per-tenant metrics.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.gateway import (
    ADMIN_KEY,
    MemberKey,
    RunningGateway,
    create_member,
    run_gateway,
    usage_records,
)
from tests.support.tiny_model import write_tiny_model
from tidegate.config import load_config
from tidegate.pipeline.prompt_bound import prompt_token_bound
from tidegate.pipeline.tokens import PromptCounter
from tidegate_testing.fake_server import FakeUpstream

BUNDLED = "smollm2-135m-instruct"
FAST_METERING = {"flush_interval_s": 0.05}


def chat(content: str = "hello world", **fields: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], **fields}


@dataclass
class Env:
    gateway: RunningGateway
    http: httpx.AsyncClient

    async def member(
        self, tenant: str, settings: dict[str, Any] | None = None, **kwargs: Any
    ) -> MemberKey:
        return await create_member(self.http, tenant, settings, **kwargs)

    async def chat(self, key: MemberKey, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post("/v1/chat/completions", json=body, headers=key.headers)


@asynccontextmanager
async def environment(
    tmp_path: Path, upstreams: list[FakeUpstream], **sections: Any
) -> AsyncIterator[Env]:
    upstream_options = sections.pop("upstream_options", None)
    sections.setdefault("metering", FAST_METERING)
    async with (
        run_gateway(
            tmp_path,
            upstreams=upstreams,
            upstream_options=upstream_options,
            sections=sections,
        ) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        yield Env(gateway, http)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    return error


# -- rate limits ----------------------------------------------------------------------------------


async def test_requests_per_minute_gives_429_with_retry_after_and_headers(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    async with environment(tmp_path, [fake]) as env:
        limits = {"requests_per_minute": 2, "tokens_per_minute": 1000}
        key = await env.member("rpm", {"limits": limits})
        first = await env.chat(key, chat(max_tokens=5))
        second = await env.chat(key, chat(max_tokens=5))
        for response, left in ((first, "1"), (second, "0")):
            assert response.status_code == 200, response.text
            h = response.headers
            assert h["x-ratelimit-limit-requests"] == "2"
            assert h["x-ratelimit-remaining-requests"] == left
            assert h["x-ratelimit-reset-requests"].endswith("s")
            assert h["x-ratelimit-limit-tokens"] == "1000"
            assert int(h["x-ratelimit-remaining-tokens"]) < 1000
            assert h["x-ratelimit-reset-tokens"].endswith("s")
        seen = len(fake.requests)
        refused = await env.chat(key, chat(max_tokens=5))
        error = assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert error["type"] == "rate_limit_error"
        assert "requests_per_minute" in error["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-limit-requests"] == "2"
        assert len(fake.requests) == seen


async def test_tokens_per_minute_refuses_what_does_not_fit(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 2
    async with environment(tmp_path, [fake]) as env:
        # No tokenizer: the prompt reserves its bound (87 tokens) plus max_tokens.
        assert prompt_token_bound(chat(), chat=True) == 87
        key = await env.member("tpm", {"limits": {"tokens_per_minute": 200}})
        ok = await env.chat(key, chat(max_tokens=60))
        assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-tokens"] == "200"
        assert "x-ratelimit-limit-requests" not in ok.headers  # no rpm limit: no rpm headers
        # The reservation (prompt + max_tokens) is over the limit: never fits, no Retry-After.
        never = await env.chat(key, chat(max_tokens=500))
        assert_openai_error(never, 429, "rate_limit_exceeded")
        assert "retry-after" not in never.headers
        assert len(fake.requests) == 1


async def test_concurrency_limit_of_one(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.behaviour.first_token_delay_s = 0.5
    async with environment(tmp_path, [fake]) as env:
        key = await env.member("conc", {"limits": {"concurrent_requests": 1}})
        slow = asyncio.create_task(env.chat(key, chat(max_tokens=2)))
        while fake.active == 0:
            await asyncio.sleep(0.005)
        second = await env.chat(key, chat(max_tokens=2))
        error = assert_openai_error(second, 429, "concurrency_limit")
        assert "concurrent_requests" in error["message"]
        assert int(second.headers["retry-after"]) >= 1
        assert (await slow).status_code == 200
        assert len(fake.requests) == 1
        fake.behaviour.first_token_delay_s = 0
        # The slot came back with the first request's end.
        assert (await env.chat(key, chat(max_tokens=2))).status_code == 200


async def test_key_limit_is_separate_from_tenant_limit(tmp_path: Path, fake: FakeUpstream) -> None:
    async with environment(tmp_path, [fake]) as env:
        tight = await env.member(
            "keyed",
            {"limits": {"requests_per_minute": 3}},
            key_settings={"limits": {"requests_per_minute": 1}},
        )
        loose = await env.member("keyed", tenant_id=tight.tenant_id)
        first = await env.chat(tight, chat(max_tokens=2))
        assert first.status_code == 200
        # The key's bucket binds (less left), so the headers describe it.
        assert first.headers["x-ratelimit-limit-requests"] == "1"
        refused = await env.chat(tight, chat(max_tokens=2))
        assert "API key" in assert_openai_error(refused, 429, "rate_limit_exceeded")["message"]
        # The other key of the tenant still has the tenant's remaining two requests.
        for left in ("1", "0"):
            ok = await env.chat(loose, chat(max_tokens=2))
            assert ok.status_code == 200
            assert ok.headers["x-ratelimit-limit-requests"] == "3"
            assert ok.headers["x-ratelimit-remaining-requests"] == left
        tenant_refused = await env.chat(loose, chat(max_tokens=2))
        message = assert_openai_error(tenant_refused, 429, "rate_limit_exceeded")["message"]
        assert "tenant" in message
        # Another tenant is untouched.
        other = await env.member("other", {"limits": {"requests_per_minute": 3}})
        assert (await env.chat(other, chat(max_tokens=2))).status_code == 200
        assert len(fake.requests) == 4


# -- budgets --------------------------------------------------------------------------------------


async def test_daily_token_budget_once_spent_gives_429(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.behaviour.tokens = 10
    # No tokenizer: admission needs the prompt's bound plus max_tokens; 12 are really used.
    budget = prompt_token_bound(chat("hello there"), chat=True) + 10
    async with environment(tmp_path, [fake]) as env:
        key = await env.member("budget", {"budgets": {"daily_tokens": budget}})
        first = await env.chat(key, chat("hello there", max_tokens=10))
        assert first.status_code == 200
        assert first.json()["usage"]["total_tokens"] == 12
        # The usage record is written after the reservation was settled.
        await usage_records(env.http, [first.headers["x-request-id"]])
        refused = await env.chat(key, chat("hello there", max_tokens=10))
        error = assert_openai_error(refused, 429, "budget_exceeded")
        assert "daily_tokens" in error["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert len(fake.requests) == 1


async def test_a_budget_given_at_runtime_counts_todays_earlier_spend(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 10
    async with environment(tmp_path, [fake]) as env:
        key = await env.member("late-budget")
        first = await env.chat(key, chat("hello there", max_tokens=10))
        assert first.json()["usage"]["total_tokens"] == 12
        await usage_records(env.http, [first.headers["x-request-id"]])
        # Room for one request's bound, less the 12 already spent.
        budget = prompt_token_bound(chat("hello there"), chat=True) + 10
        patched = await env.http.patch(
            f"/admin/tenants/{key.tenant_id}",
            json={"settings": {"budgets": {"daily_tokens": budget}}},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert patched.status_code == 200, patched.text
        # All 12 were spent before the budget existed (unseeded, the request would pass).
        refused = await env.chat(key, chat("hello there", max_tokens=10))
        assert_openai_error(refused, 429, "budget_exceeded")
        assert len(fake.requests) == 1


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def count_chat(model_dir: Path, messages: list[dict[str, Any]]) -> int:
    with ThreadPoolExecutor(max_workers=1) as pool:
        counter = PromptCounter.from_model_dir(model_dir, executor=pool)
        return len(counter.chat_token_ids(messages))


def sse_payloads(raw: bytes) -> list[Any]:
    payloads: list[Any] = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[len(b"data: ") :]
            payloads.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return payloads


@pytest.mark.parametrize("stream", [True, False])
async def test_what_the_budget_has_left_is_written_into_the_forwarded_request(
    tmp_path: Path, fake: FakeUpstream, tiny_dir: Path, stream: bool
) -> None:
    fake.behaviour.tokens = 20
    body = chat("hello world", max_tokens=20, stream=stream)
    prompt = count_chat(tiny_dir, body["messages"])
    async with environment(tmp_path, [fake], upstream_options={"tokenizer": str(tiny_dir)}) as env:
        # Room for the prompt and 5 completion tokens: admitted with a partial allowance.
        key = await env.member("capped", {"budgets": {"daily_tokens": prompt + 5}})
        response = await env.chat(key, body)
        assert response.status_code == 200
        # The engine is asked for no more than the budget covers, streaming or not.
        assert fake.requests[-1]["max_tokens"] == 5
        rid = response.headers["x-request-id"]
        [record] = [r for r in await usage_records(env.http, [rid]) if r["request_id"] == rid]
        assert record["completion_tokens"] == 5 and record["prompt_tokens"] <= prompt
        refused = await env.chat(key, chat("hello world", max_tokens=20))
        assert_openai_error(refused, 429, "budget_exceeded")
        assert len(fake.requests) == 1


async def test_stream_past_its_reservation_is_cut_in_band(
    tmp_path: Path, fake: FakeUpstream, tiny_dir: Path
) -> None:
    fake.behaviour.tokens = 20
    fake.behaviour.ignore_max_tokens = True  # an upstream that generates past max_tokens
    body = chat("hello world", max_tokens=20, stream=True)
    prompt = count_chat(tiny_dir, body["messages"])
    async with environment(tmp_path, [fake], upstream_options={"tokenizer": str(tiny_dir)}) as env:
        key = await env.member("cut", {"budgets": {"daily_tokens": prompt + 5}})
        response = await env.chat(key, body)
        assert response.status_code == 200
        events = sse_payloads(response.content)
        assert events[-1] == "[DONE]"
        error = events[-2]["error"]
        assert error["code"] == "budget_exceeded" and error["type"] == "rate_limit_error"
        contents = [
            e["choices"][0]["delta"].get("content")
            for e in events[:-2]
            if e["choices"] and e["choices"][0]["delta"].get("content")
        ]
        assert contents == ["tok "] * 5
        assert fake.requests[-1]["max_tokens"] == 5
        rid = response.headers["x-request-id"]
        [record] = [r for r in await usage_records(env.http, [rid]) if r["request_id"] == rid]
        assert record["completion_tokens"] == 5
        assert record["prompt_tokens"] + record["completion_tokens"] <= prompt + 5
        # Spent: the next request is refused before the upstream.
        refused = await env.chat(key, chat("hello world", max_tokens=20))
        assert_openai_error(refused, 429, "budget_exceeded")
        assert len(fake.requests) == 1


async def test_request_without_max_tokens_gets_what_the_budget_has_left(
    tmp_path: Path, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """No tokenizer, no context length, no max_tokens: the prompt reserves its bound and the
    completion the rest of the budget, written into the request; the settle refunds the rest."""
    fake.behaviour.tokens = 50
    fake.max_model_len = None  # an engine whose /v1/models lists no length
    body = chat("hello world")
    bound = prompt_token_bound(body, chat=True)
    async with environment(tmp_path, [fake]) as env:
        key = await env.member("unbounded", {"budgets": {"daily_tokens": bound + 30}})
        first = await env.chat(key, body)
        assert first.status_code == 200, first.text
        assert fake.requests[-1]["max_completion_tokens"] == 30
        usage = first.json()["usage"]
        assert usage == {"prompt_tokens": 2, "completion_tokens": 30, "total_tokens": 32}
        # 32 spent, bound - 2 left: not enough for the prompt's bound and one token.
        refused = await env.chat(key, body)
        error = assert_openai_error(refused, 429, "budget_exceeded")
        assert "one per byte" in error["message"]
        assert len(fake.requests) == 1
    # The operator hears once that the model's context length would cap such requests better.
    warnings = [r for r in caplog.records if "no known context length" in r.getMessage()]
    assert len(warnings) == 1 and "fake-model" in warnings[0].getMessage()


async def test_every_sequence_and_every_completion_field_is_capped(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    """n=2 on /v1/completions: each sequence gets half of what is left; on chat, both
    max_completion_tokens and max_tokens are lowered (engines read one or the other)."""
    async with environment(tmp_path, [fake]) as env:
        prompt = {"model": "fake-model", "prompt": "hello world", "n": 2}
        bound = prompt_token_bound(prompt, chat=False)
        key = await env.member("seqs", {"budgets": {"daily_tokens": bound + 40}})
        response = await env.http.post("/v1/completions", json=prompt, headers=key.headers)
        assert response.status_code == 200, response.text
        assert fake.requests[-1]["max_tokens"] == 20  # 40 left for 2 sequences
        both = chat(max_completion_tokens=500, max_tokens=400)
        other = await env.member("fields", {"budgets": {"daily_tokens": 200}})
        assert (await env.chat(other, both)).status_code == 200
        left = 200 - prompt_token_bound(both, chat=True)
        forwarded = fake.requests[-1]
        assert forwarded["max_completion_tokens"] == forwarded["max_tokens"] == left


# -- validation -----------------------------------------------------------------------------------


def _require_model(what: str) -> None:
    if os.environ.get("TIDEGATE_TEST_REQUIRE_MODEL") == "1":
        pytest.fail(f"{what} is missing; run `make engine` (TIDEGATE_TEST_REQUIRE_MODEL=1)")
    pytest.skip(f"{what} is missing; run `make engine`")


@pytest.fixture(params=["tiny", "bundled"])
def tokenizer_dir(request: pytest.FixtureRequest, tiny_dir: Path) -> Path:
    if request.param == "tiny":
        return tiny_dir
    directory = load_config().models_dir / BUNDLED
    if not (directory / "tokenizer.json").is_file():
        _require_model(f"the bundled model ({directory})")
    return directory


@pytest.fixture
async def other() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream(model="other-model")
    await upstream.start()
    yield upstream
    await upstream.stop()


async def test_validation_rejections_never_reach_the_upstream(
    tmp_path: Path, fake: FakeUpstream, other: FakeUpstream, tokenizer_dir: Path
) -> None:
    context = 64
    max_prompt = 40
    fake.behaviour.tokens = 3
    # A prompt of exactly max_prompt tokens, and one a token longer.
    words = "hello " * 200
    fits = ""
    for n in range(1, 200):
        text = " ".join(words.split()[:n])
        if count_chat(tokenizer_dir, [{"role": "user", "content": text}]) > max_prompt:
            break
        fits = text
    too_long = " ".join(words.split()[: len(fits.split()) + 1])
    fits_count = count_chat(tokenizer_dir, [{"role": "user", "content": fits}])
    assert fits_count <= max_prompt < fits_count + 3

    async with environment(
        tmp_path,
        [fake, other],
        upstream_options={"tokenizer": str(tokenizer_dir), "context_length": context},
        validation={"max_n": 2, "max_messages": 4, "max_top_logprobs": 5},
    ) as env:
        settings = {
            "max_prompt_tokens": max_prompt,
            "default_max_tokens": 7,
            "max_tokens_limit": 30,
            "allowed_models": ["fake-model"],
        }
        key = await env.member("valid", settings)

        async def rejected(body: dict[str, Any], status: int, code: str | None, param: str) -> None:
            before = (len(fake.requests), len(other.requests))
            response = await env.chat(key, body)
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert error["param"] == param and error["message"], error
            if code is not None:
                assert error["code"] == code, error
            assert (len(fake.requests), len(other.requests)) == before, body

        await rejected(chat(too_long, max_tokens=1), 400, "prompt_too_long", "messages")
        room = context - fits_count
        await rejected(
            chat(fits, max_tokens=room + 1), 400, "context_length_exceeded", "max_tokens"
        )
        await rejected(chat(n=3), 400, "parameter_over_limit", "n")
        many = chat()
        many["messages"] = [{"role": "user", "content": "hello"}] * 5
        await rejected(many, 400, "too_many_messages", "messages")
        await rejected(
            chat(logprobs=True, top_logprobs=6), 400, "parameter_over_limit", "top_logprobs"
        )
        await rejected(chat(max_tokens=31), 400, "parameter_over_limit", "max_tokens")
        await rejected(chat(stop=["a", "b", "c", "d", "e"]), 400, "parameter_over_limit", "stop")
        await rejected({**chat(), "model": "other-model"}, 403, "model_not_allowed", "model")
        assert other.requests == [] and fake.requests == []

        # What fits goes through, normalised.
        ok = await env.chat(key, chat(fits, max_tokens=room))
        assert ok.status_code == 200, ok.text
        defaulted = await env.chat(key, chat(stop="x"))
        assert defaulted.status_code == 200, defaulted.text
        assert fake.requests[-1]["max_completion_tokens"] == 7  # the tenant's default
        assert fake.requests[-1]["stop"] == ["x"]
        deduped = await env.chat(key, chat(stop=["a", "b", "a", "b", "c", "d"], max_tokens=3))
        assert deduped.status_code == 200, deduped.text
        assert fake.requests[-1]["stop"] == ["a", "b", "c", "d"]
        plain = await env.http.post(
            "/v1/completions",
            json={"model": "fake-model", "prompt": "hello world"},
            headers=key.headers,
        )
        assert plain.status_code == 200, plain.text
        assert fake.requests[-1]["max_tokens"] == 7
        assert len(fake.requests) == 4

        # A key can narrow its tenant's models further.
        both = await env.member("both", {"allowed_models": ["fake-model", "other-model"]})
        narrow = await env.member(
            "both", tenant_id=both.tenant_id, key_settings={"allowed_models": ["other-model"]}
        )
        refused = await env.chat(narrow, chat())
        assert_openai_error(refused, 403, "model_not_allowed")
        assert len(fake.requests) == 4
        allowed = await env.chat(narrow, {**chat(), "model": "other-model"})
        assert allowed.status_code == 200 and len(other.requests) == 1
        assert (await env.chat(both, chat())).status_code == 200


# -- usage metering -------------------------------------------------------------------------------


async def test_one_usage_record_per_request_with_cost(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.behaviour.tokens = 4
    pricing = {"fake-model": {"input_per_million": 1_000_000, "output_per_million": 2_000_000}}
    async with environment(tmp_path, [fake], pricing=pricing) as env:
        key = await env.member("metered", {"limits": {"requests_per_minute": 2}})
        ok = await env.chat(key, chat("one two three", max_tokens=4))
        streamed = await env.chat(key, chat("one two three", max_tokens=4, stream=True))
        limited = await env.chat(key, chat(max_tokens=4))
        invalid = await env.chat(key, chat(n=0))
        assert [r.status_code for r in (ok, streamed, limited, invalid)] == [200, 200, 429, 400]
        rids = [r.headers["x-request-id"] for r in (ok, streamed, limited, invalid)]
        assert len(set(rids)) == 4
        records = await usage_records(env.http, rids)
        by_id = {r["request_id"]: r for r in records}
        assert len(records) == len(by_id) == 4  # exactly one per request, nothing else
        for rid in rids[:2]:
            record = by_id[rid]
            assert (record["prompt_tokens"], record["completion_tokens"]) == (3, 4)
            assert record["cost_usd"] == pytest.approx(3 * 1.0 + 4 * 2.0)
            assert record["outcome"] == "ok" and record["status"] == 200
            assert record["tenant_id"] == key.tenant_id and record["key_id"] == key.key_id
            assert record["model"] == "fake-model" and record["replica"] == "u0"
            assert record["duration_ms"] > 0
        # Time to first token is a streaming measure.
        ttft = by_id[rids[1]]["ttft_ms"]
        assert ttft is not None and 0 < ttft <= by_id[rids[1]]["duration_ms"]
        assert by_id[rids[2]]["status"] == 429 and by_id[rids[2]]["outcome"] == "overload"
        assert by_id[rids[3]]["status"] == 400 and by_id[rids[3]]["outcome"] == "validation"
        for rid in rids[2:]:
            assert by_id[rid]["completion_tokens"] == 0 and by_id[rid]["cost_usd"] == 0
        # Still one each a moment later (no late duplicates).
        await asyncio.sleep(0.2)
        again = await usage_records(env.http, rids)
        assert sorted(r["request_id"] for r in again) == sorted(rids)


async def test_client_disconnect_mid_stream_yields_one_client_closed_record(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.behaviour.tokens = 1000
    fake.behaviour.token_delay_s = 0.01
    async with environment(tmp_path, [fake]) as env:
        key = await env.member("leaver", {"limits": {"concurrent_requests": 1}})
        async with httpx.AsyncClient(base_url=env.gateway.url, timeout=30) as leaving:
            async with leaving.stream(
                "POST", "/v1/chat/completions", json=chat(stream=True), headers=key.headers
            ) as response:
                rid = response.headers["x-request-id"]
                received = 0
                async for chunk in response.aiter_bytes():
                    received += chunk.count(b"tok ")
                    if received >= 3:
                        break
        assert await fake.wait_idle(5)
        assert fake.cancelled == 1
        records = await usage_records(env.http, [rid])
        assert [r["request_id"] for r in records] == [rid]
        [record] = records
        assert record["outcome"] == "client_closed" and record["status"] == 499
        assert 3 <= record["completion_tokens"] < 1000
        # The concurrency slot was given back.
        fake.behaviour.tokens = 2
        assert (await env.chat(key, chat())).status_code == 200


# -- prompt logging -------------------------------------------------------------------------------


def prompt_log_rows(home: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(home / "tidegate.db") as db:
        return list(db.execute("SELECT request_id, tenant_id, prompt, completion FROM prompt_logs"))


async def test_prompt_logging_redacts_and_is_per_tenant(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.behaviour.tokens = 2
    secret = "sk-" + "Zq9" * 10
    prompt = (
        f"mail jane.doe@example.com, card 4111 1111 1111 1111, key {secret}, "
        "and the weather in Paris"
    )
    async with environment(tmp_path, [fake]) as env:
        logged = await env.member("logged", {"log_prompts": True})
        quiet = await env.member("quiet")
        first = await env.chat(logged, chat(prompt))
        second = await env.chat(quiet, chat(prompt))
        assert first.status_code == second.status_code == 200
        rids = [first.headers["x-request-id"], second.headers["x-request-id"]]
        await usage_records(env.http, rids)
        deadline = asyncio.get_running_loop().time() + 10
        while not (rows := prompt_log_rows(tmp_path)):
            assert asyncio.get_running_loop().time() < deadline, "no prompt log row"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a second row (the quiet tenant's) would be in by now
        rows = prompt_log_rows(tmp_path)
    [(rid, tenant_id, text, completion)] = rows
    assert rid == rids[0] and tenant_id == logged.tenant_id
    for leaked in ("jane.doe@example.com", "4111 1111 1111 1111", secret):
        assert leaked not in text
    assert "the weather in Paris" in text and text.startswith("user: ")
    assert completion == "tok tok "


# -- metrics --------------------------------------------------------------------------------------


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


async def test_per_tenant_metrics(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.behaviour.tokens = 3
    async with environment(tmp_path, [fake]) as env:
        key = await env.member("team-metrics", {"limits": {"requests_per_minute": 2}})
        for _ in range(3):
            await env.chat(key, chat("a b", max_tokens=3))
        await env.chat(key, chat(n=0))
        unknown = await env.http.post(
            "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer tg-nope"}
        )
        assert unknown.status_code == 401
        text = (
            await env.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
    tenant = "team-metrics"
    assert sample(text, "tidegate_tenant_requests_total", tenant=tenant, outcome="ok") == 2
    assert sample(text, "tidegate_tenant_requests_total", tenant=tenant, outcome="overload") == 1
    assert sample(text, "tidegate_tenant_rejections_total", tenant=tenant, reason="rate_limit") == 1
    assert sample(text, "tidegate_tenant_rejections_total", tenant=tenant, reason="validation") == 1
    assert sample(text, "tidegate_tenant_tokens_total", tenant=tenant, kind="completion") == 6
    assert sample(text, "tidegate_tenant_tokens_total", tenant=tenant, kind="prompt") == 4
    assert sample(text, "tidegate_tenant_rejections_total", tenant="none", reason="auth") == 1
