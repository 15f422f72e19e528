"""Staged rollouts through real gateways on loopback: two fake upstream pools behind the public
model ``chat`` (``blue`` stable, ``green`` the candidate), a load loop of streamed requests with
sticky session ids, and short holds, sample sizes and intervals.

Each answer names the pool that served it (x-tidegate-backend: POOL/REPLICA). Assertions wait for
states rather than timing them: the box has two shared cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.test_scheduling import sample
from tests.support.gateway import ADMIN_KEY, auth, create_member, free_port, serve
from tidegate.config import Config
from tidegate.rollout import lease
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

BACKEND = "x-tidegate-backend"
SESSION = "x-tidegate-session-id"
ROLLOUTS = {
    "sync_interval_s": 0.1,
    "controller_interval_s": 0.1,
    "stats_flush_interval_s": 0.1,
    "lock_ttl_s": 2.0,
}
FINAL = {"promoted", "rolled_back", "aborted"}
# A base latency keeps both pools' percentiles well above the noise of a busy loop.
BASE = {"tokens": 4, "first_token_delay_s": 0.05, "token_delay_s": 0.02}
# Equal pools on a shared two-core box still see stalls that land on either side; generous
# latency ratios keep them from failing a step. The rollback tests use the defaults (1.5).
EQUAL_GATES = {"min_samples": 20, "ttft_p95_ratio": 3.0, "itl_p95_ratio": 3.0}
HEALTH = {"consecutive_failures": 1000, "breaker_failures": 1000}  # failures must stay visible


def behaviour(**fields: Any) -> FakeBehaviour:
    return FakeBehaviour(**{**BASE, **fields})


@asynccontextmanager
async def fake_pools(
    green: FakeBehaviour, blue: FakeBehaviour | None = None
) -> AsyncIterator[dict[str, FakeUpstream]]:
    async with AsyncExitStack() as stack:
        fakes: dict[str, FakeUpstream] = {}
        for pool, b in (("blue", blue or behaviour()), ("green", green)):
            fake = FakeUpstream(model=f"fake-{pool}", behaviour=b)
            await fake.start()
            stack.push_async_callback(fake.stop)
            fakes[pool] = fake
        yield fakes


def gateway_config(home: Path, fakes: dict[str, FakeUpstream], **sections: Any) -> Config:
    return Config(
        home=home,
        admin_key=ADMIN_KEY,
        server={"port": free_port(), "idle_timeout_s": 5.0},
        engines={"replicas": 0},
        upstreams=[
            {"url": fake.base_url, "model": fake.model, "pool": pool}
            for pool, fake in fakes.items()
        ],
        scheduling={"interactive_reserve": 0.0},
        routing={"routes": [{"model": "chat", "pools": ["blue", "green"]}], "health": HEALTH},
        metering={"flush_interval_s": 0.05},
        rollouts=ROLLOUTS,
        **sections,
    )


@asynccontextmanager
async def gateway(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(config) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
            await warm_up(http)
            yield http


async def warm_up(http: httpx.AsyncClient) -> None:
    """A few requests to each pool (through the upstreams' own model names), so a pool's first
    connections do not count against it as latency."""
    for model in ("fake-blue", "fake-green"):
        for _ in range(3):
            await http.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                headers=auth(ADMIN_KEY),
            )


@dataclass
class Load:
    """Requests in a loop from ``sessions`` sticky sessions, ``concurrency`` at a time."""

    http: httpx.AsyncClient
    json_mode: bool = False
    sessions: int = 40
    concurrency: int = 4
    served: list[tuple[int, str, str, int]] = field(default_factory=list)
    """(sequence number, session, pool, status) per answered request."""
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    async def _worker(self) -> None:
        while True:
            seq = next(self._seq)
            session = f"s{seq % self.sessions}"
            body: dict[str, Any] = {
                "model": "chat",
                "messages": [{"role": "user", "content": "hello"}],
            }
            if self.json_mode:
                body["response_format"] = {"type": "json_object"}
            else:
                body["stream"] = True
            try:
                response = await self.http.post(
                    "/v1/chat/completions",
                    json=body,
                    headers={**auth(ADMIN_KEY), SESSION: session},
                )
            except httpx.HTTPError:
                continue
            pool = response.headers.get(BACKEND, "/").split("/")[0]
            self.served.append((seq, session, pool, response.status_code))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def start_rollout(http: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {
        "model": "chat",
        "candidate_pool": "green",
        "steps": [30, 60, 100],
        "hold_s": 1.0,
        "gates": EQUAL_GATES,
        **fields,
    }
    response = await http.post("/admin/rollouts", json=body, headers=auth(ADMIN_KEY))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def rollout(http: httpx.AsyncClient, rollout_id: str) -> dict[str, Any]:
    response = await http.get(f"/admin/rollouts/{rollout_id}", headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for(
    http: httpx.AsyncClient,
    rollout_id: str,
    *,
    states: set[str] = FINAL,
    step_index: int | None = None,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = await rollout(http, rollout_id)
        if body["state"] in states and (step_index is None or body["step_index"] >= step_index):
            return body
        assert body["state"] not in FINAL - states, body
        assert time.monotonic() < deadline, f"rollout never reached {states}: {body}"
        await asyncio.sleep(0.1)


async def pools_served(http: httpx.AsyncClient, count: int = 12) -> set[str]:
    pools = set()
    for index in range(count):
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={**auth(ADMIN_KEY), SESSION: f"probe-{index}"},
        )
        assert response.status_code == 200, response.text
        pools.add(response.headers[BACKEND].split("/")[0])
    return pools


async def until_served_by(http: httpx.AsyncClient, pools: set[str]) -> None:
    deadline = time.monotonic() + 10
    # The controller commits a move, then sets this gateway's split: the rollout can read as
    # finished a moment before the routes follow, so wait for the share gauge before probing.
    others = {"blue", "green"} - pools
    while True:
        metrics = (
            await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        shares = [sample(metrics, "tidegate_traffic_share", model="chat", pool=p) for p in others]
        if not any(shares):
            break
        assert time.monotonic() < deadline, f"the split still sends traffic to {others}"
        await asyncio.sleep(0.05)
    while (seen := await pools_served(http)) != pools:
        assert time.monotonic() < deadline, f"traffic still goes to {seen}, not {pools}"
        await asyncio.sleep(0.1)


def moves(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [(entry["to"], entry["step"]) for entry in body["history"]]


# -- promotion and stickiness ---------------------------------------------------------------------


async def test_an_equal_candidate_is_promoted_and_sessions_stay_on_it(tmp_path: Path) -> None:
    async with fake_pools(behaviour()) as fakes, gateway(gateway_config(tmp_path, fakes)) as http:
        async with Load(http).running() as load:
            created = await start_rollout(http)
            assert created["state"] == "running" and created["share"] == 30
            assert created["stable_pool"] == "blue"
            done = await wait_for(http, created["id"])
        assert done["state"] == "promoted", done["reason"]
        assert moves(done) == [("running", 0), ("running", 1), ("running", 2), ("promoted", 2)]
        assert done["history"][1]["figures"]["candidate_requests"] >= 20

        # Sticky: a session that landed on the candidate never went back to the stable pool.
        by_session: dict[str, list[str]] = {}
        for _, session, pool, status in sorted(load.served):
            assert status == 200
            by_session.setdefault(session, []).append(pool)
        for session, pools in by_session.items():
            if "green" in pools:
                first = pools.index("green")
                assert set(pools[first:]) == {"green"}, (session, pools)
        assert any(pools[0] == "blue" and pools[-1] == "green" for pools in by_session.values())

        await until_served_by(http, {"green"})
        metrics = (
            await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        ).text
        assert sample(metrics, "tidegate_rollout_state", model="chat", state="promoted") == 1
        assert sample(metrics, "tidegate_rollout_step", model="chat") == -1
        assert (
            sample(metrics, "tidegate_rollout_transitions_total", model="chat", state="running")
            == 2
        )

        audit = await http.get("/admin/audit", params={"limit": "100"}, headers=auth(ADMIN_KEY))
        actions = [entry["action"] for entry in audit.json()["data"]]
        assert actions.count("rollout.advanced") == 2
        assert {"rollout.started", "rollout.promoted"} <= set(actions)

        report = await http.get(f"/admin/rollouts/{created['id']}/report", headers=auth(ADMIN_KEY))
        assert report.status_code == 200
        assert report.headers["content-type"].startswith("text/markdown")
        text = report.text
        for expected in (
            "## Step 1: 30% to the candidate",
            "## Step 3: 100% to the candidate",
            "promoted",
            "| requests |",
            "TTFT p95",
            "Shadow comparison",
        ):
            assert expected in text, expected
        page = await http.get(
            f"/admin/rollouts/{created['id']}/report",
            params={"format": "html"},
            headers=auth(ADMIN_KEY),
        )
        assert page.headers["content-type"].startswith("text/html")
        assert "<table>" in page.text and "baseline: earlier steps" in page.text


# -- rollback -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("green", "gate"),
    [
        (behaviour(first_token_delay_s=0.4), "ttft_p95_ratio"),
        (behaviour(fault="drop_mid_stream", fault_after_tokens=1), "error_rate_delta"),
        # 500s before the first byte: the stable pool serves those requests by fallback, and
        # they still count as the candidate's errors (the split chose it).
        (behaviour(fault="status_500"), "error_rate_delta"),
    ],
    ids=["slower", "failing", "failing-before-first-byte"],
)
async def test_a_worse_candidate_is_rolled_back_within_one_hold(
    tmp_path: Path, green: FakeBehaviour, gate: str
) -> None:
    async with fake_pools(green) as fakes, gateway(gateway_config(tmp_path, fakes)) as http:
        async with Load(http, concurrency=6).running():
            created = await start_rollout(http, hold_s=30.0, gates={"min_samples": 20})
            done = await wait_for(http, created["id"])
        assert done["state"] == "rolled_back", done
        assert moves(done) == [("running", 0), ("rolled_back", 0)]  # never left the first step
        assert gate in done["reason"]
        assert done["finished_at"] - done["created_at"] < 30
        figures = done["history"][-1]["figures"]
        assert figures["candidate_requests"] >= 20 and figures["stable_requests"] >= 20
        await until_served_by(http, {"blue"})


async def test_a_candidate_that_breaks_json_mode_is_caught(tmp_path: Path) -> None:
    blue = behaviour(content='{"answer": 42}')
    green = behaviour(content="Sure! Here is the JSON: {answer: 42")
    async with fake_pools(green, blue) as fakes, gateway(gateway_config(tmp_path, fakes)) as http:
        async with Load(http, json_mode=True, concurrency=6).running():
            created = await start_rollout(http, steps=[50, 100], hold_s=30.0)
            done = await wait_for(http, created["id"])
        assert done["state"] == "rolled_back", done
        assert "json_validity_delta" in done["reason"]
        figures = done["history"][-1]["figures"]
        assert figures["stable_json_validity"] == 1.0
        assert figures["candidate_json_validity"] == 0.0


# -- the operator's moves -------------------------------------------------------------------------


async def test_pause_resume_abort_and_promote(tmp_path: Path) -> None:
    async with fake_pools(behaviour()) as fakes, gateway(gateway_config(tmp_path, fakes)) as http:
        admin = auth(ADMIN_KEY)
        # min_samples out of reach: the controller holds the first step.
        first = await start_rollout(http, gates={"min_samples": 100_000})
        path = f"/admin/rollouts/{first['id']}"

        again = await http.post(
            "/admin/rollouts",
            json={"model": "chat", "candidate_pool": "green", "steps": [5, 100], "hold_s": 1},
            headers=admin,
        )
        assert again.status_code == 400 and "already has an active rollout" in again.text

        paused = await http.post(f"{path}/pause", headers=admin)
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        assert (await http.post(f"{path}/pause", headers=admin)).status_code == 400
        await until_served_by(http, {"blue", "green"})  # the split stays while paused

        resumed = await http.post(f"{path}/resume", headers=admin)
        assert resumed.json()["state"] == "running"
        assert resumed.json()["step_started_at"] >= paused.json()["updated_at"]

        status = await rollout(http, first["id"])
        assert status["current_step"]["verdict"] == "insufficient"
        assert "stable_requests" in status["current_step"]["figures"]

        aborted = await http.post(f"{path}/abort", headers=admin)
        assert aborted.json()["state"] == "aborted"
        assert "abort by" in aborted.json()["reason"]
        await until_served_by(http, {"blue"})
        assert (await http.post(f"{path}/resume", headers=admin)).status_code == 400

        second = await start_rollout(http, gates={"min_samples": 100_000})
        promoted = await http.post(f"/admin/rollouts/{second['id']}/promote", headers=admin)
        assert promoted.json()["state"] == "promoted"
        await until_served_by(http, {"green"})

        # The candidate became the stable pool: the next rollout goes the other way.
        third = await start_rollout(http, candidate_pool="blue")
        assert third["stable_pool"] == "green"

        listed = await http.get("/admin/rollouts", params={"model": "chat"}, headers=admin)
        assert [r["state"] for r in listed.json()["data"]] == ["running", "promoted", "aborted"]
        audit = await http.get("/admin/audit", params={"limit": "100"}, headers=admin)
        actions = {entry["action"] for entry in audit.json()["data"]}
        assert {"rollout.paused", "rollout.resumed", "rollout.aborted"} <= actions


async def test_bad_starts_and_non_operators_are_refused(tmp_path: Path) -> None:
    async with fake_pools(behaviour()) as fakes, gateway(gateway_config(tmp_path, fakes)) as http:
        admin = auth(ADMIN_KEY)
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"candidate_pool": "purple"}, 400, "No pool named 'purple'"),
            ({"candidate_pool": "blue"}, 400, "already the stable pool"),
            ({"model": "nope"}, 404, "does not exist"),
            ({"steps": [50, 25, 100]}, 400, "increase"),
            ({"steps": [25, 50]}, 400, "end at 100"),
            ({"hold_s": 0}, 400, "hold_s"),
            ({"gates": {"ttft_p95_ratio": 0.5}}, 400, "ttft_p95_ratio"),
            ({"surprise": 1}, 400, "surprise"),
        ]
        for fields, status, message in cases:
            body = {"model": "chat", "candidate_pool": "green", "steps": [5, 100], "hold_s": 1}
            response = await http.post("/admin/rollouts", json={**body, **fields}, headers=admin)
            assert response.status_code == status, (fields, response.text)
            assert message in response.text, (fields, response.text)
        missing = await http.get("/admin/rollouts/ro_nothing", headers=admin)
        assert missing.status_code == 404

        member = await create_member(http, "acme")
        assert (await http.get("/admin/rollouts", headers=member.headers)).status_code == 403


# -- restarts and several gateways ----------------------------------------------------------------


async def test_the_controller_resumes_after_a_gateway_restart(tmp_path: Path) -> None:
    async with fake_pools(behaviour()) as fakes:
        async with gateway(gateway_config(tmp_path, fakes)) as http:
            async with Load(http).running():
                created = await start_rollout(http, hold_s=1.0)
                await wait_for(http, created["id"], states={"running"}, step_index=1)
        # Same store (the home's SQLite file), a new process state and port.
        async with gateway(gateway_config(tmp_path, fakes)) as http:
            before = await rollout(http, created["id"])
            assert before["state"] == "running" and before["step_index"] >= 1
            async with Load(http).running():
                done = await wait_for(http, created["id"])
        assert done["state"] == "promoted", done["reason"]
        assert moves(done) == [("running", 0), ("running", 1), ("running", 2), ("promoted", 2)]


async def test_the_lease_has_one_holder_at_a_time(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assert await lease.acquire(sessions, "test", holder="a", ttl_s=60)
    assert not await lease.acquire(sessions, "test", holder="b", ttl_s=60)
    assert await lease.acquire(sessions, "test", holder="a", ttl_s=0.05)  # renewed
    await asyncio.sleep(0.1)
    assert await lease.acquire(sessions, "test", holder="b", ttl_s=60)  # ran out: taken over
    assert not await lease.acquire(sessions, "test", holder="a", ttl_s=60)
    await lease.release(sessions, "test", holder="a")  # not a's to release
    assert not await lease.acquire(sessions, "test", holder="a", ttl_s=60)
    await lease.release(sessions, "test", holder="b")
    assert await lease.acquire(sessions, "test", holder="a", ttl_s=60)
    results = await asyncio.gather(
        *(lease.acquire(sessions, "fresh", holder=f"h{i}", ttl_s=60) for i in range(4))
    )
    assert sorted(results) == [False, False, False, True]
