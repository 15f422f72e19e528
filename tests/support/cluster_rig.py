"""The multi-gateway rig's readings: what the fake upstream had in flight at most, and what each
gateway says about its share of the pool (its /metrics)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import ADMIN_KEY
from tests.support.processes import Process


async def upstream_in_flight(http: aiohttp.ClientSession, upstream: Process) -> dict[str, int]:
    """The fake upstream's in_flight, peak_in_flight, completed, cancelled."""
    async with http.get(upstream.url + "/fake/in-flight") as response:
        assert response.status == 200
        data: dict[str, int] = await response.json()
        return data


async def reset_peak(http: aiohttp.ClientSession, upstream: Process) -> None:
    async with http.post(upstream.url + "/fake/in-flight/reset") as response:
        assert response.status == 200


async def gateway_sample(
    http: aiohttp.ClientSession, gateway: Process, name: str, labels: dict[str, str]
) -> float | None:
    """One sample of the gateway's /metrics (None: not there)."""
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with http.get(gateway.url + "/metrics", headers=auth) as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@dataclass
class Outcome:
    status: int
    latency_s: float
    finished_at: float
    body: dict[str, Any]


async def complete(
    http: aiohttp.ClientSession,
    gateway: Process,
    key: str,
    *,
    model: str,
    priority: str | None = None,
    max_tokens: int = 4,
) -> Outcome:
    headers = {"Authorization": f"Bearer {key}"}
    if priority is not None:
        headers["x-tidegate-priority"] = priority
    body = {"model": model, "prompt": [1, 2, 3], "max_tokens": max_tokens}
    start = time.monotonic()
    async with http.post(gateway.url + "/v1/completions", json=body, headers=headers) as response:
        data: dict[str, Any] = await response.json(content_type=None)
        end = time.monotonic()
        return Outcome(response.status, end - start, end, data)
