"""ReplicaRunner with real processes: the fake vLLM-shaped server stands in for the engine.

The runner takes its command ready-made, so these tests cover readiness, crash and restart,
ready timeouts, draining and group-wide stop in seconds; the e2e suite repeats the important
paths with the real vLLM engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tidegate.config import EnginesConfig
from tidegate.engines import replica_runner
from tidegate.engines.ports import free_ports
from tidegate.engines.probes import is_ready
from tidegate.engines.profile import EngineCommand
from tidegate.engines.replica_runner import ReplicaRunner
from tidegate.routing.replicas import Replica, ReplicaState
from tidegate_testing.fake_server import FakeUpstream

SETTINGS = EnginesConfig(
    ready_timeout_s=20,
    health_interval_s=0.1,
    restart_backoff_s=0.1,
    restart_backoff_max_s=0.5,
    stop_timeout_s=5,
)


def fake_engine(port: int, model: str = "fake") -> EngineCommand:
    argv = (sys.executable, "-m", "tidegate_testing.fake_server", "--port", str(port))
    return EngineCommand(argv=(*argv, "--model", model))


class Recorder:
    def __init__(self) -> None:
        self.states: list[ReplicaState] = []
        self.restarts = 0

    def notify(self, runner: ReplicaRunner) -> None:
        if not self.states or self.states[-1] is not runner.replica.state:
            self.states.append(runner.replica.state)

    def on_restart(self, runner: ReplicaRunner) -> None:
        self.restarts += 1


def make_runner(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    recorder: Recorder,
    command: EngineCommand | None = None,
    settings: EnginesConfig = SETTINGS,
) -> ReplicaRunner:
    (port,) = free_ports(1)
    replica = Replica(
        id="r0", model="m", base_url=f"http://127.0.0.1:{port}/v1", upstream_model="fake"
    )
    return ReplicaRunner(
        replica=replica,
        port=port,
        command=command or fake_engine(port),
        log_path=tmp_path / "replica-r0.log",
        settings=settings,
        session=session,
        notify=recorder.notify,
        on_restart=recorder.on_restart,
    )


async def wait_for(runner: ReplicaRunner, state: ReplicaState, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while runner.replica.state is not state:
        assert time.monotonic() < deadline, f"{runner.replica.state} is not {state}"
        await asyncio.sleep(0.02)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_crash_restart_and_stop(tmp_path: Path) -> None:
    recorder = Recorder()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        runner = make_runner(tmp_path, session, recorder)
        runner.start()
        try:
            await wait_for(runner, ReplicaState.READY)
            assert runner.load_seconds is not None and runner.ready_at is not None
            assert runner.process is not None
            first_pid = runner.process.pid
            os.killpg(first_pid, signal.SIGKILL)
            await wait_for(runner, ReplicaState.CRASHED)
            await wait_for(runner, ReplicaState.READY)
            assert runner.process.pid != first_pid
            assert runner.restarts == recorder.restarts == 1
            assert runner.record().restarts == 1
        finally:
            await runner.stop()
    assert recorder.states == [
        ReplicaState.STARTING,
        ReplicaState.READY,
        ReplicaState.CRASHED,
        ReplicaState.STARTING,
        ReplicaState.READY,
        ReplicaState.STOPPED,
    ]
    assert runner.process is not None and not group_alive(runner.process.pid)
    assert "listening on" in (tmp_path / "replica-r0.log").read_text()


async def test_wrong_model_never_becomes_ready_and_is_restarted(tmp_path: Path) -> None:
    recorder = Recorder()
    settings = SETTINGS.model_copy(update={"ready_timeout_s": 1.0})
    (port,) = free_ports(1)
    async with aiohttp.ClientSession() as session:
        runner = make_runner(
            tmp_path, session, recorder, command=fake_engine(port, "other"), settings=settings
        )
        # make_runner picked its own port; the probe must look where the process listens.
        runner.port, runner.root_url = port, f"http://127.0.0.1:{port}"
        runner.start()
        try:
            await wait_for(runner, ReplicaState.UNHEALTHY)
            await wait_for(runner, ReplicaState.STARTING)
            assert runner.restarts == 1
            assert not await is_ready(session, runner.root_url, "fake")
        finally:
            await runner.stop()
    assert ReplicaState.READY not in recorder.states


async def test_drain_waits_for_outstanding_requests(tmp_path: Path) -> None:
    recorder = Recorder()
    async with aiohttp.ClientSession() as session:
        runner = make_runner(tmp_path, session, recorder)
        runner.start()
        try:
            await wait_for(runner, ReplicaState.READY)
            runner.replica.outstanding = 1
            draining = asyncio.create_task(runner.drain(deadline=time.monotonic() + 10))
            await asyncio.sleep(0.3)
            assert runner.replica.state is ReplicaState.DRAINING
            assert not draining.done()
            runner.replica.outstanding = 0
            await asyncio.wait_for(draining, 2)
            # A crash while draining must not bring the replica back into routing.
            assert runner.process is not None
            os.killpg(runner.process.pid, signal.SIGKILL)
            await asyncio.sleep(0.5)
            assert runner.replica.state is ReplicaState.DRAINING
        finally:
            await runner.stop()
        assert runner.record().state == "stopped"


async def test_drain_gives_up_at_the_deadline(tmp_path: Path) -> None:
    replica = Replica(id="r0", model="m", base_url="http://127.0.0.1:9/v1", upstream_model="x")
    replica.outstanding = 3
    async with aiohttp.ClientSession() as session:
        runner = ReplicaRunner(
            replica=replica,
            port=9,
            command=fake_engine(9),
            log_path=tmp_path / "r.log",
            settings=SETTINGS,
            session=session,
            notify=lambda r: None,
            on_restart=lambda r: None,
        )
        started = time.monotonic()
        await runner.drain(deadline=started + 0.3)
        assert 0.25 < time.monotonic() - started < 2


async def test_probe_wants_the_served_model() -> None:
    upstream = FakeUpstream(model="fake")
    await upstream.start()
    try:
        root = upstream.base_url.removesuffix("/v1")
        async with aiohttp.ClientSession() as session:
            assert await is_ready(session, root, "fake")
            assert not await is_ready(session, root, "other")
    finally:
        await upstream.stop()


@pytest.mark.parametrize("count", [1, 4])
def test_free_ports_are_distinct(count: int) -> None:
    ports = free_ports(count)
    assert len(set(ports)) == count


async def test_missing_engine_binary_counts_as_a_crash(tmp_path: Path) -> None:
    recorder = Recorder()
    missing = EngineCommand(argv=(str(tmp_path / "no-venv" / "bin" / "python"),))
    async with aiohttp.ClientSession() as session:
        runner = make_runner(tmp_path, session, recorder, command=missing)
        runner.start()
        try:
            await wait_for(runner, ReplicaState.CRASHED)
            deadline = time.monotonic() + 5
            while runner.restarts < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        finally:
            await runner.stop()


async def test_a_slow_load_is_reported_while_it_lasts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A replica that never serves the expected model stands in for one still loading.
    monkeypatch.setattr(replica_runner, "LOADING_NOTE_INTERVAL_S", 0.2)
    caplog.set_level(logging.INFO, logger=replica_runner.__name__)
    (port,) = free_ports(1)
    async with aiohttp.ClientSession() as session:
        runner = make_runner(tmp_path, session, Recorder(), command=fake_engine(port, "other"))
        runner.port, runner.root_url = port, f"http://127.0.0.1:{port}"
        runner.start()
        try:
            deadline = time.monotonic() + 10
            while "still loading" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                await asyncio.sleep(0.05)
        finally:
            await runner.stop()
    assert f"replica r0 starting: vLLM loads the model; log {tmp_path}" in caplog.text
