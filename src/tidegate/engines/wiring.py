"""Local engines for the app's lifespan: the supervisor that starts the vLLM replicas (only with
``engines.replicas`` > 0; its import is deferred until then), scales the autoscaling pools on
the scheduler's queues, and drains them first at shutdown."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tidegate.config import Config
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import RoutingTable
from tidegate.scheduling.scheduler import Scheduler


def local_model_dir(config: Config) -> str | None:
    """The local engines' model directory, whose tokenizer validation uses; None: no local
    engines, or a model vLLM downloads itself."""
    if config.engines.replicas <= 0:
        return None
    from tidegate.engines.model_prepare import resolve_model

    resolved = resolve_model(config)
    return resolved if Path(resolved).is_dir() else None


async def start_engines(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    routing: RoutingTable,
    metrics: GatewayMetrics,
    scheduler: Scheduler | None = None,
    audit: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
) -> None:
    """``scheduler``: the pools' queues the autoscalers read; ``audit``: records a pool's
    scale event (pool name, details)."""
    if config.engines.replicas <= 0:
        return
    from tidegate.engines.supervisor import EngineSupervisor  # only `up` with engines needs it

    engines = EngineSupervisor(
        config=config, routing=routing, metrics=metrics, scheduler=scheduler, audit=audit
    )
    # Registered before start(): a replica that started must be stopped, even when another one
    # failed to.
    stack.push_async_callback(engines.stop)
    await engines.start()
