"""Turns a finished request's record into metrics and an access-log line."""

from __future__ import annotations

import time

from tidegate.observability.access_log import AccessLog
from tidegate.observability.metrics import GatewayMetrics
from tidegate.observability.records import RequestRecord


class RequestRecorder:
    def __init__(self, *, metrics: GatewayMetrics, access_log: AccessLog) -> None:
        self._metrics = metrics
        self._access_log = access_log

    def finish(self, record: RequestRecord) -> float:
        """Record metrics and the access line; returns the request's duration in seconds."""
        duration = time.perf_counter() - record.started
        m = self._metrics
        m.requests.labels(record.model, record.route, record.outcome).inc()
        m.request_duration.labels(record.model, record.route).observe(duration)
        if record.ttft_s is not None:
            m.ttft.labels(record.model).observe(record.ttft_s)
        if record.prompt_tokens:
            m.prompt_tokens.labels(record.model).inc(record.prompt_tokens)
        if record.completion_tokens:
            m.completion_tokens.labels(record.model).inc(record.completion_tokens)
        if record.tenant is not None or record.rejection is not None:
            tenant = m.tenant_label(record.tenant)
            m.tenant_requests.labels(tenant, record.outcome).inc()
            if record.prompt_tokens:
                m.tenant_tokens.labels(tenant, "prompt").inc(record.prompt_tokens)
            if record.completion_tokens:
                m.tenant_tokens.labels(tenant, "completion").inc(record.completion_tokens)
            if record.rejection is not None:
                m.tenant_rejections.labels(tenant, record.rejection).inc()
        self._access_log.write(record, duration)
        return duration
