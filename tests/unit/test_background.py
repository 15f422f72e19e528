"""The background-task helpers every long-lived loop and on-demand task of the gateway uses."""

from __future__ import annotations

import asyncio

import pytest

from tidegate.background import BackgroundTask, TaskSet


async def test_a_background_task_runs_until_stopped_and_starts_once() -> None:
    ticks = 0
    started = 0

    async def loop() -> None:
        nonlocal ticks, started
        started += 1
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = BackgroundTask("ticker", loop)
    assert not task.running
    task.start()
    task.start()  # already running: no second loop
    for _ in range(5):
        await asyncio.sleep(0)
    assert task.running and started == 1 and ticks > 0
    await task.stop()
    assert not task.running
    seen = ticks
    await asyncio.sleep(0.01)
    assert ticks == seen  # cancelled, not just forgotten
    await task.stop()  # stopping a stopped task is fine


async def test_stop_raises_what_ended_the_task() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = BackgroundTask("fails", fails)
    task.start()
    await asyncio.sleep(0)
    assert not task.running
    with pytest.raises(RuntimeError, match="boom"):
        await task.stop()
    await task.stop()  # once: the task is gone


async def test_a_task_set_holds_tasks_until_done_and_cancels_the_rest() -> None:
    tasks = TaskSet()
    release = asyncio.Event()
    finished: list[str] = []

    async def quick() -> None:
        finished.append("quick")

    async def waits() -> None:
        await release.wait()
        finished.append("waits")  # never: cancelled first

    tasks.spawn(quick())
    slow = tasks.spawn(waits())
    assert len(tasks) == 2
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert finished == ["quick"] and tasks.snapshot() == {slow}
    await tasks.cancel_all()
    assert slow.cancelled() and len(tasks) == 0 and finished == ["quick"]
