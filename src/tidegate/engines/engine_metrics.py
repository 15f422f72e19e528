"""vLLM's Prometheus metrics, normalised across vLLM versions, and the scraper that exports them.

vLLM renamed its metrics over time (``gpu_cache_usage_perc`` → ``kv_cache_usage_perc``, the CPU
build's ``cpu_cache_usage_perc``, ``gpu_prefix_cache_*`` → ``prefix_cache_*``) and counters come
with or without the ``_total`` suffix depending on the client library. ``parse_engine_metrics``
maps all of them onto one ``EngineSample``; label sets (one per engine core) are combined.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tidegate.background import BackgroundTask
from tidegate.observability.metrics import GatewayMetrics
from tidegate.routing.replicas import Replica

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSample:
    """One scrape of one replica; None where the engine does not export the metric."""

    requests_running: float | None = None
    requests_waiting: float | None = None
    kv_cache_usage: float | None = None
    prefix_cache_hits: float | None = None
    prefix_cache_queries: float | None = None


# Field → accepted names, newest first. The first name present wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": (
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:cpu_cache_usage_perc",
    ),
    "prefix_cache_hits": ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
}


def _sample_totals(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric name (``_total`` stripped): the sum and the maximum over its label sets."""
    sums: dict[str, float] = {}
    maxima: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            sums[name] = sums.get(name, 0.0) + sample.value
            maxima[name] = max(maxima.get(name, sample.value), sample.value)
    return sums, maxima


def parse_engine_metrics(text: str) -> EngineSample:
    """Normalise one /metrics body. Raises ValueError when the text is not Prometheus format."""
    sums, maxima = _sample_totals(text)
    found: dict[str, float | None] = {}
    for field_name, names in _ALIASES.items():
        name = next((n for n in names if n in sums), None)
        if name is None:
            found[field_name] = None
        elif field_name == "kv_cache_usage":
            # A ratio: adding the engine cores' ratios could exceed 1; the fullest one matters.
            found[field_name] = maxima[name]
        else:
            found[field_name] = sums[name]
    return EngineSample(**found)


def metrics_url(replica: Replica) -> str:
    return replica.base_url.rstrip("/").removesuffix("/v1") + "/metrics"


class EngineMetricsScraper:
    """Scrapes every ready replica's /metrics each ``interval_s`` into the gateway's gauges and
    the replica's ``engine_waiting`` and ``kv_cache_usage``."""

    def __init__(
        self,
        *,
        metrics: GatewayMetrics,
        replicas: Callable[[], Iterable[Replica]],
        interval_s: float,
        timeout_s: float = 5.0,
    ) -> None:
        self.metrics = metrics
        self.replicas = replicas
        self.interval_s = interval_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._task = BackgroundTask("engine-metrics-scraper", self._loop)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            while True:
                await self.scrape_once(session)
                await asyncio.sleep(self.interval_s)

    async def scrape_once(self, session: aiohttp.ClientSession) -> None:
        ready = [r for r in self.replicas() if r.ready]
        await asyncio.gather(*(self._scrape(session, r) for r in ready))

    async def _scrape(self, session: aiohttp.ClientSession, replica: Replica) -> None:
        try:
            async with session.get(metrics_url(replica)) as resp:
                resp.raise_for_status()
                text = await resp.text()
            sample = parse_engine_metrics(text)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # Health checks decide about the replica; a missed scrape only leaves gauges stale.
            log.debug("metrics scrape of %s failed: %s", replica.id, exc)
            return
        self.export(replica, sample)

    def export(self, replica: Replica, sample: EngineSample) -> None:
        # On the replica too: engine-signal balancing reads them per request.
        waiting = sample.requests_waiting
        replica.record_engine_load(
            waiting=None if waiting is None else int(waiting),
            kv_cache_usage=sample.kv_cache_usage,
        )
        labels = {"model": replica.model, "replica": replica.id}
        m = self.metrics
        for gauge, value in (
            (m.engine_requests_running, sample.requests_running),
            (m.engine_requests_waiting, sample.requests_waiting),
            (m.engine_kv_cache_usage, sample.kv_cache_usage),
            (m.engine_prefix_cache_hits, sample.prefix_cache_hits),
            (m.engine_prefix_cache_queries, sample.prefix_cache_queries),
        ):
            if value is not None:
                gauge.labels(**labels).set(value)
