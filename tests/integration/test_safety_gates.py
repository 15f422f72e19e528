"""Content-safety gates through a real gateway on loopback: a real fake upstream, and a fake guard
model served as one of the gateway's own pools (safe / unsafe / slow / down). Refused inputs
never reach the upstream; output checks filter whole answers and cut streams in-band; every
decision is counted, metered and logged without the text; only the operator sets a tenant's
policy."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.gateway import (
    ADMIN_KEY,
    RunningGateway,
    auth,
    create_member,
    run_gateway,
    usage_records,
)
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

UNSAFE = "detonator"
"""The word the fake guard calls unsafe."""


def _policies(guard_url: str) -> dict[str, Any]:
    return {
        "policies": {
            # The model's own policy: every tenant's requests for fake-model.
            "base": {
                "input": [{"kind": "deny_list", "name": "banned", "terms": ["zorblax"]}],
                "output": [{"kind": "deny_list", "name": "leak", "terms": ["forbidden phrase"]}],
                "hold_chars": 8,
                "max_hold_ms": 100,
            },
            "strict": {
                "input": [
                    {"kind": "size", "max_chars": 4000},
                    {"kind": "regex", "name": "order-ids", "patterns": [r"ORD-\d{6}"]},
                    {"kind": "regex", "name": "nested", "patterns": [r"(a+)+$"], "timeout_ms": 5},
                    {"kind": "pii", "families": ["EMAIL", "CARD"]},
                    {"kind": "script", "allowed_scripts": ["Latin"]},
                    {
                        "kind": "classifier",
                        "name": "guard",
                        "pool": "guard-model",
                        "timeout_s": 0.5,
                    },
                ]
            },
            "lenient-guard": {
                "input": [
                    {
                        "kind": "classifier",
                        "name": "guard",
                        "pool": "guard-model",
                        "timeout_s": 0.3,
                        "on_error": "open",
                    }
                ]
            },
            "moderated": {
                "input": [
                    {
                        "kind": "classifier",
                        "name": "moderation",
                        "protocol": "openai_moderation",
                        "url": guard_url,
                        "categories": ["violence"],
                    }
                ]
            },
        },
        "models": {"fake-model": "base"},
    }


@pytest.fixture
async def guard() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream(
        model="guard-model", behaviour=FakeBehaviour(guard_unsafe_words=(UNSAFE,))
    )
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture
async def gated(
    tmp_path: Path, fake: FakeUpstream, guard: FakeUpstream
) -> AsyncIterator[RunningGateway]:
    sections = {"safety": _policies(f"{guard.base_url}/moderations")}
    async with run_gateway(tmp_path, upstreams=[fake, guard], sections=sections) as running:
        yield running


def chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], **fields}


def refusal(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "content_policy_violation"
    assert error["param"] is None
    return error


def undecided(response: httpx.Response) -> dict[str, Any]:
    """A guard that fails closed could not decide: the service's failure, retryable."""
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "service_unavailable"
    assert error["code"] == "content_policy_unavailable"
    return error


async def decisions(http: httpx.AsyncClient) -> dict[tuple[str, str, str, str], float]:
    text = (await http.get("/metrics", headers=auth(ADMIN_KEY))).text
    found = {}
    for match in re.finditer(
        r'^tidegate_safety_decisions_total\{check="([^"]+)",outcome="([^"]+)",policy="([^"]+)",'
        r'stage="([^"]+)"\} (\S+)$',
        text,
        re.M,
    ):
        check, outcome, policy, stage, value = match.groups()
        found[(policy, check, stage, outcome)] = float(value)
    return found


@pytest.mark.parametrize(
    ("content", "check", "says"),
    [
        ("please zorblax the thing", "banned", "denied term"),  # the model's policy
        ("where is order ORD-123456?", "order-ids", "denied pattern #1"),
        ("mail me at jane.doe@example.com", "pii", "(EMAIL)"),
        ("card 4111 1111 1111 1111 please", "pii", "(CARD)"),
        ("x" * 4001, "size", "longer than 4000 characters"),
        ("Привет, как дела? Расскажи мне что-нибудь интересное", "script", "allowed scripts"),
        (f"how do I build a {UNSAFE}", "guard", "unsafe (S1)"),
    ],
)
async def test_each_input_check_refuses_before_the_upstream(
    gated: RunningGateway, fake: FakeUpstream, content: str, check: str, says: str
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "acme", {"safety_policy": "strict"})
        for stream in (False, True):
            response = await http.post(
                "/v1/chat/completions", json=chat(content, stream=stream), headers=member.headers
            )
            error = refusal(response)
            policy = "base" if check == "banned" else "strict"
            assert f"Content policy '{policy}' refused this request" in error["message"]
            assert f"input check '{check}'" in error["message"] and says in error["message"]
            assert content[:12] not in error["message"]  # never the offending text
        counted = await decisions(http)
    assert fake.requests == []
    assert counted[("base" if check == "banned" else "strict", check, "input", "block")] == 2


async def test_a_clean_request_passes_every_check_and_is_counted(
    gated: RunningGateway, fake: FakeUpstream, guard: FakeUpstream
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "acme", {"safety_policy": "strict"})
        answer = await http.post("/v1/chat/completions", json=chat("hi"), headers=member.headers)
        assert answer.status_code == 200, answer.text
        counted = await decisions(http)
    assert len(fake.requests) == 1
    assert guard.requests[0]["messages"] == [{"role": "user", "content": "hi"}]
    for check in ("size", "order-ids", "nested", "pii", "script", "guard"):
        assert counted[("strict", check, "input", "pass")] == 1
    assert counted[("base", "banned", "input", "pass")] == 1
    assert counted[("strict", "guard", "input", "block")] == 0  # every series exists


async def test_a_pathological_input_for_a_nested_pattern_is_cut_short(
    gated: RunningGateway, fake: FakeUpstream
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "acme", {"safety_policy": "strict"})
        started = time.perf_counter()
        response = await http.post(
            "/v1/chat/completions", json=chat("a" * 3000 + "!"), headers=member.headers
        )
        elapsed = time.perf_counter() - started
        error = refusal(response)
        assert "input check 'nested' (regex) could not decide" in error["message"]
        assert "fails closed" in error["message"]
        counted = await decisions(http)
    # (a+)+$ on 3000 a's would run for ages; the search's time limit ends it.
    assert elapsed < 10
    assert counted[("strict", "nested", "input", "error_closed")] == 1
    assert fake.requests == []


async def test_a_slow_or_down_guard_fails_as_its_check_says(
    gated: RunningGateway, fake: FakeUpstream, guard: FakeUpstream
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        closed = await create_member(http, "acme", {"safety_policy": "strict"})
        open_ = await create_member(http, "beta", {"safety_policy": "lenient-guard"})
        guard.behaviour.first_token_delay_s = 1.0  # slow: past both checks' timeout_s
        error = undecided(
            await http.post("/v1/chat/completions", json=chat("hi"), headers=closed.headers)
        )
        assert "input check 'guard' (classifier) could not decide" in error["message"]
        assert "did not answer within 0.5 s" in error["message"]
        answer = await http.post("/v1/chat/completions", json=chat("hi"), headers=open_.headers)
        assert answer.status_code == 200, answer.text
        guard.behaviour.first_token_delay_s = 0.0
        guard.behaviour.fault = "status_500"  # down: the guard answers 500
        error = undecided(
            await http.post("/v1/chat/completions", json=chat("hi"), headers=closed.headers)
        )
        assert "guard pool 'guard-model' failed" in error["message"]
        guard.behaviour.fault = "none"
        await guard.stop()  # gone: connections refused
        error = undecided(
            await http.post("/v1/chat/completions", json=chat("hi"), headers=closed.headers)
        )
        assert "could not decide" in error["message"]
        answer = await http.post("/v1/chat/completions", json=chat("hi"), headers=open_.headers)
        assert answer.status_code == 200, answer.text
        counted = await decisions(http)
    assert counted[("strict", "guard", "input", "error_closed")] == 3
    assert counted[("lenient-guard", "guard", "input", "error_open")] == 2
    assert len(fake.requests) == 2  # only the fail-open tenant's requests


async def test_an_external_moderation_endpoint_refuses_flagged_text(
    gated: RunningGateway, fake: FakeUpstream, guard: FakeUpstream
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "acme", {"safety_policy": "moderated"})
        error = refusal(
            await http.post(
                "/v1/chat/completions", json=chat(f"a {UNSAFE} here"), headers=member.headers
            )
        )
        assert "the moderation endpoint flagged the text (violence)" in error["message"]
        answer = await http.post("/v1/chat/completions", json=chat("hi"), headers=member.headers)
        assert answer.status_code == 200, answer.text
    assert guard.requests[0] == {"input": f"a {UNSAFE} here"}
    assert len(fake.requests) == 1


def _sse(body: str) -> list[Any]:
    events = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


async def test_a_stream_is_cut_in_band_before_the_refused_text(
    gated: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.content = "Hello there, here is the " + "forbidden phrase" + " and more " * 30
    fake.behaviour.token_delay_s = 0.005
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "plain")
        body = chat("hi", stream=True, max_tokens=200)
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers=member.headers
        ) as response:
            assert response.status_code == 200
            text = (await response.aread()).decode()
        events = _sse(text)
        assert events[-1] == "[DONE]"
        error = events[-2]["error"]
        assert error["code"] == "content_policy_violation"
        assert (
            "Content policy 'base' stopped this answer: its output check 'leak'"
            in (error["message"])
        )
        delivered = "".join(
            e["choices"][0]["delta"].get("content") or ""
            for e in events
            if isinstance(e, dict) and e.get("choices")
        )
        assert delivered.startswith("Hello")  # what was checked before went out
        assert "forbidden" not in text  # the refused text never did, nor a piece of it
        assert await fake.wait_idle(5)  # the upstream exchange was closed
        [record] = await usage_records(http, [response.headers["x-request-id"]])
        counted = await decisions(http)
    assert fake.cancelled == 1
    assert record["outcome"] == "validation" and record["completion_tokens"] > 0
    assert counted[("base", "leak", "output", "block")] == 1
    [line] = [entry for entry in gated.access_lines() if entry["route"] == "chat"]
    assert line["safety"] == "output:base/leak"
    assert "forbidden" not in orjson.dumps(line).decode()


async def test_a_clean_stream_arrives_whole_and_early(
    gated: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.content = "All good here. " * 10
    fake.behaviour.first_token_delay_s = 0.0
    fake.behaviour.token_delay_s = 1.0  # far slower than max_hold_ms (100 ms)
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "plain")
        body = chat("hi", stream=True, max_tokens=4)
        started = time.perf_counter()
        first_at = None
        chunks = []
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers=member.headers
        ) as response:
            async for piece in response.aiter_text():
                if first_at is None and '"content":"All ' in piece:
                    first_at = time.perf_counter() - started
                chunks.append(piece)
    events = _sse("".join(chunks))
    assert events[-1] == "[DONE]" and not any("error" in e for e in events if isinstance(e, dict))
    delivered = "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )
    assert delivered == "All good here. A"  # max_tokens 4: four chunks of four characters
    # The first chunk is not held for the hold_chars the next chunk would bring (1 s later);
    # the margin is for a loaded test machine.
    assert first_at is not None and first_at < 0.7


async def test_a_refused_whole_answer_is_filtered(
    gated: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.content = "Sure: the forbidden phrase is here."
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "plain")
        answer = await http.post("/v1/chat/completions", json=chat("hi"), headers=member.headers)
        assert answer.status_code == 200, answer.text
        [choice] = answer.json()["choices"]
        assert choice["finish_reason"] == "content_filter"
        assert choice["message"]["content"] is None
        assert "output check 'leak' (deny_list)" in choice["message"]["refusal"]
        assert "forbidden" not in answer.text
        completion = await http.post(
            "/v1/completions",
            json={"model": "fake-model", "prompt": "hi"},
            headers=member.headers,
        )
        [choice] = completion.json()["choices"]
        assert choice["text"] == "" and choice["finish_reason"] == "content_filter"


async def test_a_refused_request_is_metered_and_logged_without_its_text(
    gated: RunningGateway,
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "acme", {"safety_policy": "strict"})
        response = await http.post(
            "/v1/chat/completions", json=chat("zorblax now"), headers=member.headers
        )
        refusal(response)
        [record] = await usage_records(http, [response.headers["x-request-id"]])
    assert record["status"] == 400 and record["outcome"] == "validation"
    assert record["prompt_tokens"] == 0 and record["model"] == "fake-model"
    line = gated.access_lines()[-1]
    assert line["safety"] == "input:base/banned" and line["status"] == 400
    assert "zorblax" not in orjson.dumps(line).decode()


async def test_only_the_operator_sets_a_tenants_policy(
    gated: RunningGateway, fake: FakeUpstream
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "acme", {"safety_policy": "strict"})
        created = await http.post(
            "/admin/keys",
            json={"name": "acme admin", "role": "admin", "tenant_id": member.tenant_id},
            headers=auth(ADMIN_KEY),
        )
        tenant_admin = auth(created.json()["key"])
        path = f"/admin/tenants/{member.tenant_id}"
        for weaker in (None, "lenient-guard", "moderated"):
            patch = {"settings": {"safety_policy": weaker}}
            denied = await http.patch(path, json=patch, headers=tenant_admin)
            assert denied.status_code == 403, denied.text
            assert denied.json()["error"]["param"] == "settings.safety_policy"
        # Hostile values are the operator's 400s too, never a 500.
        for bad in (123, ["strict"], {"name": "strict"}, "Strict Policy!", "x" * 100):
            response = await http.patch(
                path, json={"settings": {"safety_policy": bad}}, headers=auth(ADMIN_KEY)
            )
            assert response.status_code == 400, response.text
            assert "safety_policy" in response.json()["error"]["message"]
        tenant = await http.get(path, headers=auth(ADMIN_KEY))
        assert tenant.json()["settings"]["safety_policy"] == "strict"
        refusal(
            await http.post("/v1/chat/completions", json=chat("ORD-123456"), headers=member.headers)
        )
        # A policy this gateway does not define is refused when it is set, naming the defined
        # ones (a request under a policy that went missing later fails closed: a 503).
        patched = await http.patch(
            path, json={"settings": {"safety_policy": "not-defined"}}, headers=auth(ADMIN_KEY)
        )
        assert patched.status_code == 400, patched.text
        error = patched.json()["error"]
        assert error["code"] == "unknown_safety_policy"
        assert error["param"] == "settings.safety_policy"
        assert "'not-defined' is not a policy this gateway defines" in error["message"]
        assert "strict" in error["message"]
        # The operator lifts it: the tenant's requests pass again (the model's policy stays).
        lifted = await http.patch(
            path, json={"settings": {"safety_policy": None}}, headers=auth(ADMIN_KEY)
        )
        assert lifted.status_code == 200
        ok = await http.post(
            "/v1/chat/completions", json=chat("ORD-123456"), headers=member.headers
        )
        assert ok.status_code == 200, ok.text
        refusal(
            await http.post("/v1/chat/completions", json=chat("zorblax"), headers=member.headers)
        )
    assert len(fake.requests) == 1


async def test_a_huge_or_ill_typed_input_is_a_clear_400(
    gated: RunningGateway, fake: FakeUpstream
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "acme", {"safety_policy": "strict"})
        # 1 MB of text, under the 4 MiB body cap: the size check refuses it.
        huge = chat("word " * 200_000)
        response = await http.post("/v1/chat/completions", json=huge, headers=member.headers)
        assert "input check 'size'" in refusal(response)["message"]
        # Contents of the wrong type are the schema's 400 (before any check reads them).
        for content in (42, {"text": "x"}, ["zorblax"], [{"text": "zorblax"}]):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "fake-model", "messages": [{"role": "user", "content": content}]},
                headers=member.headers,
            )
            assert response.status_code == 400, response.text
            assert response.json()["error"]["type"] == "invalid_request_error"
        # Text in content parts, or split over messages and tool-call arguments, is checked.
        for messages in (
            [{"role": "user", "content": [{"type": "text", "text": "say ZORBLAX"}]}],
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"q": "zorblax"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "done"},
            ],
        ):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "fake-model", "messages": messages},
                headers=member.headers,
            )
            assert "input check 'banned'" in refusal(response)["message"]
    assert fake.requests == []


async def test_a_refused_prompt_is_kept_only_for_a_tenant_that_logs_prompts(
    tmp_path: Path, gated: RunningGateway
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        logged = await create_member(http, "logged", {"log_prompts": True})
        quiet = await create_member(http, "quiet")
        ids = []
        for member in (logged, quiet):
            response = await http.post(
                "/v1/chat/completions",
                json=chat("tell me about zorblax, mail jane.doe@example.com"),
                headers=member.headers,
            )
            refusal(response)
            ids.append(response.headers["x-request-id"])
        await usage_records(http, ids)
        deadline = time.monotonic() + 10
        while not (rows := _prompt_logs(tmp_path)):
            assert time.monotonic() < deadline, "no prompt log row"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the quiet tenant's row would be in by now
        rows = _prompt_logs(tmp_path)
    [(request_id, tenant_id, prompt, completion)] = rows
    assert request_id == ids[0] and tenant_id == logged.tenant_id
    assert "tell me about zorblax" in prompt  # the text, redacted like every logged prompt
    assert "jane.doe@example.com" not in prompt and completion == ""


def _prompt_logs(home: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(home / "tidegate.db") as db:
        return list(db.execute("SELECT request_id, tenant_id, prompt, completion FROM prompt_logs"))


async def test_an_upstream_failing_mid_stream_still_ends_in_band_through_the_gate(
    gated: RunningGateway, fake: FakeUpstream
) -> None:
    fake.behaviour.fault = "drop_mid_stream"
    fake.behaviour.fault_after_tokens = 3
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        member = await create_member(http, "plain")
        body = chat("hi", stream=True, max_tokens=16)
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers=member.headers
        ) as response:
            text = (await response.aread()).decode()
        events = _sse(text)
        assert events[-1] == "[DONE]"
        assert events[-2]["error"]["type"] == "upstream_error"
        delivered = "".join(
            e["choices"][0]["delta"].get("content") or ""
            for e in events
            if isinstance(e, dict) and e.get("choices")
        )
        assert delivered == "tok tok tok "  # the checked chunks before the failure went out
        [record] = await usage_records(http, [response.headers["x-request-id"]])
    assert record["outcome"] == "upstream"
