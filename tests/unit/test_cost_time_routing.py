"""Cost- and time-aware routing without a server: rule time windows on a fake clock (time
zones, a daylight-saving change, days of the week, the per-minute cache), the cheapest pool
meeting the TTFT target with predicted waits, the route reasons, the cost per request against
`tidegate bench`'s own formula, and the config errors."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from croniter import croniter
from pydantic import ValidationError

from tidegate.config import Config, ModelRoute, RouteRule, SchedulingConfig, TimeWindow
from tidegate.routing.cost import PoolEconomics, cheapest_first, pool_economics
from tidegate.routing.replicas import Pool, Replica, ReplicaState
from tidegate.routing.rules import (
    CHEAPEST,
    FASTEST,
    FIRST,
    ONLY_MEETING_TARGET,
    SPILLOVER,
    RequestTraits,
    Route,
)
from tidegate.routing.windows import CompiledWindow
from tidegate.scheduling.scheduler import Scheduler
from tidegate_bench.cost import cost_block, total_cost
from tidegate_bench.spec import Prices

TRAITS = RequestTraits(tier="interactive", prompt_tokens=10, response_format="text", quality=None)


class FakeClock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(cron: str, zone: str, clock: FakeClock) -> CompiledWindow:
    return CompiledWindow(TimeWindow(cron=cron, timezone=zone), clock)


# -- time windows -------------------------------------------------------------------------------


def test_a_window_reads_the_wall_clock_of_its_zone() -> None:
    # 2026-12-02 (a Wednesday) 08:30 UTC is 09:30 in Berlin (CET, +1) and 03:30 in New York.
    clock = FakeClock(utc(2026, 12, 2, 8, 30))
    berlin = window("* 9-17 * * 1-5", "Europe/Berlin", clock)
    new_york = window("* 9-17 * * 1-5", "America/New_York", clock)
    in_utc = window("* 9-17 * * 1-5", "UTC", clock)
    assert berlin.is_open()
    assert not new_york.is_open()
    assert not in_utc.is_open()
    clock.set(utc(2026, 12, 2, 16, 59))  # 17:59 Berlin, the window's last minute; 11:59 NY
    assert berlin.is_open() and new_york.is_open() and in_utc.is_open()
    clock.set(utc(2026, 12, 2, 17, 0))  # 18:00 Berlin: closed there
    assert not berlin.is_open()
    assert new_york.is_open() and in_utc.is_open()


def test_a_window_follows_the_daylight_saving_change() -> None:
    # New York moves from EST (-5) to EDT (-4) on Sunday 2026-03-08 at 02:00 local.
    clock = FakeClock(utc(2026, 3, 6, 13, 30))  # Friday 08:30 EST: before the window
    nine_to_five = window("* 9-17 * * 1-5", "America/New_York", clock)
    assert not nine_to_five.is_open()
    clock.set(utc(2026, 3, 9, 13, 30))  # Monday: the same UTC time is 09:30 EDT
    assert nine_to_five.is_open()
    # The skipped hour: 02:xx never happens on 2026-03-08; 06:59 UTC is 01:59 EST and the
    # next minute 03:00 EDT.
    two_am = window("* 2 * * *", "America/New_York", clock)
    clock.set(utc(2026, 3, 8, 6, 59))
    assert not two_am.is_open()
    clock.set(utc(2026, 3, 8, 7, 0))
    assert not two_am.is_open()
    three_am = window("* 3 * * *", "America/New_York", clock)
    assert three_am.is_open()
    # The repeated hour in November: 01:xx happens twice, both times inside the window.
    one_am = window("* 1 * * *", "America/New_York", clock)
    clock.set(utc(2026, 11, 1, 5, 30))  # 01:30 EDT
    assert one_am.is_open()
    clock.set(utc(2026, 11, 1, 6, 30))  # 01:30 EST, an hour later
    assert one_am.is_open()
    clock.set(utc(2026, 11, 1, 7, 30))  # 02:30 EST
    assert not one_am.is_open()


def test_a_window_matches_days_of_the_week() -> None:
    clock = FakeClock(utc(2026, 12, 5, 12, 0))  # Saturday noon
    weekdays = window("* * * * 1-5", "Asia/Tokyo", clock)
    weekend = window("* * * * 0,6", "Asia/Tokyo", clock)
    assert not weekdays.is_open() and weekend.is_open()
    # Sunday 15:00 UTC is already Monday 00:00 in Tokyo (+9).
    clock.set(utc(2026, 12, 6, 14, 59))
    assert not weekdays.is_open() and weekend.is_open()
    clock.set(utc(2026, 12, 6, 15, 0))
    assert weekdays.is_open() and not weekend.is_open()


def test_a_window_is_evaluated_once_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[datetime] = []
    real = croniter.match

    def counting(cron: str, at: datetime) -> bool:
        calls.append(at)
        return bool(real(cron, at))

    monkeypatch.setattr(croniter, "match", counting)
    clock = FakeClock(utc(2026, 12, 2, 10, 0, 1))
    hours = window("* 10 * * *", "UTC", clock)
    for second in range(1, 60):
        clock.set(utc(2026, 12, 2, 10, 0, second))
        assert hours.is_open()
    assert len(calls) == 1
    clock.set(utc(2026, 12, 2, 11, 0, 0))
    assert not hours.is_open()
    assert len(calls) == 2 and calls[-1] == datetime(2026, 12, 2, 11, 0)  # wall clock, naive


def test_a_rule_with_a_window_picks_its_chain_only_inside_it() -> None:
    clock = FakeClock(utc(2026, 12, 2, 10, 0))
    route = Route.from_config(
        ModelRoute(
            model="chat",
            pools=["managed"],
            rules=[
                RouteRule(pools=["big"], quality=["high"]),
                RouteRule(
                    pools=["local", "managed"],
                    window=TimeWindow(cron="* 8-19 * * 1-5", timezone="Europe/Berlin"),
                ),
            ],
        ),
        clock=clock,
    )
    inside = route.branch(TRAITS)
    assert inside.pools == ("local", "managed")
    assert inside.reasons[FIRST] == "time_window:1"
    assert inside.headers[SPILLOVER] == b"time_window:1/spillover"
    high = RequestTraits(
        tier="interactive", prompt_tokens=1, response_format="text", quality="high"
    )
    assert route.branch(high).reasons[FIRST] == "rule:0"
    clock.set(utc(2026, 12, 2, 19, 0))  # 20:00 in Berlin
    outside = route.branch(TRAITS)
    assert outside.pools == ("managed",)
    assert outside.reasons[FIRST] == "default"
    assert route.branch(TRAITS) is outside  # made once, not per request


def test_an_implicit_route_remakes_its_default_branch_when_it_grows() -> None:
    route = Route(model="m", pools=("a",))
    first = route.branch(None)
    route.extend("b")
    assert route.branch(None).pools == ("a", "b") and route.branch(None) is not first


# -- the cheapest pool meeting the target --------------------------------------------------------


def pool(name: str) -> Pool:
    replica = Replica(
        id="r0", model="m", pool=name, provider="openai", base_url="http://x/v1",
        upstream_model="m", state=ReplicaState.READY,
    )  # fmt: skip
    return Pool(name, replicas=[replica])


LOCAL = PoolEconomics(input_usd_per_token=0.0, output_usd_per_token=1e-6, expected_ttft_s=0.1)
MANAGED = PoolEconomics(
    input_usd_per_token=0.15e-6, output_usd_per_token=0.6e-6, expected_ttft_s=0.4
)
ECONOMICS = {"local": LOCAL, "managed": MANAGED}


def order(
    waits: dict[str, float], *, target: float | None, prompt: int, completion: int
) -> tuple[list[str], int]:
    chain = (pool("local"), pool("managed"))
    ordered, pick = cheapest_first(
        chain,
        ECONOMICS,
        lambda p: waits[p.name],
        target_s=target,
        prompt_tokens=prompt,
        completion_tokens=completion,
    )
    return [p.name for p in ordered], pick


def test_the_cheaper_pool_goes_first_by_the_request_shape() -> None:
    idle = {"local": 0.0, "managed": 0.0}
    # A long prompt with a short answer: the managed API charges the prompt, local does not.
    assert order(idle, target=2.0, prompt=2000, completion=16) == (["local", "managed"], CHEAPEST)
    # A short prompt with a long answer: local's output token costs more than the API's.
    assert order(idle, target=2.0, prompt=10, completion=500) == (["managed", "local"], CHEAPEST)


def test_a_cheap_pool_whose_wait_breaks_the_target_is_skipped() -> None:
    busy = {"local": 1.95, "managed": 0.0}  # 1.95 + 0.1 > 2.0
    assert order(busy, target=2.0, prompt=2000, completion=16) == (
        ["managed", "local"],
        ONLY_MEETING_TARGET,
    )
    almost = {"local": 1.9, "managed": 0.0}  # 1.9 + 0.1 meets 2.0 exactly
    assert order(almost, target=2.0, prompt=2000, completion=16) == (
        ["local", "managed"],
        CHEAPEST,
    )


def test_when_no_pool_meets_the_target_the_quickest_leads() -> None:
    waits = {"local": 5.0, "managed": 3.0}
    assert order(waits, target=1.0, prompt=2000, completion=16) == (["managed", "local"], FASTEST)
    unavailable = {"local": math.inf, "managed": 3.0}
    assert order(unavailable, target=1.0, prompt=1, completion=1)[0] == ["managed", "local"]


def test_without_a_target_every_pool_meets_it() -> None:
    waits = {"local": 60.0, "managed": 0.0}
    assert order(waits, target=None, prompt=2000, completion=16) == (["local", "managed"], CHEAPEST)


def test_the_unchanged_order_is_the_same_chain() -> None:
    chain = (pool("local"), pool("managed"))
    ordered, _ = cheapest_first(
        chain, ECONOMICS, lambda p: 0.0, target_s=None, prompt_tokens=2000, completion_tokens=1
    )
    assert ordered is chain


def test_the_scheduler_predicts_no_wait_with_a_free_slot() -> None:
    clock = [0.0]
    scheduler = Scheduler(config=SchedulingConfig(), default_concurrency=1, clock=lambda: clock[0])
    local = pool("local")
    assert scheduler.expected_wait_s(local, "interactive") == 0.0
    slot = scheduler.try_acquire(local, "interactive")
    assert slot is not None
    clock[0] = 0.5
    slot.release()  # the pool's mean hold time is now 0.5 s
    assert scheduler.expected_wait_s(local, "interactive") == 0.0
    held = scheduler.try_acquire(local, "interactive")
    assert held is not None
    assert scheduler.expected_wait_s(local, "interactive") == pytest.approx(0.5)


# -- the cost per request ------------------------------------------------------------------------


def test_the_self_hosted_price_is_the_bench_per_million_output_tokens(tmp_path: Path) -> None:
    config = Config(
        home=tmp_path,
        pricing={"gpt-mini": {"input_per_million": 0.15, "output_per_million": 0.6}},
        routing={
            "pools": [
                {"name": "local", "cost": {"accelerator_per_hour": 2.5, "output_throughput": 800}},
                {"name": "managed", "cost": {"pricing_model": "gpt-mini"}, "expected_ttft_s": 0.4},
            ]
        },
    )
    table = pool_economics(config)
    # What `tidegate bench` reports for a self-hosted target that sustained 800 tok/s for 60 s.
    duration, throughput = 60.0, 800
    usd = total_cost(Prices(accelerator_per_hour=2.5), [], duration)  # paid by the hour
    block = cost_block(usd, completed=60, good=None, output_tokens=int(throughput * duration))
    per_million = block["per_million_output_tokens_usd"]
    assert per_million is not None
    assert table["local"].request_usd(5000, 1_000_000) == pytest.approx(per_million)
    assert table["managed"].request_usd(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table["managed"].expected_ttft_s == 0.4


# -- config errors -------------------------------------------------------------------------------


def load(tmp_path: Path, **fields: Any) -> Config:
    return Config(home=tmp_path, engines={"replicas": 0}, **fields)


def rule_route(**rule: Any) -> dict[str, Any]:
    return {"routes": [{"model": "m", "pools": ["a"], "rules": [{"pools": ["a"], **rule}]}]}


@pytest.mark.parametrize(
    ("window_fields", "field", "message"),
    [
        ({"cron": "* 25 * * *"}, "window.cron", "five-field cron"),
        ({"cron": "every day"}, "window.cron", "five-field cron"),
        ({"cron": "0 * * * * *"}, "window.cron", "five-field cron"),
        ({"cron": "* 9 * * *", "timezone": "Mars/Olympus"}, "window.timezone", "IANA"),
        ({"cron": "* 9 * * *", "timezone": "../../etc/passwd"}, "window.timezone", "IANA"),
    ],
)
def test_a_bad_window_is_a_config_error_naming_the_field(
    tmp_path: Path, window_fields: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        load(tmp_path, routing=rule_route(window=window_fields))
    text = str(raised.value)
    assert f"routing.routes.0.rules.0.{field}" in text and message in text


def test_a_cheapest_route_needs_every_pool_priced(tmp_path: Path) -> None:
    routing = {
        "pools": [{"name": "a", "cost": {"accelerator_per_hour": 1, "output_throughput": 10}}],
        "routes": [{"model": "m", "pools": ["a", "b"], "select": "cheapest"}],
    }
    with pytest.raises(ValidationError, match=r"routing.routes\[0\] selects the cheapest.*b "):
        load(tmp_path, routing=routing)
    rule = {"model": "m", "pools": ["a"], "rules": [{"pools": ["b"], "select": "cheapest"}]}
    with pytest.raises(ValidationError, match=r"routes\[0\].rules\[0\] selects the cheapest"):
        load(tmp_path, routing={**routing, "routes": [rule]})


def test_a_pool_cost_names_a_priced_model_or_a_self_hosted_price(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"routing.pools\[0\].cost.pricing_model: 'nope'"):
        load(tmp_path, routing={"pools": [{"name": "a", "cost": {"pricing_model": "nope"}}]})
    both = {"pricing_model": "x", "accelerator_per_hour": 1, "output_throughput": 1}
    with pytest.raises(ValidationError, match="not both"):
        load(tmp_path, routing={"pools": [{"name": "a", "cost": both}]})
    with pytest.raises(ValidationError, match="both accelerator_per_hour and output_throughput"):
        load(tmp_path, routing={"pools": [{"name": "a", "cost": {"accelerator_per_hour": 1}}]})
    with pytest.raises(ValidationError, match="greater than 0"):
        cost = {"accelerator_per_hour": 1, "output_throughput": 0}
        load(tmp_path, routing={"pools": [{"name": "a", "cost": cost}]})


BENCH_RESULT = Path(__file__).resolve().parents[1] / "data" / "bench" / "result.json"


def test_a_self_hosted_cost_can_come_from_a_bench_result(tmp_path: Path) -> None:
    cost = {"bench_result": str(BENCH_RESULT), "bench_target": "vllm-local", "bench_run": "c=10"}
    config = load(tmp_path, routing={"pools": [{"name": "local", "cost": cost}]})
    read = config.routing.pools[0].cost
    assert read is not None and read.output_throughput == 884.419
    # The run was priced at gpu_hour 2.5: its per_million_output_tokens_usd (0.7852) gives it back.
    assert read.accelerator_per_hour == pytest.approx(2.5, rel=1e-4)
    assert pool_economics(config)["local"].request_usd(0, 1_000_000) == pytest.approx(0.7852)
    # The last run by default; an accelerator price set by hand wins over the bench's.
    cost = {"bench_result": str(BENCH_RESULT), "bench_target": "vllm-local"}
    last = load(
        tmp_path,
        routing={"pools": [{"name": "local", "cost": {**cost, "accelerator_per_hour": 4.0}}]},
    )
    read = last.routing.pools[0].cost
    assert read is not None and (read.output_throughput, read.accelerator_per_hour) == (
        2624.809,
        4.0,
    )


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        ({"bench_result": "/nonexistent/result.json"}, "not a readable `tidegate bench run`"),
        ({"bench_result": str(BENCH_RESULT)}, "set bench_target to one of vllm-local, managed-api"),
        ({"bench_result": str(BENCH_RESULT), "bench_target": "nope"}, "set bench_target"),
        (
            {"bench_result": str(BENCH_RESULT), "bench_target": "vllm-local", "bench_run": "c=7"},
            "no run 'c=7' (runs: c=1, c=10, c=50)",
        ),
    ],
)
def test_a_bad_bench_result_is_a_config_error(
    tmp_path: Path, cost: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        load(tmp_path, routing={"pools": [{"name": "local", "cost": cost}]})
    assert "routing.pools.0.cost" in str(raised.value) and message in str(raised.value)
