"""The load tester against the fake upstream with known latencies: metrics match what was
injected, and the paired comparison finds an injected 20% difference and none between twins.

Tolerances come from the injected delays: sleeps only ever run late, so each figure is bounded
below by the injected value and above by it plus a generous allowance for a loaded machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tidegate_bench.metrics import target_figures
from tidegate_bench.records import RequestRecord
from tidegate_bench.results import comparisons
from tidegate_bench.runner import LoadPoint, LoadRunner, RunSettings
from tidegate_bench.schedule import ArrivalProcess
from tidegate_bench.spec import Slo, Target, Tenant
from tidegate_bench.tokenizer import TokenCounter
from tidegate_bench.workloads import Lengths, synthetic
from tidegate_testing.fake_server import FakeBehaviour, FakeUpstream

TOKENS = 10
FIRST_S = 0.05
TOKEN_S = 0.01
SLACK_MS = 25.0  # scheduler and timer lateness on a busy two-core machine


async def _fake(first_s: float, token_s: float) -> FakeUpstream:
    behaviour = FakeBehaviour(tokens=TOKENS, first_token_delay_s=first_s, token_delay_s=token_s)
    fake = FakeUpstream(model="fake-model", behaviour=behaviour)
    await fake.start()
    return fake


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeUpstream]]:
    started = [await _fake(FIRST_S, TOKEN_S), await _fake(FIRST_S, TOKEN_S),
               await _fake(FIRST_S, TOKEN_S * 1.2)]  # fmt: skip
    yield started
    for fake in started:
        await fake.stop()


def _prompts(n: int = 40) -> list:  # type: ignore[type-arg]
    counter = TokenCounter(None)
    return synthetic(count=n, input_len=Lengths(mean=12), output_len=Lengths(mean=50),
                     counter=counter, seed=0)  # fmt: skip


async def _run(targets: list[tuple[Target, str]], point: LoadPoint, **settings: object):  # type: ignore[no-untyped-def]
    runner = LoadRunner(targets=targets, prompts=_prompts(), tenants=settings.pop("tenants", []),  # type: ignore[arg-type]
                        settings=RunSettings(**settings), counter=TokenCounter(None))  # type: ignore[arg-type]  # fmt: skip
    try:
        return await runner.run(point)
    finally:
        runner.close()


def _target(name: str, fake: FakeUpstream) -> tuple[Target, str]:
    return Target(name=name, url=fake.base_url), fake.model


async def test_metrics_match_the_injected_latencies(fakes: list[FakeUpstream]) -> None:
    target = _target("a", fakes[0])
    result = await _run([target], LoadPoint(label="c=2", concurrency=2), count=20)
    records = result.records["a"]
    assert len(records) == 20 and all(r.ok for r in records)
    assert all(r.output_tokens == TOKENS and not r.token_mismatch for r in records)
    slo = Slo(ttft_ms=FIRST_S * 1000 + 200)
    fig = target_figures(target=target[0], model="fake-model", records=records,
                         window_start_s=0.0, slo=slo, csv_path="")  # fmt: skip
    ttft, tpot, itl, e2el = (fig[k] for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"))
    assert FIRST_S * 1000 <= ttft["median"] <= FIRST_S * 1000 + SLACK_MS  # type: ignore[index]
    assert TOKEN_S * 1000 <= tpot["median"] <= TOKEN_S * 1000 + SLACK_MS / 5  # type: ignore[index]
    assert TOKEN_S * 1000 * 0.9 <= itl["median"] <= TOKEN_S * 1000 + SLACK_MS / 5  # type: ignore[index]
    expected_e2e = (FIRST_S + (TOKENS - 1) * TOKEN_S) * 1000
    assert expected_e2e <= e2el["median"] <= expected_e2e + SLACK_MS * 2  # type: ignore[index]
    # Two in flight, each taking at least the injected time: an upper bound on throughput.
    duration = fig["duration_s"]
    assert fig["request_throughput"] == pytest.approx(20 / duration)  # type: ignore[operator]
    assert fig["request_throughput"] <= 2 / (expected_e2e / 1000)  # type: ignore[operator]
    assert fig["request_throughput"] >= 2 / (expected_e2e / 1000 + 0.1)  # type: ignore[operator]
    assert fig["output_throughput"] == pytest.approx(fig["request_throughput"] * TOKENS)  # type: ignore[operator]
    assert fig["goodput"] == pytest.approx(fig["request_throughput"])
    slo = Slo(ttft_ms=FIRST_S * 1000 / 2)
    strict = target_figures(target=target[0], model="fake-model", records=records,
                            window_start_s=0.0, slo=slo, csv_path="")  # fmt: skip
    assert strict["goodput"] == 0.0


async def test_open_loop_latency_counts_from_the_schedule(fakes: list[FakeUpstream]) -> None:
    point = LoadPoint(label="rate=20", process=ArrivalProcess(shape="constant", rate=20.0))
    result = await _run([_target("a", fakes[0])], point, count=10, warmup_s=0.08, cooldown_s=0.08)
    records: list[RequestRecord] = result.records["a"]
    assert [r.scheduled_s for r in records] == pytest.approx([i / 20 for i in range(10)], abs=1e-9)
    assert all(r.sent_s >= r.scheduled_s for r in records)
    # Two arrivals fall in the warm-up and two in the cool-down: kept, but not measured.
    assert [r.measured for r in records] == [False] * 2 + [True] * 6 + [False] * 2


async def test_paired_comparison_finds_twenty_percent_and_not_twins(
    fakes: list[FakeUpstream],
) -> None:
    targets = [_target("a", fakes[0]), _target("twin", fakes[1]), _target("slow", fakes[2])]
    point = LoadPoint(label="rate=20", process=ArrivalProcess(shape="constant", rate=20.0))
    result = await _run(targets, point, count=40)
    rows = comparisons(result, ["a", "twin", "slow"], seed=0, min_effect=0.05)
    found = {(c["b"], c["metric"]): c for c in rows if c["a"] == "a"}
    for metric in ("ttft_ms", "e2el_ms", "tpot_ms"):
        assert not found[("twin", metric)]["significant"], found[("twin", metric)]
    tpot = found[("slow", "tpot_ms")]
    assert tpot["significant"] and tpot["ci95"][0] > 0
    assert tpot["ratio"] == pytest.approx(1.2, abs=0.1)
    assert found[("slow", "e2el_ms")]["significant"]
    assert not found[("slow", "ttft_ms")]["significant"]


async def test_tenants_keys_and_priority_headers_are_sent(fakes: list[FakeUpstream]) -> None:
    tenants = [Tenant(name="gold", key="k-gold", weight=3, priority="high"),
               Tenant(name="free", key="k-free", weight=1)]  # fmt: skip
    point = LoadPoint(label="c=4", concurrency=4)
    result = await _run([_target("a", fakes[0])], point, count=40, tenants=tenants)
    names = [r.tenant for r in result.records["a"]]
    assert 20 <= names.count("gold") <= 38 and names.count("free") >= 2
    auth = [h.get("authorization") for h in fakes[0].request_headers]
    assert set(auth) == {"Bearer k-gold", "Bearer k-free"}
    gold = [h for h in fakes[0].request_headers if h.get("authorization") == "Bearer k-gold"]
    assert all(h.get("x-tidegate-priority") == "high" for h in gold)


async def test_errors_are_classified(fakes: list[FakeUpstream]) -> None:
    fakes[0].behaviour.fault = "status_500"
    result = await _run([_target("a", fakes[0])], LoadPoint(label="c=1", concurrency=1), count=3)
    assert {r.error for r in result.records["a"]} == {"http_5xx"}
    dead = Target(name="dead", url="http://127.0.0.1:9/v1")
    result = await _run([(dead, "m")], LoadPoint(label="c=1", concurrency=1), count=2)
    assert {r.error for r in result.records["dead"]} == {"connect"}
