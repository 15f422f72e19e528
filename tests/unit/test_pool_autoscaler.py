"""The supervisor executing an autoscaling policy on real processes: the fake vLLM-shaped server
stands in for each replica (the supervisor's command factory starts it), a real scheduler holds
the pool's queue, and a fake clock drives the autoscaler, whose evaluations the tests call.

Covered: min_replicas routed plus warm standbys at start; a standby is loaded but neither routed
to nor counted as capacity; promotion on queue pressure is immediate; a new replica joins the
routing table but takes no request until ready; a scale-down drains the replica (its in-flight
request finishes) before stopping it, then the standby is refilled; never below min; scale from
zero on refused requests and back to zero when idle; events in metrics, audit and engines.json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from typer.testing import CliRunner

from tidegate.commands.engine import engine_app
from tidegate.config import (
    AutoscalingPolicy,
    Config,
    EnginePoolConfig,
    EngineProfile,
    EnginesConfig,
    LocalPool,
)
from tidegate.engines import pools
from tidegate.engines.cpu_binding import BIND_VARIABLE
from tidegate.engines.profile import EngineCommand
from tidegate.engines.replica_set import Role
from tidegate.engines.state_file import (
    STATE_FILE_NAME,
    EngineSnapshot,
    PoolRecord,
    ReplicaRecord,
    read_state,
    write_state,
)
from tidegate.engines.supervisor import EngineSupervisor
from tidegate.errors import NoReadyReplicaError
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.build import build_routing
from tidegate.routing.replicas import ReplicaState
from tidegate.scheduling.scheduler import Scheduler

SERVED = "smol"


def fake_command(load_s: float = 0.0) -> Callable[[LocalPool, int], EngineCommand]:
    """The fake server as a replica; ``load_s``: how long it "loads" before it listens."""

    def command(pool: LocalPool, port: int) -> EngineCommand:
        code = (
            f"import time; time.sleep({load_s}); from tidegate_testing.fake_server import main; "
            f"main(['--port', '{port}', '--model', '{SERVED}'])"
        )
        return EngineCommand(argv=(sys.executable, "-c", code))

    return command


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    supervisor: EngineSupervisor
    scheduler: Scheduler
    clock: Clock
    audits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def pool(self) -> Any:
        return self.supervisor.routing.pool(SERVED)

    @property
    def autoscaler(self) -> Any:
        return self.supervisor.autoscalers[SERVED]

    @property
    def queue(self) -> Any:
        return self.scheduler.queue(self.pool)

    def evaluate(self, dt: float = 1.0) -> Any:
        self.clock.now += dt
        return self.autoscaler.evaluate()

    def member(self, replica_id: str) -> Any:
        (found,) = [
            m
            for m in self.supervisor.pools[0].members.values()
            if m.runner.replica.id == replica_id
        ]
        return found

    def metric(self, name: str, **labels: str) -> float:
        value = self.supervisor.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def scaling_pool(
    tmp_path: Path, policy: AutoscalingPolicy, *, load_s: float = 0.0
) -> AsyncIterator[Env]:
    config = Config(
        home=tmp_path,
        engines=EnginesConfig(
            served_model_name=SERVED,
            health_interval_s=0.2,
            drain_grace_s=10,
            stop_timeout_s=5,
            profile=EngineProfile(max_num_seqs=2),
            autoscaling=policy,
        ),
    )
    routing = build_routing(config)
    scheduler = Scheduler(config=config.scheduling, default_concurrency=2)
    clock = Clock()
    audits: list[tuple[str, dict[str, Any]]] = []

    async def audit(pool: str, details: dict[str, Any]) -> None:
        audits.append((pool, details))

    supervisor = EngineSupervisor(
        config=config,
        routing=routing,
        metrics=GatewayMetrics(),
        scheduler=scheduler,
        audit=audit,
        command=fake_command(load_s),
        clock=clock,
    )
    scheduler.start()
    await supervisor.start()
    try:
        yield Env(supervisor, scheduler, clock, audits)
    finally:
        await supervisor.stop()
        await scheduler.stop()
    assert all(r.state is ReplicaState.STOPPED for r in supervisor.replicas)


def policy(**fields: Any) -> AutoscalingPolicy:
    base: dict[str, Any] = {
        "enabled": True,
        "min_replicas": 1,
        "max_replicas": 2,
        "target": 2.0,
        "scale_down_stabilization_s": 0.0,
        "cooldown_s": 0.0,
        "idle_scale_to_min_s": 0.0,
        "evaluation_interval_s": 3600.0,  # the tests evaluate
    }
    return AutoscalingPolicy(**{**base, **fields})


async def waiters(env: Env, count: int) -> list[asyncio.Task[Any]]:
    tasks = [
        asyncio.create_task(env.scheduler.acquire(env.pool, "interactive", tenant="t", cost=1))
        for _ in range(count)
    ]
    await eventually(lambda: env.queue.waiting + env.queue.in_flight == count)
    return tasks


async def test_standby_is_loaded_but_not_routed_and_promoted_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidegate.engines.autoscaler")
    async with scaling_pool(tmp_path, policy(warm_standby=1)) as env:
        assert await env.supervisor.wait_ready(20)
        # r0 routed, r1 a ready standby: out of the routing table and of the capacity.
        assert [r.id for r in env.pool.replicas] == ["r0"]
        assert env.member("r1").role is Role.STANDBY and env.member("r1").ready
        assert env.queue.capacity() == 2
        assert env.metric("tidegate_pool_replicas", pool=SERVED, state="standby") == 1
        assert env.metric("tidegate_pool_replicas", pool=SERVED, state="ready") == 1
        snapshot = read_state(env.supervisor.state_path)
        assert snapshot is not None
        assert [(r.id, r.state, r.role) for r in snapshot.replicas] == [
            ("r0", "ready", "routed"),
            ("r1", "standby", "standby"),
        ]
        assert [(p.name, p.desired_routed, p.desired_standby) for p in snapshot.pools] == [
            (SERVED, 1, 1)
        ]

        # 2 in flight + 3 waiting on one replica = 5 per replica against a target of 2.
        tasks = await waiters(env, 5)
        decision = env.evaluate()
        assert (decision.desired_routed, decision.desired_standby) == (2, 0)
        assert [r.id for r in env.pool.replicas] == ["r0", "r1"]
        assert env.queue.capacity() == 4  # promoted: its slots are there at once
        assert env.queue.in_flight == 4 and env.queue.waiting == 1
        assert (
            env.metric(
                "tidegate_pool_scale_events_total",
                pool=SERVED,
                direction="up",
                reason="queue_pressure",
            )
            == 1
        )
        assert env.metric("tidegate_pool_desired_replicas", pool=SERVED) == 2
        assert len(env.supervisor.pools[0].members) == 2  # max_replicas: no room for a refill
        (line,) = [r.getMessage() for r in caplog.records if "scaled" in r.getMessage()]
        assert line.startswith("pool smol scaled up (queue_pressure): promoted replica r1;")
        await eventually(lambda: len(env.audits) == 1)
        pool, details = env.audits[0]
        assert (pool, details["action"], details["replica"], details["reason"]) == (
            SERVED,
            "promoted",
            "r1",
            "queue_pressure",
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_scale_down_drains_then_stops_then_refills_the_standby(tmp_path: Path) -> None:
    async with scaling_pool(tmp_path, policy(warm_standby=1)) as env:
        assert await env.supervisor.wait_ready(20)
        tasks = await waiters(env, 5)
        env.evaluate()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        slots = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
        for slot in slots:
            slot.release()
        # A request still in flight on each replica: the one retired must finish its own.
        r0, r1 = (env.member(rid).runner.replica for rid in ("r0", "r1"))
        leases = {replica.id: replica.lease() for replica in (r0, r1)}
        decision = env.evaluate()
        assert decision.desired_routed == 1 and decision.reason == "low_load"
        retired = env.member("r1")  # equally busy: the highest index goes
        assert retired.retiring and r1.state is ReplicaState.DRAINING
        assert env.pool.candidates() == [r0]
        await asyncio.sleep(0.5)
        process = retired.runner.process
        assert process is not None and process.returncode is None  # still serving its request
        assert env.metric("tidegate_pool_replicas", pool=SERVED, state="draining") == 1
        leases["r1"].release()
        await eventually(lambda: retired not in env.supervisor.pools[0].members.values())
        assert process.returncode is not None and r1.state is ReplicaState.STOPPED
        assert [r.id for r in env.pool.replicas] == ["r0"]
        assert (
            env.metric(
                "tidegate_pool_scale_events_total", pool=SERVED, direction="down", reason="low_load"
            )
            == 1
        )
        # The next evaluation refills the standby, under the freed index.
        env.evaluate()
        refill = env.member("r1")
        assert refill.role is Role.STANDBY and refill.runner.replica is not r1
        assert (
            env.metric(
                "tidegate_pool_scale_events_total",
                pool=SERVED,
                direction="up",
                reason="standby_refill",
            )
            == 1
        )
        # Never below min_replicas, however long it stays quiet.
        for _ in range(5):
            assert env.evaluate().desired_routed == 1
        assert [m.role for m in env.supervisor.pools[0].members.values()].count(Role.ROUTED) == 1
        leases["r0"].release()


async def test_a_new_replica_takes_requests_only_once_ready(tmp_path: Path) -> None:
    async with scaling_pool(tmp_path, policy(), load_s=2.0) as env:
        assert await env.supervisor.wait_ready(20)
        tasks = await waiters(env, 5)
        env.evaluate()
        new = env.member("r1")
        assert new.role is Role.ROUTED and new.runner.replica in env.pool.replicas
        # Loading: in the table, but not a candidate and no capacity.
        assert new.runner.replica.state is ReplicaState.STARTING
        assert [r.id for r in env.pool.candidates()] == ["r0"]
        assert env.queue.capacity() == 2 and env.queue.waiting == 3
        assert env.metric("tidegate_pool_replicas", pool=SERVED, state="starting") == 1
        await eventually(lambda: new.ready)
        assert env.queue.capacity() == 4
        await eventually(lambda: env.queue.waiting == 1)  # the scheduler's tick hands slots on
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_scales_from_zero_on_a_refused_request_and_back_when_idle(tmp_path: Path) -> None:
    # A long down window: only the idle rule brings it back to zero.
    p = policy(
        min_replicas=0, max_replicas=1, idle_scale_to_min_s=5.0, scale_down_stabilization_s=600
    )
    async with scaling_pool(tmp_path, p) as env:
        assert env.supervisor.replicas == []
        assert env.evaluate().desired_routed == 0
        with pytest.raises(NoReadyReplicaError):
            env.scheduler.try_acquire(env.pool, "interactive")
        decision = env.evaluate()
        assert (decision.desired_routed, decision.reason) == (1, "queue_pressure")
        await eventually(lambda: env.queue.capacity() == 2)
        slot = env.scheduler.try_acquire(env.pool, "interactive")
        assert slot is not None
        replica = env.pool.pick()
        replica.lease().release()
        slot.release()
        env.evaluate()
        assert env.metric(
            "tidegate_replica_first_request_timestamp_seconds", pool=SERVED, replica="r0"
        ) == pytest.approx(time.time(), abs=30)
        for _ in range(4):
            assert env.evaluate().desired_routed == 1
        decision = env.evaluate()
        assert (decision.desired_routed, decision.reason) == (0, "idle")
        await eventually(lambda: env.supervisor.replicas == [])
        assert env.pool.replicas == []
        text = generate_latest(env.supervisor.metrics.registry).decode()
        assert 'tidegate_pool_scale_events_total{direction="down",pool="smol",reason="idle"}' in (
            text
        )


def test_engine_status_shows_standbys_and_the_wanted_counts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = tmp_path / "tidegate.yaml"
    path.write_text(f"home: {home}\n")

    def replica(rid: str, state: str, role: str = "routed") -> ReplicaRecord:
        return ReplicaRecord(
            id=rid,
            pool=SERVED,
            model=SERVED,
            state=state,
            port=8000,
            pid=None,
            started_at=None,
            ready_at=None,
            load_seconds=None,
            restarts=0,
            log="-",
            role=role,
        )

    snapshot = EngineSnapshot(
        supervisor_pid=os.getpid(),
        updated_at=time.time(),
        replicas=(
            replica("r0", "ready"),
            replica("r1", "starting"),
            replica("r2", "standby", "standby"),
        ),
        pools=(PoolRecord(SERVED, True, 2, 1, 1, 3),),
    )
    write_state(Config(home=home).state_dir / STATE_FILE_NAME, snapshot)
    assert read_state(Config(home=home).state_dir / STATE_FILE_NAME) == snapshot
    runner = CliRunner()
    shown = runner.invoke(engine_app, ["status", "--config", str(path)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    (row,) = [line for line in shown.output.splitlines() if "1..3" in line]
    assert [cell.strip() for cell in row.strip("│┃ ").split("│")] == [
        SERVED,
        "1..3",
        "1 of 2",
        "1 of 1",
        "1",
        "0",
    ]
    as_json = runner.invoke(engine_app, ["status", "--json", "--config", str(path)])
    data = json.loads(as_json.output)
    assert data["pools"][0]["desired_routed"] == 2
    assert [r["role"] for r in data["replicas"]] == ["routed", "routed", "standby"]


def test_cpu_shares_are_sized_for_max_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pools, "available_cores", lambda: [0, 1, 2, 3])
    config = Config(
        home=tmp_path,
        engines=EnginesConfig(
            model="/models/m",
            served_model_name=SERVED,
            profile=EngineProfile(device="cpu"),
            autoscaling=policy(min_replicas=1, max_replicas=2),
            pools=[EnginePoolConfig(name="cand")],
        ),
    )
    # One replica of the main pool runs at start, but its share leaves room for the second.
    specs = pools.plan_replicas(config, ports=[1, 2], resolve=lambda m: m)
    assert [(s.id, s.command.env[BIND_VARIABLE]) for s in specs] == [
        ("r0", "0,1"),
        ("cand-r0", "3"),
    ]
    planner = pools.ReplicaPlanner(config, resolve=lambda m: m)
    later = planner.spec(SERVED, 1, 3)
    assert (later.id, later.port, later.command.env[BIND_VARIABLE]) == ("r1", 3, "2")
