"""The gateway's required dependencies (the store, the limit store): probed by /readyz and every
``interval_s`` in the background, reported as ``tidegate_dependency_up{dependency}``.

The label set is fixed (``store``, ``limit_store``) and a component's state names only its
kind and the error class, never a URL, a tenant or a key. The background probe is what makes the
gateway recover on its own: a limit store's probe ends its cooldown and renews its connections
as soon as Redis answers, without waiting for a request or a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from tidegate.background import BackgroundTask

DEPENDENCIES = ("store", "limit_store")
"""Every label value of tidegate_dependency_up."""

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Component:
    backend: str
    """What serves it (sqlite, postgresql, redis, memory): no address, no credentials."""
    probe: Callable[[], Awaitable[None]] | None
    """Raises when the dependency does not answer; None: in-process, always up."""
    up: bool = True
    error: str = ""
    since: float = 0.0
    """time.monotonic() of the last change of state."""

    def report(self, now: float) -> dict[str, object]:
        body: dict[str, object] = {"state": "up" if self.up else "down", "backend": self.backend}
        if not self.up:
            body["error"] = self.error
            body["down_for_s"] = round(now - self.since, 1)
        return body


class Dependencies:
    def __init__(
        self, *, registry: CollectorRegistry, interval_s: float = 2.0, timeout_s: float = 2.0
    ) -> None:
        self._components: dict[str, Component] = {}
        self._interval = interval_s
        self._timeout = timeout_s
        self._gauge = Gauge(
            "tidegate_dependency_up",
            "1 while a required dependency answers its health probe (store: the database; "
            "limit_store: Redis, or 1 for the in-process store), else 0.",
            labelnames=["dependency"],
            registry=registry,
        )
        self._checking: asyncio.Task[None] | None = None
        self._task = BackgroundTask("dependency-health", self._run)

    def add(self, name: str, *, backend: str, probe: Callable[[], Awaitable[None]] | None) -> None:
        if name not in DEPENDENCIES:
            raise ValueError(f"unknown dependency {name!r}; one of {DEPENDENCIES}")
        self._components[name] = Component(backend, probe, since=time.monotonic())
        self._gauge.labels(dependency=name).set(1)

    async def check(self) -> dict[str, dict[str, object]]:
        """Probe every dependency (one probe at a time however many callers) and report."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._probe_all())
        await asyncio.shield(self._checking)
        now = time.monotonic()
        return {name: c.report(now) for name, c in self._components.items()}

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        checking, self._checking = self._checking, None
        if checking is not None:  # a probe round /readyz asked for
            checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checking

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:  # a probe that fails is "down"; anything else must not end us
                _log.exception("dependency health check failed")

    async def _probe_all(self) -> None:
        await asyncio.gather(
            *(self._probe(name, c) for name, c in self._components.items() if c.probe)
        )

    async def _probe(self, name: str, component: Component) -> None:
        assert component.probe is not None
        try:
            await asyncio.wait_for(component.probe(), timeout=self._timeout)
        except Exception as error:  # whatever the reason, it does not answer: report the class
            self._set(name, component, up=False, error=_describe(error))
        else:
            self._set(name, component, up=True, error="")

    def _set(self, name: str, component: Component, *, up: bool, error: str) -> None:
        now = time.monotonic()
        if up != component.up:
            if up:
                _log.warning("%s (%s) is back after %.1f s", name, component.backend,
                             now - component.since)  # fmt: skip
            else:
                _log.error("%s (%s) does not answer: %s", name, component.backend, error)
            component.since = now
        component.up, component.error = up, error
        self._gauge.labels(dependency=name).set(1 if up else 0)


def _describe(error: BaseException) -> str:
    cause = error.__cause__
    if isinstance(error, TimeoutError):
        return "TimeoutError: no answer in time"
    if cause is not None:
        return f"{type(error).__name__} ({type(cause).__name__})"
    return type(error).__name__
