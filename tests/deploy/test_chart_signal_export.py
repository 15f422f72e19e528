"""The gateway as the chart configures it exports the scaling signal the pool's ScaledObject
queries, on the metrics listener Prometheus scrapes, and its value makes KEDA's HPA want the
replicas tidegate's ScalingDecider wants: one policy, two executors, through the real gateway."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.chart import named, render
from tests.support.gateway import ADMIN_KEY, auth, free_port
from tidegate.app import build_app
from tidegate.autoscaling.policy import ScalingDecider, ScalingSample, effective_target
from tidegate.config import AutoscalingPolicy, Config
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

MODEL = "fake-model"
POLICY = {"enabled": True, "min_replicas": 1, "max_replicas": 4, "target": 1.0}


async def _loopback(host: str) -> Sequence[str]:
    """The pool's headless Service: one pod, the fake engine on loopback."""
    return ["127.0.0.1"]


def _gateway_config(manifests: list[dict[str, Any]], tmp_path: Path) -> Config:
    """The ConfigMap's config, moved onto loopback ports and a temporary home."""
    raw = yaml.safe_load(
        named(manifests, "ConfigMap", "tg-tidegate-gateway")["data"]["config.yaml"]
    )
    raw["home"] = str(tmp_path)
    raw["admin_key"] = ADMIN_KEY
    raw["server"].update(
        host="127.0.0.1", port=free_port(), metrics_host="127.0.0.1", metrics_port=free_port()
    )
    return Config.model_validate(raw)


def _signal(text: str, pool: str, signal: str) -> float | None:
    for family in text_string_to_metric_families(text):
        if family.name == "tidegate_pool_scaling_signal":
            for sample in family.samples:
                if sample.labels == {"pool": pool, "signal": signal}:
                    return float(sample.value)
    return None


async def test_the_gateway_exports_the_signal_its_scaled_object_queries(tmp_path: Path) -> None:
    fake = FakeUpstream(model=MODEL, behaviour=FakeBehaviour(tokens=2, first_token_delay_s=5.0))
    await fake.start()
    values = {
        "engines": {
            "port": fake.port,
            "pools": [
                {
                    "name": "chat",
                    "model": "org/fake",
                    "servedModelName": MODEL,
                    "profile": {"max_num_seqs": 2},
                    "autoscaling": POLICY,
                }
            ],
        }
    }
    manifests = render(values)
    scaled = named(manifests, "ScaledObject", "tg-tidegate-engine-chat")["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["metadata"]["query"] == (
        f'sum(tidegate_pool_scaling_signal{{pool="{MODEL}",signal="in_flight_per_replica"}})'
    )
    config = _gateway_config(manifests, tmp_path)
    app = build_app(config, dns_resolver=_loopback)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=config.server.port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    metrics_url = f"http://127.0.0.1:{config.server.metrics_port}/metrics"
    calls: list[asyncio.Task[httpx.Response]] = []
    try:
        while not server.started:
            assert not task.done(), "the gateway exited during startup"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{config.server.port}", timeout=30
        ) as client:
            # Three requests on one replica that serves two at a time: 2 in flight, 1 waiting.
            calls.extend(
                asyncio.create_task(
                    client.post("/v1/chat/completions", json=chat, headers=auth(ADMIN_KEY))
                )
                for _ in range(3)
            )
            # While the first two are in flight (5 s), the third waits in the gateway's queue.
            deadline = time.monotonic() + 4
            value = None
            while value != 3.0:
                assert time.monotonic() < deadline, f"the signal stayed at {value}"
                await asyncio.sleep(0.05)
                value = _signal(
                    (await client.get(metrics_url)).text, MODEL, "in_flight_per_replica"
                )
    finally:
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        server.should_exit = True
        await asyncio.wait_for(task, timeout=60)
        await fake.stop()
    # KEDA's HPA (metricType Value): ceil(current × value / threshold), clamped to min/max.
    threshold = float(trigger["metadata"]["threshold"])
    hpa = min(
        scaled["maxReplicaCount"], max(scaled["minReplicaCount"], math.ceil(value / threshold))
    )
    policy = AutoscalingPolicy.model_validate(POLICY)
    decider = ScalingDecider(policy, target=effective_target(policy, None))
    decision = decider.decide(
        ScalingSample(
            now=0.0,
            routed_ready=1,
            standby_ready=0,
            starting=0,
            signal_value=value,
            requests_seen=True,
        )
    )
    assert hpa == decision.desired_routed == 3
