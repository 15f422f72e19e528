"""The gateway's background work, in one place: how a task beside the requests is started, kept
referenced, stopped and how its failures are logged.

- ``BackgroundTask``: one long-lived, named coroutine (a health-check loop, a scraper, a ticker);
  ``stop`` cancels it and waits for it to end.
- ``Periodic``: a step repeated on an interval, sooner when woken, that stops after the step in
  progress and outlives a failing one (metering, rollouts, batches, cluster shares).
- ``TaskSet``: short-lived tasks started on demand (shadow calls, batch lines), referenced until
  they finish so the event loop cannot drop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tidegate.store.errors import StoreUnavailableError

__all__ = ["BackgroundTask", "Periodic", "TaskSet"]

logger = logging.getLogger(__name__)


class BackgroundTask:
    """Runs ``run()`` in a task named ``name`` from ``start`` until ``stop``. Starting a running
    one does nothing."""

    __slots__ = ("_name", "_run", "_task")

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancel the task and wait for it; an error that ended it earlier is raised here."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Periodic:
    """Runs `step` every `interval_s` in its own task. A failing step is logged and tried again
    at the next tick: background jobs must outlive a store outage."""

    def __init__(
        self, *, name: str, interval_s: float, step: Callable[[], Awaitable[object]]
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"{name}: interval_s must be positive")
        self._name = name
        self._interval = interval_s
        self._step = step
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self._name)

    @property
    def running(self) -> bool:
        """The loop's task is alive (a failing step does not end it)."""
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Run the step now instead of at the next tick (call on the event loop's thread)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop after the step in progress, if any, finishes (the caller runs a final one)."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._step()
            except StoreUnavailableError as exc:
                logger.warning("%s: %s; retrying in %.1fs", self._name, exc, self._interval)
            except Exception:
                logger.exception("%s failed; retrying in %.1fs", self._name, self._interval)


class TaskSet:
    """Tasks started on demand and held until done (the loop keeps only weak references)."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def snapshot(self) -> set[asyncio.Task[None]]:
        """The tasks running now (a copy: finishing ones leave the set meanwhile)."""
        return set(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task and wait until all have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
