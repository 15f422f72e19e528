"""Normalising vLLM's /metrics across versions, and the scraper against a real fake server."""

from __future__ import annotations

import aiohttp
import pytest

from tidegate.engines.engine_metrics import (
    EngineMetricsScraper,
    EngineSample,
    metrics_url,
    parse_engine_metrics,
)
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import Replica, ReplicaState
from tidegate_testing.fake_server import FakeUpstream

# vLLM 0.10+ (V1 engine; 0.32 exports the same names): counters carry _total and _created.
V1_CURRENT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smol"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smol"} 1.0
# HELP vllm:num_requests_waiting_by_reason Waiting requests by reason.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="smol",reason="capacity"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smol"} 0.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="smol"} 120.0
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="smol"} 1.795610417e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="smol"} 48.0
# HELP vllm:external_prefix_cache_hits_total External prefix cache hits.
# TYPE vllm:external_prefix_cache_hits_total counter
vllm:external_prefix_cache_hits_total{engine="0",model_name="smol"} 999.0
"""

# vLLM 0.8–0.9 (early V1): the GPU-named cache metrics.
V1_EARLY = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
# TYPE vllm:gpu_prefix_cache_queries counter
vllm:gpu_prefix_cache_queries_total{engine="0",model_name="m"} 10.0
# TYPE vllm:gpu_prefix_cache_hits counter
vllm:gpu_prefix_cache_hits_total{engine="0",model_name="m"} 4.0
"""

# vLLM 0.6 (V0 engine): no prefix cache counters; the CPU block manager has its own gauge.
V0_CPU = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 1.0
# HELP vllm:num_requests_swapped Number of requests swapped to CPU.
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{model_name="m"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 5.0
# HELP vllm:cpu_cache_usage_perc CPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:cpu_cache_usage_perc gauge
vllm:cpu_cache_usage_perc{model_name="m"} 0.125
# HELP vllm:gpu_prefix_cache_hit_rate GPU prefix cache block hit rate.
# TYPE vllm:gpu_prefix_cache_hit_rate gauge
vllm:gpu_prefix_cache_hit_rate{model_name="m"} 0.3
"""

# Data parallel: one label set per engine core.
DATA_PARALLEL = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 5.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 1.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 2.0
"""

# No TYPE lines at all (a relabelling proxy, an exporter that strips metadata).
UNTYPED = """\
vllm:num_requests_running 4
vllm:prefix_cache_queries_total{model_name="m"} 9
"""


def test_current_v1_names() -> None:
    assert parse_engine_metrics(V1_CURRENT) == EngineSample(
        requests_running=2.0,
        requests_waiting=1.0,
        kv_cache_usage=0.25,
        prefix_cache_hits=48.0,
        prefix_cache_queries=120.0,
    )


def test_early_v1_gpu_names() -> None:
    assert parse_engine_metrics(V1_EARLY) == EngineSample(
        requests_running=3.0,
        requests_waiting=0.0,
        kv_cache_usage=0.5,
        prefix_cache_hits=4.0,
        prefix_cache_queries=10.0,
    )


def test_v0_cpu_names_without_prefix_counters() -> None:
    assert parse_engine_metrics(V0_CPU) == EngineSample(
        requests_running=1.0, requests_waiting=5.0, kv_cache_usage=0.125
    )


def test_label_sets_are_combined() -> None:
    sample = parse_engine_metrics(DATA_PARALLEL)
    assert sample.requests_running == 7.0
    assert sample.prefix_cache_hits == 3.0
    assert sample.kv_cache_usage == 0.7  # the fullest engine core, not a sum above 1


def test_untyped_samples() -> None:
    sample = parse_engine_metrics(UNTYPED)
    assert sample.requests_running == 4.0
    assert sample.prefix_cache_queries == 9.0


def test_empty_text() -> None:
    assert parse_engine_metrics("") == EngineSample()


def test_garbage_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse_engine_metrics("this is { not prometheus\n")


def replica_for(base_url: str, state: ReplicaState) -> Replica:
    return Replica(id="r0", model="smol", base_url=base_url, upstream_model="fake", state=state)


def test_metrics_url_drops_the_api_prefix() -> None:
    assert metrics_url(replica_for("http://h:1/v1", ReplicaState.READY)) == "http://h:1/metrics"


async def test_scraper_exports_ready_replicas_only() -> None:
    upstream = FakeUpstream(model="fake")
    await upstream.start()
    try:
        metrics = GatewayMetrics()
        ready = replica_for(upstream.base_url, ReplicaState.READY)
        starting = Replica(id="r1", model="smol", base_url=upstream.base_url, upstream_model="fake")
        scraper = EngineMetricsScraper(
            metrics=metrics, replicas=lambda: [ready, starting], interval_s=60
        )
        async with aiohttp.ClientSession() as session:
            await scraper.scrape_once(session)
        value = metrics.registry.get_sample_value
        labels = {"model": "smol", "replica": "r0"}
        assert value("tidegate_engine_requests_running", labels) == 0.0
        assert value("tidegate_engine_kv_cache_usage_ratio", labels) == 0.0
        assert value("tidegate_engine_requests_running", {**labels, "replica": "r1"}) is None
    finally:
        await upstream.stop()


async def test_scraper_survives_an_unreachable_replica() -> None:
    metrics = GatewayMetrics()
    gone = replica_for("http://127.0.0.1:9/v1", ReplicaState.READY)
    scraper = EngineMetricsScraper(metrics=metrics, replicas=lambda: [gone], interval_s=60)
    async with aiohttp.ClientSession() as session:
        await scraper.scrape_once(session)
    labels = {"model": "smol", "replica": "r0"}
    assert metrics.registry.get_sample_value("tidegate_engine_requests_running", labels) is None
