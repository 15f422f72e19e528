"""Prometheus metrics with fixed label sets.

Every label value comes from a bounded set the operator controls: ``model`` is a public model
name from the routing table (an unknown name is recorded as ``unknown``), ``route`` is one of
``protocol.endpoints.ENDPOINTS``, ``outcome`` one of ``errors.OUTCOMES``, ``kind`` one of
``errors.UPSTREAM_ERROR_KINDS``, ``replica`` a replica id from config. Nothing a client sends
becomes a label value as it is. Each app gets its own registry, so tests and several apps in
one process never collide.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNKNOWN_MODEL = "unknown"
NO_TENANT = "none"
"""Tenant label of requests rejected before their key was known."""
OTHER_TENANTS = "other"
"""Tenant label once more than ``max_tenant_labels`` tenants have been seen."""

RejectionReason = Literal[
    "auth",
    "validation",
    "content_policy",
    "rate_limit",
    "concurrency",
    "budget",
    "limiter_unavailable",
    "overload",
]

QueueRejection = Literal["queue_full", "queue_timeout", "deadline"]
QUEUE_REJECTIONS: tuple[QueueRejection, ...] = ("queue_full", "queue_timeout", "deadline")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1, 2.5)


class GatewayMetrics:
    """The gateway's own metrics, on a registry of its own."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, max_tenant_labels: int = 1000
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._max_tenant_labels = max_tenant_labels
        self._tenant_labels: set[str] = set()
        r = self.registry
        self.requests = Counter(
            "tidegate_requests",
            "Requests by public model, route and outcome class.",
            ["model", "route", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "tidegate_request_duration_seconds",
            "Time from request received to last byte sent.",
            ["model", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tidegate_time_to_first_token_seconds",
            "Time from request received to the first content chunk (streaming).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "tidegate_inter_token_latency_seconds",
            "Time between consecutive streamed chunks.",
            ["model"],
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tidegate_prompt_tokens", "Prompt tokens reported by upstreams.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "tidegate_completion_tokens",
            "Completion tokens reported by upstreams.",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "tidegate_in_flight_requests", "Requests being served now.", ["model"], registry=r
        )
        self._in_flight_by_model: dict[str, Gauge] = {}
        self.upstream_errors = Counter(
            "tidegate_upstream_errors",
            "Failed upstream exchanges by kind.",
            ["model", "kind"],
            registry=r,
        )
        self.replica_state = Gauge(
            "tidegate_replica_state",
            "1 for the state each replica is in, 0 for the others.",
            ["model", "replica", "state"],
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "tidegate_model_load_seconds",
            "Seconds the replica's last start took until it was ready.",
            ["model", "replica"],
            registry=r,
        )
        self.replica_restarts = Counter(
            "tidegate_replica_restarts",
            "Times a replica was restarted after a crash or failed health checks.",
            ["model", "replica"],
            registry=r,
        )
        # Per tenant: tenants are created by operators only, and past max_tenant_labels further
        # tenants share the label "other", so the series count stays bounded.
        self.tenant_requests = Counter(
            "tidegate_tenant_requests",
            "Requests by tenant and outcome class.",
            ["tenant", "outcome"],
            registry=r,
        )
        self.tenant_tokens = Counter(
            "tidegate_tenant_tokens",
            "Tokens by tenant and kind (prompt or completion).",
            ["tenant", "kind"],
            registry=r,
        )
        self.tenant_rejections = Counter(
            "tidegate_tenant_rejections",
            "Requests refused by the gateway, by tenant and reason.",
            ["tenant", "reason"],
            registry=r,
        )
        # The scheduler's queues; `class` is a scheduling class (interactive or batch).
        self.queue_depth = Gauge(
            "tidegate_queue_depth",
            "Requests waiting in the gateway's queue, by pool and class.",
            ["model", "class"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "tidegate_queue_wait_seconds",
            "Time a request waited for a slot (0 when one was free), by pool and class.",
            ["model", "class"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_rejections = Counter(
            "tidegate_queue_rejections",
            "Requests refused by the scheduler, by pool, class and reason.",
            ["model", "class", "reason"],
            registry=r,
        )
        # Normalised vLLM engine metrics, scraped from each replica's /metrics.
        self.engine_requests_running = Gauge(
            "tidegate_engine_requests_running",
            "Requests running in the engine (vllm:num_requests_running).",
            ["model", "replica"],
            registry=r,
        )
        self.engine_requests_waiting = Gauge(
            "tidegate_engine_requests_waiting",
            "Requests waiting in the engine's own queue (vllm:num_requests_waiting).",
            ["model", "replica"],
            registry=r,
        )
        self.engine_kv_cache_usage = Gauge(
            "tidegate_engine_kv_cache_usage_ratio",
            "KV cache use, 0..1 (vllm:kv_cache_usage_perc or the older gpu_cache_usage_perc).",
            ["model", "replica"],
            registry=r,
        )
        self.engine_prefix_cache_hits = Gauge(
            "tidegate_engine_prefix_cache_hits",
            "Prefix cache hit tokens since the engine started (vllm:prefix_cache_hits).",
            ["model", "replica"],
            registry=r,
        )
        self.engine_prefix_cache_queries = Gauge(
            "tidegate_engine_prefix_cache_queries",
            "Prefix cache queried tokens since the engine started (vllm:prefix_cache_queries).",
            ["model", "replica"],
            registry=r,
        )

    def in_flight_for(self, model: str) -> Gauge:
        """The in-flight gauge of ``model``, looked up once per model (``labels`` costs ~1.5 µs
        per call on the hot path)."""
        gauge = self._in_flight_by_model.get(model)
        if gauge is None:
            gauge = self._in_flight_by_model[model] = self.in_flight.labels(model)
        return gauge

    def tenant_label(self, tenant: str | None) -> str:
        if tenant is None:
            return NO_TENANT
        if tenant in self._tenant_labels:
            return tenant
        if len(self._tenant_labels) >= self._max_tenant_labels:
            return OTHER_TENANTS
        self._tenant_labels.add(tenant)
        return tenant
