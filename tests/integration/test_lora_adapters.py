"""LoRA adapters as models, end to end through a real gateway on loopback in front of two fake
vLLM-shaped upstreams (one pool, ``base``, two replicas) that load and serve LoRA adapters and
answer "[NAME] ..." for an adapter, so every answer says which adapter version produced it.

Adapters are added and removed at runtime through /admin/adapters; the gateway loads them on
each replica (and again on a replica that lost them), routes the adapter's public name to its
pool with the upstream ``model`` set to the version's LoRA name, lists it in /v1/models, and
meters, prices and counts it under its own name. Two versions of one adapter split traffic like
two pools.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from tests.support.gateway import ADMIN_KEY, auth, create_member, run_gateway, usage_records
from tidegate.commands.adapters import adapters_app
from tidegate.commands.traffic import traffic_app
from tidegate_testing.fake_server import FakeUpstream

BASE = "base"
V1 = "/adapters/support-bot-v1"
V2 = "/adapters/support-bot-v2"


@dataclass
class Env:
    http: httpx.AsyncClient
    fakes: list[FakeUpstream]
    home: Path

    async def add(self, body: Any, key: str = ADMIN_KEY) -> httpx.Response:
        return await self.http.post("/admin/adapters", json=body, headers=auth(key))

    async def chat(
        self, model: str, *, key: str = ADMIN_KEY, session: str | None = None
    ) -> httpx.Response:
        headers = auth(key)
        if session is not None:
            headers["x-tidegate-session-id"] = session
        return await self.http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with AsyncExitStack() as stack:
        fakes = [FakeUpstream(model=BASE), FakeUpstream(model=BASE)]
        for fake in fakes:
            await fake.start()
            stack.push_async_callback(fake.stop)
        gateway = await stack.enter_async_context(
            run_gateway(
                tmp_path,
                upstreams=fakes,
                sections={
                    "rollouts": {
                        "sync_interval_s": 0.2,
                        "controller_interval_s": 0.1,
                        "stats_flush_interval_s": 0.1,
                    },
                    "metering": {"flush_interval_s": 0.05},
                    "pricing": {
                        "support-bot": {"input_per_million": 1e4, "output_per_million": 2e6}
                    },
                },
            )
        )
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=gateway.url))
        yield Env(http, fakes, tmp_path)


def _text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


async def test_an_added_adapter_is_a_model_of_its_own(env: Env) -> None:
    added = await env.add({"name": "support-bot", "path": V1, "pool": BASE})
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["id"] == "support-bot" and body["pool"] == BASE
    assert [r["loaded"] for r in body["replicas"]] == [True, True]
    assert all(fake.adapters == {"support-bot": V1} for fake in env.fakes)

    models = await env.http.get("/v1/models", headers=auth(ADMIN_KEY))
    assert {"support-bot", BASE} <= {card["id"] for card in models.json()["data"]}

    adapted = await env.chat("support-bot")
    assert _text(adapted).startswith("[support-bot] ")
    assert adapted.headers["x-tidegate-backend"].startswith("support-bot/")
    assert not _text(await env.chat(BASE)).startswith("[")
    sent = [request["model"] for fake in env.fakes for request in fake.requests]
    assert sorted(sent) == [BASE, "support-bot"]

    # Usage rows and prices are the adapter's own.
    records = await usage_records(env.http, [adapted.headers["x-request-id"]])
    row = next(r for r in records if r["request_id"] == adapted.headers["x-request-id"])
    assert row["model"] == "support-bot"
    assert row["cost_usd"] > 0
    metrics = await env.http.get("/metrics", headers=auth(ADMIN_KEY))
    assert 'model="support-bot"' in metrics.text

    listed = await env.http.get("/admin/adapters", headers=auth(ADMIN_KEY))
    assert [a["id"] for a in listed.json()["data"]] == ["support-bot"]


async def test_tenant_allow_lists_name_adapters(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    base_only = await create_member(env.http, "acme", {"allowed_models": [BASE]})
    refused = await env.chat("support-bot", key=base_only.key)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["param"] == "model"
    assert (await env.chat(BASE, key=base_only.key)).status_code == 200
    listed = await env.http.get("/v1/models", headers=auth(base_only.key))
    assert [card["id"] for card in listed.json()["data"]] == [BASE]
    bot_only = await create_member(env.http, "bots", {"allowed_models": ["support-bot"]})
    assert _text(await env.chat("support-bot", key=bot_only.key)).startswith("[support-bot]")
    assert (await env.chat(BASE, key=bot_only.key)).status_code == 403


async def test_removing_an_adapter_unloads_it_everywhere(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    removed = await env.http.delete("/admin/adapters/support-bot", headers=auth(ADMIN_KEY))
    assert removed.status_code == 200, removed.text
    assert all(fake.adapters == {} for fake in env.fakes)
    gone = await env.chat("support-bot")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    again = await env.http.delete("/admin/adapters/support-bot", headers=auth(ADMIN_KEY))
    assert again.status_code == 404


async def test_a_replica_that_lost_its_adapters_gets_them_back(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    env.fakes[1].adapters.clear()  # as a restarted engine would
    deadline = time.monotonic() + 10
    while env.fakes[1].adapters != {"support-bot": V1}:
        assert time.monotonic() < deadline, "the sync did not load the adapter again"
        await asyncio.sleep(0.05)


async def test_two_versions_split_traffic_like_two_pools(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    v2 = await env.add({"name": "support-bot", "version": "v2", "path": V2})
    assert v2.status_code == 201, v2.text
    assert v2.json()["id"] == "support-bot@v2"
    # Before any split the first version serves: the second only gets what a split sends.
    assert _text(await env.chat("support-bot")).startswith("[support-bot] ")

    split = await env.http.put(
        "/admin/models/support-bot/traffic",
        json={"weights": {"support-bot": 50, "support-bot@v2": 50}},
        headers=auth(ADMIN_KEY),
    )
    assert split.status_code == 200, split.text
    seen: dict[str, set[str]] = {}
    for index in range(24):
        session = f"conversation-{index}"
        for _ in range(2):
            answer = await env.chat("support-bot", session=session)
            version = _text(answer).split("]")[0].lstrip("[")
            assert answer.headers["x-tidegate-backend"].split("/")[0] == version
            seen.setdefault(session, set()).add(version)
    assert all(len(versions) == 1 for versions in seen.values()), "a session moved"
    assert set().union(*seen.values()) == {"support-bot", "support-bot@v2"}

    versions = await env.http.get("/admin/models/support-bot/versions", headers=auth(ADMIN_KEY))
    assert {(v["pool"], v["source"]) for v in versions.json()["data"]} == {
        ("support-bot", V1),
        ("support-bot@v2", V2),
    }
    # Removing v2 sends its sessions back to v1.
    assert (
        await env.http.delete("/admin/adapters/support-bot@v2", headers=auth(ADMIN_KEY))
    ).status_code == 200
    for index in range(6):
        answer = await env.chat("support-bot", session=f"conversation-{index}")
        assert _text(answer).startswith("[support-bot] ")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "../etc", "path": V1}, "name"),
        ({"name": "x" * 10_000, "path": V1}, "name"),
        ({"name": "a/b", "path": V1}, "name"),
        ({"name": 5, "path": V1}, "name"),
        ({"name": ["x"], "path": V1}, "name"),
        ({"path": V1}, "name"),
        ({"name": "bot", "path": "/adapters/../../etc/passwd"}, "path"),
        ({"name": "bot", "path": "relative/dir"}, "path"),
        ({"name": "bot", "path": "/a\x00b"}, "path"),
        ({"name": "bot", "path": "/" + "a" * 5000}, "path"),
        ({"name": "bot", "path": 3}, "path"),
        ({"name": "bot"}, "path"),
        ({"name": "bot", "path": V1, "hub_id": "org/x"}, "path"),
        ({"name": "bot", "hub_id": "not a hub id"}, "hub_id"),
        ({"name": "bot", "path": V1, "version": "v 2"}, "version"),
        ({"name": "bot", "path": V1, "pool": "nope"}, "pool"),
        ({"name": "bot", "path": V1, "pool": 7}, "pool"),
        ({"name": "bot", "path": V1, "extra": 1}, "extra"),
        ({"name": BASE, "path": V1}, "name"),
    ],
)
async def test_hostile_adapter_bodies_are_clear_400s(
    env: Env, body: dict[str, Any], param: str
) -> None:
    response = await env.add(body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert len(response.text) < 2000
    assert all(fake.adapters == {} for fake in env.fakes)


async def test_an_adapter_the_engine_refuses_is_not_added(env: Env) -> None:
    env.fakes[1].refuse_paths.add("/adapters/broken")
    response = await env.add({"name": "broken", "path": "/adapters/broken"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "adapter_refused"
    assert "no adapter at /adapters/broken" in response.json()["error"]["message"]
    assert all("broken" not in fake.adapters for fake in env.fakes)
    assert (await env.chat("broken")).status_code == 404


async def test_only_the_operator_manages_adapters(env: Env) -> None:
    member = await create_member(env.http, "acme")
    tenant_admin = await env.http.post(
        "/admin/keys",
        json={"name": "acme admin", "role": "admin", "tenant_id": member.tenant_id},
        headers=auth(ADMIN_KEY),
    )
    admin_key = tenant_admin.json()["key"]
    for key in (admin_key, member.key):
        assert (await env.add({"name": "bot", "path": V1}, key=key)).status_code == 403
        listed = await env.http.get("/admin/adapters", headers=auth(key))
        assert listed.status_code == 403
        deleted = await env.http.delete("/admin/adapters/bot", headers=auth(key))
        assert deleted.status_code == 403
    assert (await env.http.get("/admin/adapters")).status_code == 401
    assert all(fake.adapters == {} for fake in env.fakes)
    huge = await env.http.delete("/admin/adapters/" + "x" * 5000, headers=auth(ADMIN_KEY))
    assert huge.status_code == 404 and len(huge.text) < 2000


def _cli(env: Env, *args: str, app: typer.Typer = adapters_app) -> tuple[int, str]:
    config = env.home / "cli.yaml"
    upstreams = [{"url": fake.base_url, "model": BASE} for fake in env.fakes]
    config.write_text(yaml.safe_dump({"engines": {"replicas": 0}, "upstreams": upstreams}))
    result = CliRunner().invoke(
        app,
        [*args, "--config", str(config)],
        env={"TIDEGATE_HOME": str(env.home), "TIDEGATE_CONFIG": None, "COLUMNS": "200"},  # type: ignore[dict-item]
    )
    return result.exit_code, result.output


async def test_the_cli_adds_what_running_gateways_then_serve(env: Env) -> None:
    code, out = await asyncio.to_thread(_cli, env, "add", "cli-bot", "--path", V1)
    assert code == 0, out
    deadline = time.monotonic() + 10
    while (answer := await env.chat("cli-bot")).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        await asyncio.sleep(0.05)
    assert _text(answer).startswith("[cli-bot] ")
    code, out = await asyncio.to_thread(_cli, env, "list", "--json")
    assert code == 0 and '"cli-bot"' in out
    # A second version, and the whole traffic moved to it, from the CLI alone.
    code, out = await asyncio.to_thread(
        _cli, env, "add", "cli-bot", "--version", "v2", "--path", V2
    )
    assert code == 0, out
    code, out = await asyncio.to_thread(
        _cli, env, "split", "cli-bot", "cli-bot@v2=100", "cli-bot=0", app=traffic_app
    )
    assert code == 0, out
    while not _text(answer := await env.chat("cli-bot")).startswith("[cli-bot@v2] "):
        assert time.monotonic() < deadline + 10, _text(answer)
        await asyncio.sleep(0.05)
    code, out = await asyncio.to_thread(_cli, env, "add", "x", "--path", "/a/../b")
    assert code != 0 and "'..'" in out
    code, out = await asyncio.to_thread(_cli, env, "remove", "cli-bot")
    assert code == 0, out
    while any("cli-bot" in fake.adapters for fake in env.fakes):
        assert time.monotonic() < deadline + 10, "the gateway did not unload it"
        await asyncio.sleep(0.05)
    # The name stays served while a version of it is left.
    assert _text(await env.chat("cli-bot")).startswith("[cli-bot@v2] ")
    code, out = await asyncio.to_thread(_cli, env, "remove", "cli-bot@v2")
    assert code == 0, out
    while (await env.chat("cli-bot")).status_code != 404:
        assert time.monotonic() < deadline + 20, "the gateway still serves cli-bot"
        await asyncio.sleep(0.05)


async def test_streams_of_an_adapter_carry_its_answer(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    body = {"model": "support-bot", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with env.http.stream(
        "POST", "/v1/chat/completions", json=body, headers=auth(ADMIN_KEY)
    ) as response:
        assert response.status_code == 200
        text = "".join([line async for line in response.aiter_lines()])
    assert '"content":"[support-bot] "' in text and "[DONE]" in text


async def test_requests_go_to_the_replicas_that_have_the_adapter(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    # Both have it: one adapter keeps to one replica while its load stays bounded.
    served = {(await env.chat("support-bot")).headers["x-tidegate-backend"] for _ in range(12)}
    assert len(served) == 1
    # A replica that lost it and cannot load it again is passed over.
    keeper = served.pop().split("/")[1]
    other = env.fakes[0] if keeper == "u1" else env.fakes[1]
    holder = env.fakes[1] if other is env.fakes[0] else env.fakes[0]
    holder.refuse_paths.add(V1)
    holder.adapters.clear()
    deadline = time.monotonic() + 10
    while True:
        answers = [await env.chat("support-bot") for _ in range(6)]
        backends = {a.headers.get("x-tidegate-backend", "") for a in answers}
        if all(a.status_code == 200 for a in answers) and backends == {
            f"support-bot/{'u0' if other is env.fakes[0] else 'u1'}"
        }:
            break
        assert time.monotonic() < deadline, backends
        await asyncio.sleep(0.1)


async def test_a_staged_rollout_between_two_adapter_versions(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    assert (await env.add({"name": "support-bot", "version": "v2", "path": V2})).status_code == 201
    started = await env.http.post(
        "/admin/rollouts",
        json={
            "model": "support-bot",
            "candidate_pool": "support-bot@v2",
            "steps": [50, 100],
            "hold_s": 0.5,
            "gates": {"min_samples": 5, "ttft_p95_ratio": 100.0, "itl_p95_ratio": 100.0},
        },
        headers=auth(ADMIN_KEY),
    )
    assert started.status_code == 201, started.text
    assert started.json()["stable_pool"] == "support-bot"
    rollout_id = started.json()["id"]
    # Neither version can go while the rollout runs.
    for version in ("support-bot", "support-bot@v2"):
        refused = await env.http.delete(f"/admin/adapters/{version}", headers=auth(ADMIN_KEY))
        assert refused.status_code == 400 and refused.json()["error"]["code"] == (
            "adapter_in_rollout"
        )
    deadline = time.monotonic() + 60
    index = 0
    while True:
        index += 1
        assert (await env.chat("support-bot", session=f"s-{index % 40}")).status_code == 200
        state = await env.http.get(f"/admin/rollouts/{rollout_id}", headers=auth(ADMIN_KEY))
        if state.json()["state"] != "running":
            break
        assert time.monotonic() < deadline, state.json()
    assert state.json()["state"] == "promoted", state.json()
    await asyncio.sleep(0.5)  # the split follows within one sync interval
    for session in range(8):
        answer = await env.chat("support-bot", session=f"after-{session}")
        assert _text(answer).startswith("[support-bot@v2] ")


async def test_an_added_adapter_is_validated_like_its_base_model(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    for model in (BASE, "support-bot"):
        response = await env.http.post(
            "/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 100_000,
            },
            headers=auth(ADMIN_KEY),
        )
        # The engine lists max_model_len 2048: the base's context bounds its adapter too.
        assert response.status_code == 400, (model, response.text)
        assert "2,048 tokens" in response.json()["error"]["message"]
    assert all(len(fake.requests) == 0 for fake in env.fakes)


async def test_shadow_traffic_to_a_second_adapter_version(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    assert (await env.add({"name": "support-bot", "version": "v2", "path": V2})).status_code == 201
    shadow = await env.http.put(
        "/admin/models/support-bot/traffic",
        json={"shadow": {"pool": "support-bot@v2", "sample": 1.0}},
        headers=auth(ADMIN_KEY),
    )
    assert shadow.status_code == 200, shadow.text
    assert _text(await env.chat("support-bot")).startswith("[support-bot] ")  # the client's
    deadline = time.monotonic() + 10
    while "support-bot@v2" not in [r["model"] for f in env.fakes for r in f.requests]:
        assert time.monotonic() < deadline, "no shadow request reached the second version"
        await asyncio.sleep(0.05)


async def test_pool_gauges_count_the_base_replicas_once(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    metrics = (await env.http.get("/metrics", headers=auth(ADMIN_KEY))).text
    ready = [
        line for line in metrics.splitlines() if line.startswith("tidegate_pool_ready_replicas")
    ]
    assert ready == ['tidegate_pool_ready_replicas{model="base"} 2.0'], ready


async def test_a_cost_budget_spends_at_the_adapters_own_price(env: Env) -> None:
    assert (await env.add({"name": "support-bot", "path": V1})).status_code == 201
    member = await create_member(env.http, "thrifty", {"budgets": {"daily_cost_usd": 20}})
    # The base model is unpriced here; the adapter costs 0.01 USD per prompt token, 2 per output
    # token.
    ids = []
    for _ in range(5):
        base = await env.chat(BASE, key=member.key)
        assert base.status_code == 200
        ids.append(base.headers["x-request-id"])
    statuses = []
    for _ in range(6):
        response = await env.http.post(
            "/v1/chat/completions",
            json={
                "model": "support-bot",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
            },
            headers=member.headers,
        )
        statuses.append(response.status_code)
        ids.append(response.headers["x-request-id"])
        if response.status_code != 200:
            assert response.json()["error"]["code"] == "budget_exceeded", response.text
            break
    assert statuses == [200, 200, 200, 429], statuses
    rows = [r for r in await usage_records(env.http, ids) if r["request_id"] in ids]
    served = {(r["model"], round(r["cost_usd"], 6)) for r in rows if r["status"] == 200}
    assert served == {(BASE, 0), ("support-bot", 6.01)}, served


async def test_an_engine_without_runtime_lora_refuses_with_a_hint(env: Env) -> None:
    for fake in env.fakes:
        fake.runtime_lora = False
    response = await env.add({"name": "support-bot", "path": V1})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "adapter_refused" and "engines.lora" in error["message"]
    assert (await env.chat("support-bot")).status_code == 404
