"""Traffic splits, rollback and versions through the /admin API of real gateways on loopback,
two fake upstream pools behind one public model name.

Every answer names the pool that served it (x-tidegate-backend: POOL/REPLICA), so the tests
check where each sticky session landed against the split's own hash, in the gateway that took
the change (at once) and in a second gateway sharing the store (within its sync interval).
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
import pytest

from tests.integration.test_scheduling import sample
from tests.support.gateway import ADMIN_KEY, RunningGateway, auth, free_port, run_gateway, serve
from tidegate.config import Config
from tidegate.routing.split import TrafficSplit
from tidegate.store.models import SYSTEM_TENANT_ID
from tidegate_testing.fake_server import FakeUpstream

MODEL = "chat"
SESSIONS = [f"conversation-{i}" for i in range(24)]
SYNC_S = 0.2
APPLY_BOUND_S = 10.0
"""Generous: the second gateway must follow within its 0.2 s interval on an idle machine."""


@dataclass
class Env:
    gateways: list[RunningGateway]
    clients: list[httpx.AsyncClient]
    fakes: dict[str, FakeUpstream]

    async def admin(
        self, method: str, path: str, body: Any = None, *, key: str = ADMIN_KEY, on: int = 0
    ) -> httpx.Response:
        return await self.clients[on].request(
            method, f"/admin/models/{MODEL}{path}", json=body, headers=auth(key)
        )

    async def pools(self, on: int = 0) -> dict[str, str]:
        """The pool each session's requests landed on in gateway ``on`` (asserting that every
        request of a session landed on one pool)."""
        found: dict[str, str] = {}
        for session in SESSIONS:
            seen = set()
            for _ in range(2):
                response = await self.clients[on].post(
                    "/v1/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                    headers={**auth(ADMIN_KEY), "x-tidegate-session-id": session},
                )
                assert response.status_code == 200, response.text
                seen.add(response.headers["x-tidegate-backend"].split("/")[0])
            assert len(seen) == 1, f"session {session} landed on {seen}"
            found[session] = seen.pop()
        return found

    async def until_pools(self, expected: dict[str, str], on: int) -> float:
        started = time.monotonic()
        while (found := await self._settled_pools(on)) != expected:
            waited = time.monotonic() - started
            assert waited < APPLY_BOUND_S, f"gateway {on} still routes {found}"
            await asyncio.sleep(SYNC_S / 4)
        return time.monotonic() - started

    async def _settled_pools(self, on: int) -> dict[str, str] | None:
        """``pools``, or None while a change is being applied (a session's two requests may
        straddle the moment the gateway's sync applies it)."""
        try:
            return await self.pools(on)
        except AssertionError:
            return None


def expected_pools(weights: list[tuple[str, float]]) -> dict[str, str]:
    split = TrafficSplit(weights=tuple(weights))
    # Session ids are scoped by tenant: these requests come with the operator's key.
    return {s: split.choose(f"s:{SYSTEM_TENANT_ID}:{s}") for s in SESSIONS}


def gateway_config(home: Path, store_url: str, fakes: dict[str, FakeUpstream]) -> Config:
    return Config(
        home=home,
        admin_key=ADMIN_KEY,
        server={"port": free_port(), "idle_timeout_s": 5.0},
        store={"url": store_url},
        engines={"replicas": 0},
        upstreams=[
            {"url": fake.base_url, "model": MODEL, "pool": pool, "upstream_model": fake.model}
            for pool, fake in fakes.items()
        ],
        rollouts={"sync_interval_s": SYNC_S, "keep_versions": 3},
        metering={"flush_interval_s": 0.05},
    )


@asynccontextmanager
async def environment(tmp_path: Path, store_url: str, count: int) -> AsyncIterator[Env]:
    async with AsyncExitStack() as stack:
        fakes: dict[str, FakeUpstream] = {}
        for pool in ("stable", "candidate"):
            fake = FakeUpstream(model=f"fake-{pool}")
            await fake.start()
            stack.push_async_callback(fake.stop)
            fakes[pool] = fake
        gateways, clients = [], []
        for index in range(count):
            config = gateway_config(tmp_path / f"gw{index}", store_url, fakes)
            gateway = await stack.enter_async_context(serve(config))
            client = httpx.AsyncClient(base_url=gateway.url, timeout=30)
            await stack.enter_async_context(client)
            gateways.append(gateway)
            clients.append(client)
        yield Env(gateways, clients, fakes)


@pytest.fixture
def shared_store(tmp_path: Path, store_url: str) -> str:
    return store_url


async def test_split_and_rollback_reach_every_gateway(tmp_path: Path, shared_store: str) -> None:
    async with environment(tmp_path, shared_store, count=2) as env:
        before = await env.admin("GET", "/traffic")
        assert before.status_code == 200, before.text
        assert before.json()["weights"] == [] and before.json()["stable_pool"] == "stable"
        assert set((await env.pools(0)).values()) == {"stable"}

        weights = [("candidate", 50.0), ("stable", 50.0)]
        changed = await env.admin("PUT", "/traffic", {"weights": {"candidate": 50, "stable": 50}})
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert body["object"] == "model.traffic" and body["weights"] == [list(w) for w in weights]
        assert body["shares"] == {"candidate": 0.5, "stable": 0.5}
        expected = expected_pools(weights)
        assert set(expected.values()) == {"candidate", "stable"}
        assert await env.pools(0) == expected  # at once in the gateway that took the change
        await env.until_pools(expected, on=1)  # the other follows within its sync interval
        metrics = (
            await env.clients[1].get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        assert sample(metrics, "tidegate_traffic_share", model=MODEL, pool="candidate") == 0.5

        rolled = await env.admin("POST", "/rollback", on=1)
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["weights"] == [["stable", 100.0]]
        assert rolled.json()["rolled_back"] == []
        everything_stable = dict.fromkeys(SESSIONS, "stable")
        assert await env.pools(1) == everything_stable
        await env.until_pools(everything_stable, on=0)

        audit = await env.clients[0].get("/admin/audit", headers=auth(ADMIN_KEY))
        actions = [entry["action"] for entry in audit.json()["data"]]
        assert actions[:2] == ["traffic.rolled_back", "traffic.split_changed"]


async def test_shadow_and_list_shaped_weights_through_put(tmp_path: Path) -> None:
    async with environment(tmp_path, "", count=1) as env:
        response = await env.admin(
            "PUT",
            "/traffic",
            {
                "weights": [["candidate", 10], ["stable", 90]],
                "sticky_by": "tenant",
                "stable_pool": "stable",
                "shadow": {"pool": "candidate", "sample": 0.5},
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["sticky_by"] == "tenant"
        assert body["shadow"] == {"pool": "candidate", "sample": 0.5}
        # one session key per tenant: every request of this tenant lands on one pool
        assert len(set((await env.pools(0)).values())) == 1
        off = await env.admin("PUT", "/traffic", {"shadow": None})
        assert off.json()["shadow"] is None and off.json()["weights"] == body["weights"]
        audit = await env.clients[0].get("/admin/audit", headers=auth(ADMIN_KEY))
        actions = [entry["action"] for entry in audit.json()["data"]]
        assert actions[:3] == [
            "traffic.shadow_changed",
            "traffic.shadow_changed",
            "traffic.split_changed",
        ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"weights": {"nope": 5}}, "Unknown pool 'nope'. Pools on this gateway: fake-model."),
        ({"weights": {"fake-model": -5}}, "must be a number >= 0"),
        ({"weights": {"fake-model": 0}}, "At least one pool needs a weight > 0"),
        ({"weights": "stable"}, "'weights' must be an object like"),
        ({"weights": {"fake-model": "a lot"}}, "expected a number"),
        ({"weights": {"fake-model": 1}, "sticky_by": "ip"}, "sticky_by must be 'session'"),
        ({"shadow": {"pool": "fake-model", "sample": 2}}, "a number from 0 to 1"),
        ({"shadow": {"pool": "fake-model"}}, "Missing required parameter: 'shadow.sample'"),
        ({"sticky_by": "tenant"}, "send the weights too"),
        ({}, "Nothing to change"),
        ({"weight": {"fake-model": 1}}, "Unknown parameter: 'weight'"),
    ],
)
async def test_bad_input_is_a_clear_400(
    gateway: RunningGateway, body: dict[str, Any], message: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.put(
            "/admin/models/fake-model/traffic", json=body, headers=auth(ADMIN_KEY)
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


async def test_only_the_operator_manages_traffic(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        tenant = await http.post("/admin/tenants", json={"name": "acme"}, headers=auth(ADMIN_KEY))
        keys = {}
        for role in ("admin", "member"):
            body = {"name": role, "role": role, "tenant_id": tenant.json()["id"]}
            created = await http.post("/admin/keys", json=body, headers=auth(ADMIN_KEY))
            keys[role] = created.json()["key"]
        calls = [
            ("GET", "traffic", None),
            ("PUT", "traffic", {"weights": {"fake-model": 1}}),
            ("POST", "rollback", None),
            ("GET", "versions", None),
            ("POST", "versions", {"pool": "fake-model", "source": "x"}),
        ]
        for key in keys.values():
            for method, path, body in calls:
                response = await http.request(
                    method, f"/admin/models/fake-model/{path}", json=body, headers=auth(key)
                )
                assert response.status_code == 403, (method, path, response.text)
                assert response.json()["error"]["type"] == "permission_error"
        anonymous = await http.get("/admin/models/fake-model/traffic")
        assert anonymous.status_code == 401
        unknown = await http.get("/admin/models/gpt-9/traffic", headers=auth(ADMIN_KEY))
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        audit = await http.get("/admin/audit", headers=auth(ADMIN_KEY))
        assert not [e for e in audit.json()["data"] if e["action"].startswith("traffic.")]


async def test_versions_recorded_at_startup_registered_and_pruned(tmp_path: Path) -> None:
    async with environment(tmp_path, "", count=1) as env:
        listed = await env.admin("GET", "/versions")
        assert listed.status_code == 200, listed.text
        startup = listed.json()["data"]
        assert sorted(v["pool"] for v in startup) == ["candidate", "stable"]
        assert {v["source"] for v in startup} == {"fake-stable", "fake-candidate"}
        assert all(v["created_by"] == "tidegate:startup" for v in startup)
        for n in range(3):
            body = {"pool": "candidate", "source": f"org/chat-v{n}", "revision": f"r{n}"}
            created = await env.admin("POST", "/versions", body)
            assert created.status_code == 201, created.text
            assert created.json()["object"] == "model.version"
        data = (await env.admin("GET", "/versions")).json()["data"]
        assert [v["source"] for v in data] == ["org/chat-v2", "org/chat-v1", "org/chat-v0"]
        bad = await env.admin("POST", "/versions", {"pool": "nope", "source": "x"})
        assert bad.status_code == 400 and "Unknown pool 'nope'" in bad.json()["error"]["message"]
        missing = await env.admin("POST", "/versions", {"source": "x"})
        assert missing.status_code == 400 and "'pool'" in missing.json()["error"]["message"]


async def test_disabled_rollouts_answer_404(tmp_path: Path, fake: FakeUpstream) -> None:
    sections = {"rollouts": {"enabled": False}}
    async with (
        run_gateway(tmp_path, upstreams=[fake], sections=sections) as gateway,
        httpx.AsyncClient(base_url=gateway.url) as http,
    ):
        response = await http.get("/admin/models/fake-model/traffic", headers=auth(ADMIN_KEY))
    assert response.status_code == 404
    assert "rollouts are disabled" in response.json()["error"]["message"].lower()
