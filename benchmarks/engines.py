"""Local vLLM replicas for the real-engine benchmarks: started, awaited, always stopped."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from rich.console import Console

from tidegate.config import Config
from tidegate.engines.supervisor import EngineSupervisor
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import RoutingTable


@contextlib.asynccontextmanager
async def ready_engines(
    config: Config, *, ready_timeout_s: float, console: Console
) -> AsyncIterator[EngineSupervisor]:
    """The config's local replicas, ready; stopped on the way out whatever happens."""
    supervisor = EngineSupervisor(config=config, routing=RoutingTable(), metrics=GatewayMetrics())
    started = time.monotonic()
    await supervisor.start()
    try:
        if not await supervisor.wait_ready(ready_timeout_s):
            raise RuntimeError(f"the vLLM replicas were not ready; see {config.logs_dir}")
        count = len(supervisor.replicas)
        console.log(f"{count} vLLM replica(s) ready in {time.monotonic() - started:.0f} s")
        yield supervisor
    finally:
        await supervisor.stop()
