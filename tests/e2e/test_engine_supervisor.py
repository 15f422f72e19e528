"""The engine supervisor against the real vLLM CPU engine and the bundled model.

The tests run in order on one supervisor: ready → answers → metrics → crash and restart →
drain and stop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil
import pytest
from openai import AsyncOpenAI
from rich.console import Console

from tidegate.config import Config
from tidegate.engines.engine_metrics import metrics_url
from tidegate.engines.install import EngineInstaller
from tidegate.engines.model_prepare import ModelPreparer
from tidegate.engines.state_file import read_state
from tidegate.engines.supervisor import EngineSupervisor
from tidegate.routing.replicas import ReplicaState

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

READY_TIMEOUT_S = 180.0


def sample(sup: EngineSupervisor, name: str, **labels: str) -> float | None:
    return sup.metrics.registry.get_sample_value(name, labels)


def group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


async def wait_for_state(sup: EngineSupervisor, state: ReplicaState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sup.replicas[0].state is not state:
        assert time.monotonic() < deadline, f"replica is {sup.replicas[0].state}, not {state}"
        await asyncio.sleep(0.05)


async def test_replica_becomes_ready(supervisor: EngineSupervisor) -> None:
    assert await supervisor.wait_ready(READY_TIMEOUT_S), supervisor.replicas[0].state
    replica = supervisor.replicas[0]
    labels = {"model": replica.model, "replica": "r0"}
    load = sample(supervisor, "tidegate_model_load_seconds", **labels)
    assert load is not None and 1 < load < READY_TIMEOUT_S
    assert sample(supervisor, "tidegate_replica_state", **labels, state="ready") == 1
    assert sample(supervisor, "tidegate_replica_state", **labels, state="starting") == 0
    snapshot = read_state(supervisor.state_path)
    assert snapshot is not None
    (record,) = snapshot.replicas
    assert record.state == "ready" and record.pid and record.load_seconds == load
    print(f"replica ready after {load:.1f}s")


async def test_bundled_model_answers_paris(supervisor: EngineSupervisor) -> None:
    replica = supervisor.replicas[0]
    async with AsyncOpenAI(base_url=replica.base_url, api_key="unused") as client:
        reply = await client.chat.completions.create(
            model=replica.upstream_model,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=32,
        )
    assert "Paris" in (reply.choices[0].message.content or "")


async def test_engine_metrics_are_scraped(supervisor: EngineSupervisor) -> None:
    replica = supervisor.replicas[0]
    labels = {"model": replica.model, "replica": replica.id}
    # The Paris prompt went through the prefix cache; wait for a scrape taken after it ended
    # (several scrape intervals: on a slow host a scrape can land mid-request or miss its timeout).
    deadline = time.monotonic() + 30
    while not (
        sample(supervisor, "tidegate_engine_prefix_cache_queries", **labels)
        and sample(supervisor, "tidegate_engine_requests_running", **labels) == 0
    ):
        assert time.monotonic() < deadline, f"no idle scrape from {metrics_url(replica)}"
        await asyncio.sleep(0.2)
    assert sample(supervisor, "tidegate_engine_requests_waiting", **labels) == 0
    usage = sample(supervisor, "tidegate_engine_kv_cache_usage_ratio", **labels)
    assert usage is not None and 0 <= usage <= 1
    assert sample(supervisor, "tidegate_engine_prefix_cache_hits", **labels) is not None


async def test_killed_replica_is_restarted(supervisor: EngineSupervisor) -> None:
    runner = supervisor.runners[0]
    assert runner.process is not None
    old_pid = runner.process.pid
    os.killpg(old_pid, signal.SIGKILL)
    started = time.monotonic()
    await wait_for_state(supervisor, ReplicaState.CRASHED, 10)
    await wait_for_state(supervisor, ReplicaState.READY, READY_TIMEOUT_S)
    print(f"crash to ready again: {time.monotonic() - started:.1f}s")
    assert runner.process.pid != old_pid
    assert group_members(old_pid) == []
    labels = {"model": runner.replica.model, "replica": runner.replica.id}
    assert sample(supervisor, "tidegate_replica_restarts_total", **labels) == 1
    snapshot = read_state(supervisor.state_path)
    assert snapshot is not None and snapshot.replicas[0].restarts == 1


async def test_stop_drains_then_leaves_no_process(supervisor: EngineSupervisor) -> None:
    runner = supervisor.runners[0]
    assert runner.process is not None
    pid = runner.process.pid
    runner.replica.outstanding = 1  # a request the gateway still has in flight
    stopping = asyncio.create_task(supervisor.stop())
    await asyncio.sleep(1.0)
    assert runner.replica.state is ReplicaState.DRAINING
    assert psutil.pid_exists(pid), "the replica was stopped before its request finished"
    runner.replica.outstanding = 0
    started = time.monotonic()
    await asyncio.wait_for(stopping, 60)
    print(f"stop after drain: {time.monotonic() - started:.1f}s")
    assert runner.record().state == "stopped"
    assert group_members(pid) == []
    snapshot = read_state(supervisor.state_path)
    assert snapshot is not None and snapshot.replicas[0].state == "stopped"


async def test_install_and_prepare_are_idempotent(shared_engine_config: Config) -> None:
    console = Console(stderr=True)
    started = time.monotonic()
    EngineInstaller(config=shared_engine_config, console=console).install()
    ModelPreparer(config=shared_engine_config, console=console).prepare()
    assert time.monotonic() - started < 30  # the import check only; nothing rebuilt
