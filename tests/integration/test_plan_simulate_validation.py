"""The simulator against real runs, each recorded with the bench's own client and CSV writer
and that CSV replayed by ``plan simulate`` with a pool model calibrated the way a bench run
calibrates it (unloaded requests, one at a time):

- a fixed pool: a burst of 2.5× its capacity for 2 s through a real gateway (uvicorn on
  loopback) in front of a fake upstream with fixed latencies and 2 slots. The TTFT p95 is made
  of the queue (about 2 s of waiting), large beside the host's timing noise;
- an autoscaling pool (1 → 2): the real supervisor runs fake replicas that load for 3 s (the
  first one's measured load time is the simulator's cold start), and a burst scales it up.

Each time the simulated TTFT p95 (and the time from the burst's start to the new replica's
first request) is within 25% of the measured one. The README's simulator example
(``<!-- readme-test: simulate -->``) runs here too, as written, from the repository root (its
trace and policies are committed under docs/simulate/).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import orjson

from tests.integration.test_autoscaling_pool import MODEL as SCALING_MODEL
from tests.integration.test_autoscaling_pool import gateway as scaling_gateway
from tests.integration.test_autoscaling_pool import scaling_config
from tests.integration.test_readme_examples import (
    ROOT,
    _env,
    assert_output_in_order,
    group,
    run_script,
)
from tests.support.gateway import ADMIN_KEY, auth, run_gateway
from tidegate.engines.state_file import STATE_FILE_NAME, read_state
from tidegate.percentiles import percentile
from tidegate.plan.pool_model import PoolModel
from tidegate.plan.simulate import QueueSettings, simulate
from tidegate.plan.traces import load_trace
from tidegate_bench.client import BenchClient, Outcome
from tidegate_bench.records import RequestRecord
from tidegate_bench.results import write_csv
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

SLOTS = 2
TOKENS = 5
FIRST_TOKEN_S = 0.15
TOKEN_S = 0.01


def schedule() -> list[float]:
    """5 req/s for 2 s, 25 req/s for 2 s, 5 req/s for 2 s; the pool serves about 10 req/s."""
    baseline = [i * 0.2 for i in range(10)]
    burst = [2.0 + i * 0.04 for i in range(50)]
    cool = [4.0 + i * 0.2 for i in range(10)]
    return baseline + burst + cool


async def test_the_simulated_ttft_p95_of_a_burst_is_within_25_percent(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(
        tokens=TOKENS, first_token_delay_s=FIRST_TOKEN_S, token_delay_s=TOKEN_S
    )
    fake = FakeUpstream(model="fake-model", behaviour=behaviour)
    await fake.start()
    try:
        async with (
            run_gateway(
                tmp_path,
                upstreams=[fake],
                upstream_options={"max_concurrency": SLOTS},
                sections={"scheduling": {"interactive_reserve": 0.0}},
            ) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            tenant = await http.post(
                "/admin/tenants",
                json={"name": "burst", "tier": "interactive"},
                headers=auth(ADMIN_KEY),
            )
            assert tenant.status_code == 201, tenant.text
            created = await http.post(
                "/admin/keys",
                json={"name": "burst", "role": "member", "tenant_id": tenant.json()["id"]},
                headers=auth(ADMIN_KEY),
            )
            assert created.status_code == 201, created.text
            key = created.json()["key"]
            client = BenchClient(base_url=gateway.base_url, timeout_s=30.0)
            head = client.head(
                "POST",
                "/chat/completions",
                (("Content-Type", "application/json"), ("Authorization", f"Bearer {key}")),
            )
            body = orjson.dumps({
                "model": "fake-model", "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": TOKENS, "stream": True, "stream_options": {"include_usage": True},
            })  # fmt: skip
            try:
                pool = await calibrate(client, head, body)
                records = await replay(client, head, body, schedule())
            finally:
                client.close()
    finally:
        await fake.stop()

    assert all(r.ok for r in records), [r.error for r in records if not r.ok]
    csv_path = tmp_path / "burst.csv"
    write_csv(csv_path, records)
    trace = load_trace(csv_path)
    assert len(trace) == len(records)
    measured = percentile([v / 1000 for r in records if (v := r.ttft_ms) is not None], 95)
    result = simulate(trace, pool, 1, queue=QueueSettings())  # one replica of SLOTS slots
    simulated = result.ttft_percentile(95)
    assert measured is not None and simulated is not None
    assert measured > 1.0  # the queue made it, not the upstream's own latency
    assert abs(simulated - measured) <= 0.25 * measured, (simulated, measured)


async def calibrate(client: BenchClient, head: bytes, body: bytes) -> PoolModel:
    """TTFT and time per output token of unloaded requests, one at a time (as a bench run
    at concurrency 1 measures them)."""
    outcomes = [await client.request(head, body) for _ in range(5)]
    assert all(not o.error and o.content_times for o in outcomes)
    ttft = statistics.median(o.content_times[0] - o.sent for o in outcomes)
    tpot = statistics.median(
        (o.end - o.content_times[0]) / max(1, (o.completion_tokens or TOKENS) - 1) for o in outcomes
    )
    return PoolModel(max_concurrency=SLOTS, first_token_s=ttft, tpot_s=tpot)


async def replay(
    client: BenchClient, head: bytes, body: bytes, times: list[float]
) -> list[RequestRecord]:
    """An open loop at the given offsets; latencies count from each request's due time."""
    start = time.perf_counter() + 0.05

    async def one(index: int, offset: float) -> RequestRecord:
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        outcome: Outcome = await client.request(head, body)
        return RequestRecord(
            index=index,
            target="gateway",
            tenant="burst",
            scheduled_s=offset,
            sent_s=outcome.sent - start,
            end_s=outcome.end - start,
            content_s=tuple(t - start for t in outcome.content_times),
            prompt_tokens=outcome.prompt_tokens,
            output_tokens=outcome.completion_tokens,
            cached_tokens=outcome.cached_tokens,
            token_mismatch=False,
            status=outcome.status,
            error=outcome.error,
        )

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(times))))


def test_the_readme_simulator_example(tmp_path: Path) -> None:
    blocks = group("simulate")
    commands = [c for b in blocks for c in b.commands()]
    output = run_script(commands, cwd=ROOT, env=_env(tmp_path / "home"), timeout_s=120)
    assert_output_in_order(output, [line for b in blocks for line in b.expected_output()])


async def test_a_simulated_scale_up_matches_the_supervisors(tmp_path: Path) -> None:
    """An autoscaling pool (1 → 2) of fake replicas that load for 3 s, run by the real
    supervisor behind the real gateway: a burst of 2.5× one replica's capacity scales it up.
    The simulator, given the first replica's measured load time as the cold start, predicts the
    run's TTFT p95 and the time from the burst's start to the new replica's first request within
    25%."""
    config = scaling_config(tmp_path, warm_standby=0, load_s=3.0)
    policy = config.engines.autoscaling
    async with scaling_gateway(config) as gw:

        async def loaded() -> bool:
            return await gw.replicas("ready") == 1

        await gw.until(loaded)
        snapshot = read_state(config.state_dir / STATE_FILE_NAME)
        assert snapshot is not None
        (r0,) = snapshot.replicas
        assert r0.ready_at is not None and r0.started_at is not None
        cold_start_s = r0.ready_at - r0.started_at
        client = BenchClient(base_url=str(gw.http.base_url).rstrip("/") + "/v1", timeout_s=60.0)
        head = client.head(
            "POST",
            "/chat/completions",
            (("Content-Type", "application/json"), ("Authorization", f"Bearer {ADMIN_KEY}")),
        )
        body = orjson.dumps({
            "model": SCALING_MODEL, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True},
        })  # fmt: skip
        try:
            pool = await calibrate(client, head, body)
            # 1 req/s for 4 s, 5 req/s for 8 s, 1 req/s for 6 s; one replica serves 2 req/s.
            times = [i * 1.0 for i in range(4)]
            times += [4.0 + i * 0.2 for i in range(40)] + [12.0 + i * 1.0 for i in range(6)]
            wall_start = time.time() + 0.05
            records = await replay(client, head, body, times)
        finally:
            client.close()
        first_r1 = await gw.metric(
            "tidegate_replica_first_request_timestamp_seconds", pool=SCALING_MODEL, replica="r1"
        )
    assert all(r.ok for r in records), [r.error for r in records if not r.ok]
    assert first_r1 > 0, "the pool never scaled up"
    measured_first = first_r1 - (wall_start + 4.0)
    measured_p95 = percentile([v / 1000 for r in records if (v := r.ttft_ms) is not None], 95)

    csv_path = tmp_path / "scaling.csv"
    write_csv(csv_path, records)
    model = pool.with_options(cold_start_s=cold_start_s)  # max_num_seqs 2, as SLOTS
    result = simulate(load_trace(csv_path), model, policy, queue=QueueSettings())
    simulated_p95 = result.ttft_percentile(95)
    (new,) = [r for r in result.replicas if r.id == 1]
    assert new.first_request_s is not None
    simulated_first = new.first_request_s - 4.0
    assert measured_p95 is not None and simulated_p95 is not None
    figures = (simulated_p95, measured_p95, simulated_first, measured_first, cold_start_s)
    assert abs(simulated_p95 - measured_p95) <= 0.25 * measured_p95, figures
    assert abs(simulated_first - measured_first) <= 0.25 * measured_first, figures
