"""The burst scenario against an autoscaling local pool: the real gateway and supervisor with
fake-server replicas (the stand-in engine venv of ``test_autoscaling_pool``: 2 slots each, ~1 s
per request). The bench's replicas timeline, scale-up times and time to the new replica's first
request come from the gateway's own metrics, and agree with what the pool did."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_autoscaling_pool import MODEL, gateway, scaling_config
from tests.support.gateway import ADMIN_KEY
from tidegate_bench.burst.run import BurstOutcome, GatewayWatch, run_burst
from tidegate_bench.burst.sla import parse_sla
from tidegate_bench.phases import BurstPlan
from tidegate_bench.runner import LoadPoint, RunSettings
from tidegate_bench.schedule import ArrivalProcess
from tidegate_bench.spec import Target
from tidegate_bench.tokenizer import TokenCounter
from tidegate_bench.workloads import Lengths, synthetic

LOAD_S = 1.5


async def _burst(base_url: str) -> BurstOutcome:
    # One replica serves ~2 req/s: 1 req/s is easy, 4 req/s for 5 s queues.
    plan = BurstPlan(baseline_s=2, burst_s=5, cooldown_s=3, factor=4)
    counter = TokenCounter(None)
    return await run_burst(
        target=Target(name="gw", url=base_url + "/v1", model=MODEL, key=ADMIN_KEY),
        point=LoadPoint(label="burst", process=ArrivalProcess(shape="constant", rate=1.0),
                        phases=plan.phases()),
        plan=plan,
        settings=RunSettings(duration_s=plan.total_s, timeout_s=60),
        prompts=synthetic(count=100, input_len=Lengths(mean=8), output_len=Lengths(mean=4),
                          counter=counter, seed=0),
        tenants=[], counter=counter,
        watch=GatewayWatch(url=base_url + "/metrics", token=ADMIN_KEY, interval_s=0.25),
        sla=parse_sla("error_rate=0"),
    )  # fmt: skip


async def test_a_new_replica_shows_in_the_timeline_and_serves_after_loading(
    tmp_path: Path,
) -> None:
    config = scaling_config(tmp_path, warm_standby=0, load_s=LOAD_S)
    async with gateway(config) as gw:

        async def loaded() -> bool:
            return await gw.replicas("ready") == 1

        await gw.until(loaded)
        outcome = await _burst(str(gw.http.base_url).rstrip("/"))
    block = outcome.block
    assert block["gateway"]["error"] == "" and block["gateway"]["failed_scrapes"] == 0
    rows = block["replicas"][MODEL]
    assert rows[0]["ready"] == 1 and rows[0]["desired"] == 1
    assert any(r["starting"] == 1 for r in rows)  # the new replica was seen loading
    up = block["scale_up"][MODEL]
    assert up["ready_at_burst_start"] == 1 and up["max_desired"] == 2 and up["max_ready"] == 2
    assert up["new_replica"] == "r1"
    # Asked for within the burst, routed only once loaded: at least LOAD_S after the burst began.
    assert up["to_desired_up_s"] is not None and up["to_desired_up_s"] < 3
    assert up["to_ready_up_s"] is not None and up["to_ready_up_s"] >= LOAD_S
    first = up["to_new_replica_first_request_s"]
    assert first is not None and LOAD_S <= first < 5
    assert block["sla"]["verdict"] == "pass"  # every request answered
    burst = block["phases"][1]
    assert burst["queue_wait_count"] and burst["queue_wait_p95_ms"] > 100


async def test_a_warm_standby_serves_the_burst_at_once(tmp_path: Path) -> None:
    config = scaling_config(tmp_path, warm_standby=1, load_s=LOAD_S)
    async with gateway(config) as gw:

        async def loaded() -> bool:
            return await gw.replicas("ready") == 1 and await gw.replicas("standby") == 1

        await gw.until(loaded)
        outcome = await _burst(str(gw.http.base_url).rstrip("/"))
    block = outcome.block
    rows = block["replicas"][MODEL]
    assert rows[0]["standby"] == 1 and rows[0]["ready"] == 1
    up = block["scale_up"][MODEL]
    assert up["new_replica"] == "r1" and up["max_ready"] == 2
    # Promoted, not loaded: its first request comes well before a load would have ended.
    first = up["to_new_replica_first_request_s"]
    assert first is not None and first < LOAD_S
    assert block["sla"]["verdict"] == "pass"
