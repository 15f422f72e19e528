"""Every tidegate_* series the dashboard, the alerts and the KEDA query use is one the gateway
really exports (read from a live registry, not a list kept by hand)."""

from __future__ import annotations

import re

import yaml
from prometheus_client import Metric

from tests.deploy.chart import ROOT, by_kind, render
from tidegate.config import SchedulingConfig
from tidegate.engines.scaling_metrics import ScalingMetrics
from tidegate.observability.dependencies import Dependencies
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.pool_metrics import register_pool_metrics
from tidegate.routing.replicas import Replica, RoutingTable
from tidegate.scheduling.scheduler import Scheduler
from tidegate.scheduling.signals import SignalExporter

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _series(metric: Metric) -> set[str]:
    return {metric.name + suffix for suffix in _SUFFIXES.get(metric.type, ("",))}


def exported() -> set[str]:
    metrics = GatewayMetrics()
    routing = RoutingTable()
    routing.add(Replica(id="r", model="m", base_url="http://x/v1", upstream_model="m"))
    register_pool_metrics(metrics.registry, routing=routing, default_concurrency=8)
    Dependencies(registry=metrics.registry)
    ScalingMetrics(metrics.registry)
    # The signal every pool exports (test_chart_signal_export: a k8s gateway sets it).
    scheduler = Scheduler(config=SchedulingConfig(), default_concurrency=8)
    SignalExporter(routing=routing, scheduler=scheduler, registry=metrics.registry)
    return {name for metric in metrics.registry.collect() for name in _series(metric)}


def used(text: str) -> set[str]:
    return set(re.findall(r"\btidegate_[a-z_]+", text)) - {"tidegate_requests_per_second"}


def test_dashboard_alerts_and_keda_use_exported_metrics() -> None:
    names = exported()
    assert "tidegate_pool_saturation" in names and "tidegate_requests_total" in names
    assert {"tidegate_pool_circuit_open", "tidegate_pool_ejected_replicas"} <= names
    dashboard = (ROOT / "deploy" / "grafana" / "tidegate.json").read_text()
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text()
    keda = yaml.safe_dump(
        by_kind(
            render({"engines": {"defaults": {"autoscaling": {"enabled": True}}}}), "ScaledObject"
        )
    )
    for source, text in {"dashboard": dashboard, "alerts": alerts, "keda": keda}.items():
        assert used(text), source
        assert used(text) <= names, f"{source} uses {sorted(used(text) - names)}"
