"""The simulator against a real run: a burst through a real gateway (uvicorn on loopback) in front
of a fake upstream with fixed latencies and 2 slots, measured with the bench's own client and
written with the bench's own CSV writer; that CSV replayed by ``plan simulate`` with a pool
model calibrated the way a bench run calibrates it (unloaded requests, one at a time) predicts
the measured TTFT p95 within 25%.

The burst is 2.5× the pool's capacity for 2 s, so the p95 is made of the queue (about 2 s of
waiting): what the simulator has to get right, and large beside the host's timing noise.

The README's simulator example (``<!-- readme-test: simulate -->``) runs here too, as written,
from the repository root (its trace and policies are committed under docs/simulate/).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import orjson

from tests.integration.test_readme_examples import (
    ROOT,
    _env,
    assert_output_in_order,
    group,
    run_script,
)
from tests.support.gateway import ADMIN_KEY, auth, run_gateway
from tidegate.plan.pool_model import PoolModel
from tidegate.plan.simulate import QueueSettings, percentile, simulate
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
