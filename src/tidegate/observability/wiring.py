"""Observability for the app's lifespan: metrics, tracing, the access log and the metrics
listener. Built first, so everything after can report; stopped last but the store."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from opentelemetry.sdk.trace.export import SpanExporter

from tidegate.config import Config
from tidegate.observability.access_log import AccessLog
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.metrics_listener import MetricsListener
from tidegate.observability.tracing import Tracing

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Observability:
    metrics: GatewayMetrics
    tracing: Tracing
    access_log: AccessLog


def wire_observability(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    access_log: AccessLog | None,
    span_exporter: SpanExporter | None,
) -> Observability:
    """``access_log`` and ``span_exporter``: where tests collect what the app writes."""
    tracing = Tracing(
        service_name=config.telemetry.service_name,
        otlp_endpoint=config.telemetry.otlp_endpoint,
        exporter=span_exporter,
    )
    stack.callback(tracing.shutdown)
    log = access_log or AccessLog(enabled=config.server.access_log)
    log.start()
    stack.push_async_callback(log.stop)
    return Observability(metrics=GatewayMetrics(), tracing=tracing, access_log=log)


async def start_metrics_listener(
    config: Config, stack: contextlib.AsyncExitStack, metrics: GatewayMetrics
) -> None:
    """The separate no-token /metrics port (server.metrics_port), if configured."""
    server = config.server
    if server.metrics_port is None:
        return
    listener = MetricsListener(
        registry=metrics.registry, host=server.metrics_host, port=server.metrics_port
    )
    await listener.start()
    stack.push_async_callback(listener.stop)
    _log.info("metrics listener on %s (no token)", listener.url)
