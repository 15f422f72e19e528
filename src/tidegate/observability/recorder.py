"""Turns a finished request's record into metrics and an access-log line.

The labelled children of each metric are kept here once made: ``labels()`` validates the values
and takes the metric's lock on every call, a few microseconds each and seven per request, where
a dict lookup does. Every label value comes from a bounded set (see ``metrics``), so the cache
is bounded too; none of these series is ever removed, so a cached child never goes stale.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram

from tidegate.observability.access_log import AccessLog
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.records import RequestRecord


class _Children:
    """One metric's children by label values."""

    __slots__ = ("_metric", "_children")

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def get(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class RequestRecorder:
    def __init__(self, *, metrics: GatewayMetrics, access_log: AccessLog) -> None:
        self._metrics = metrics
        self._access_log = access_log
        self._requests = _Children(metrics.requests)
        self._duration = _Children(metrics.request_duration)
        self._ttft = _Children(metrics.ttft)
        self._prompt_tokens = _Children(metrics.prompt_tokens)
        self._completion_tokens = _Children(metrics.completion_tokens)
        self._tenant_requests = _Children(metrics.tenant_requests)
        self._tenant_tokens = _Children(metrics.tenant_tokens)
        self._tenant_rejections = _Children(metrics.tenant_rejections)

    def finish(self, record: RequestRecord) -> float:
        """Record metrics and the access line; returns the request's duration in seconds."""
        duration = time.perf_counter() - record.started
        model = record.model
        self._requests.get(model, record.route, record.outcome).inc()
        self._duration.get(model, record.route).observe(duration)
        if record.ttft_s is not None:
            self._ttft.get(model).observe(record.ttft_s)
        if record.prompt_tokens:
            self._prompt_tokens.get(model).inc(record.prompt_tokens)
        if record.completion_tokens:
            self._completion_tokens.get(model).inc(record.completion_tokens)
        if record.tenant is not None or record.rejection is not None:
            tenant = self._metrics.tenant_label(record.tenant)
            self._tenant_requests.get(tenant, record.outcome).inc()
            if record.prompt_tokens:
                self._tenant_tokens.get(tenant, "prompt").inc(record.prompt_tokens)
            if record.completion_tokens:
                self._tenant_tokens.get(tenant, "completion").inc(record.completion_tokens)
            if record.rejection is not None:
                self._tenant_rejections.get(tenant, record.rejection).inc()
        self._access_log.write(record, duration)
        return duration
