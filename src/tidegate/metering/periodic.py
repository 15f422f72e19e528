"""A background step repeated on an interval, sooner when woken (used by every metering job)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tidegate.store.errors import StoreUnavailableError

logger = logging.getLogger(__name__)


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
