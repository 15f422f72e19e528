"""The burst run's gateway metrics: one exposition parsed into replicas, desired counts, first
requests and the queue-wait histogram; the timeline, the scale-up times and per-phase figures
built from a series of scrapes."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tidegate_bench.burst.gateway_metrics import (
    GatewaySample,
    Snapshot,
    nearest,
    parse_sample,
)
from tidegate_bench.burst.gateway_metrics import (
    Histogram as Hist,
)
from tidegate_bench.burst.scraper import ScrapeLog, default_metrics_url
from tidegate_bench.burst.sla import parse_sla
from tidegate_bench.burst.summary import burst_block, replicas_timeline, scale_up, series
from tidegate_bench.phases import BurstPlan
from tidegate_bench.records import RequestRecord

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Gateway:
    """The metric families a tidegate gateway exports, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.replicas = Gauge("tidegate_pool_replicas", "", ["pool", "state"], registry=r)
        self.desired = Gauge("tidegate_pool_desired_replicas", "", ["pool"], registry=r)
        self.first = Gauge(
            "tidegate_replica_first_request_timestamp_seconds", "", ["pool", "replica"], registry=r
        )
        self.wait = Histogram(
            "tidegate_queue_wait_seconds", "", ["model", "class"], buckets=BUCKETS, registry=r
        )
        self.events = Counter(
            "tidegate_pool_scale_events", "", ["pool", "direction", "reason"], registry=r
        )

    def set(self, pool: str, desired: int, **states: int) -> None:
        self.desired.labels(pool).set(desired)
        for state in ("starting", "standby", "ready", "draining"):
            self.replicas.labels(pool, state).set(states.get(state, 0))

    def sample(self, pools: tuple[str, ...] = ()) -> GatewaySample:
        return parse_sample(generate_latest(self.registry).decode(), pools=pools)


def test_one_exposition_parses_into_the_figures_a_burst_reports() -> None:
    gw = Gateway()
    gw.set("chat", 2, ready=1, starting=1)
    gw.set("other", 1, ready=1, standby=1)
    gw.first.labels("chat", "chat-r0").set(1_700_000_000.5)
    gw.first.labels("chat", "chat-r1")  # created, never served: 0, not a first request
    gw.events.labels("chat", "up", "queue_pressure").inc()
    for value in (0.0, 0.02, 0.3, 4.0):
        gw.wait.labels("chat", "interactive").observe(value)
    gw.wait.labels("other", "batch").observe(0.7)
    sample = gw.sample()
    assert sample.pools == ["chat", "other"]
    assert sample.desired == {"chat": 2.0, "other": 1.0}
    assert sample.replicas["chat"] == {"starting": 1.0, "standby": 0.0, "ready": 1.0,
                                       "draining": 0.0}  # fmt: skip
    assert sample.first_request_unix == {("chat", "chat-r0"): 1_700_000_000.5}
    # Summed over every series of the histogram.
    assert sample.queue_wait.count == 5 and sample.queue_wait.total_s == pytest.approx(5.02)
    only = gw.sample(pools=("chat",))
    assert only.pools == ["chat"] and only.queue_wait.count == 4


def test_text_that_is_not_an_exposition_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_sample("<html>not metrics</html>\n")


def test_histogram_quantiles_interpolate_inside_buckets_and_differences_subtract() -> None:
    gw = Gateway()
    series_ = gw.wait.labels("p", "interactive")
    for _ in range(10):
        series_.observe(0.003)  # bucket (0, 0.005]
    before = gw.sample().queue_wait
    for _ in range(10):
        series_.observe(0.4)  # bucket (0.25, 0.5]
    after = gw.sample().queue_wait
    delta = after.minus(before)
    assert delta.count == 10 and delta.mean_s == pytest.approx(0.4)
    # Ten observations in (0.25, 0.5]: the median sits halfway, p95 at 95% of the bucket.
    assert delta.quantile(0.5) == pytest.approx(0.375)
    assert delta.quantile(0.95) == pytest.approx(0.25 + 0.25 * 0.95)
    assert after.quantile(0.25) == pytest.approx(0.0025)
    assert Hist((), 0, 0).quantile(0.5) is None and Hist((), 0, 0).mean_s is None
    # A restarted gateway's counters start again: the later scrape alone is the difference.
    assert before.minus(after) == before
    # Past the last finite bound only that bound is known.
    beyond = Hist(((1.0, 0.0), (math.inf, 4.0)), 4.0, 40.0)
    assert beyond.quantile(0.5) == 1.0


def test_default_metrics_url_sits_beside_the_api() -> None:
    assert default_metrics_url("http://10.0.0.1:8080/v1") == "http://10.0.0.1:8080/metrics"
    assert default_metrics_url("https://gw.example/tg/v1/") == "https://gw.example/tg/metrics"


def _record(i: int, scheduled: float, ttft: float, *, status: int = 200) -> RequestRecord:
    error = "" if status == 200 else ("http_429" if status == 429 else "http_5xx")
    return RequestRecord(
        index=i, target="gw", tenant="default", scheduled_s=scheduled, sent_s=scheduled,
        end_s=scheduled + ttft + 0.1, content_s=(scheduled + ttft,) if not error else (),
        prompt_tokens=10, output_tokens=4 if not error else None, cached_tokens=None,
        token_mismatch=False, status=status, error=error,
    )  # fmt: skip


def _timeline() -> tuple[list[Snapshot], float]:
    """Scrapes of a pool that scales 1 -> 2 during a burst from t=10 to t=20 s."""
    gw = Gateway()
    start_unix = 1_800_000_000.0
    snaps = []
    wait = gw.wait.labels("chat", "interactive")
    for t in range(-1, 32):  # t=-1: the probe before the run
        if t == 12:
            gw.set("chat", 2, ready=1, starting=1)
        elif t == 17:
            gw.set("chat", 2, ready=2)
            gw.first.labels("chat", "chat-r1").set(start_unix + 17.4)
        elif t == 28:
            gw.set("chat", 1, ready=1, draining=1)
        elif t == 30:
            gw.set("chat", 1, ready=1)
            gw.first.remove("chat", "chat-r1")  # stopped: its series goes
        elif t == -1:
            gw.set("chat", 1, ready=1)
            gw.first.labels("chat", "chat-r0").set(start_unix - 100)
        if 10 < t <= 20:
            wait.observe(1.5)  # waits ending during the burst
        elif t > 0:
            wait.observe(0.001)
        snaps.append(Snapshot(float(t), start_unix + t, gw.sample()))
    return snaps, start_unix


def test_replicas_timeline_and_scale_up_times() -> None:
    snaps, start_unix = _timeline()
    timeline = replicas_timeline(snaps)
    assert list(timeline) == ["chat"]
    rows = timeline["chat"]
    assert rows[0] == {"t_s": -1.0, "desired": 1.0, "starting": 0.0, "standby": 0.0,
                       "ready": 1.0, "draining": 0.0}  # fmt: skip
    assert [r["desired"] for r in rows if r["t_s"] in (11.0, 12.0, 29.0)] == [1.0, 2.0, 1.0]
    plan = BurstPlan(baseline_s=10, burst_s=10, cooldown_s=10, factor=4)
    records = [_record(i, t / 2, 0.05) for i, t in enumerate(range(60))]
    log = ScrapeLog(tuple(snaps), failures=0, last_error="")
    block = burst_block(
        plan=plan, records=records, scrapes=log, metrics_url="http://gw/metrics",
        metrics_error="", started_unix=start_unix, sla=None,
    )  # fmt: skip
    up = block["scale_up"]["chat"]
    assert up["ready_at_burst_start"] == 1.0 and up["max_desired"] == 2.0
    assert up["to_desired_up_s"] == 2.0 and up["to_ready_up_s"] == 7.0
    # chat-r0 served before the burst: the new replica is chat-r1, 7.4 s after the burst began
    # (stopped before the last scrape, still found in the earlier ones).
    assert up["new_replica"] == "chat-r1"
    assert up["to_new_replica_first_request_s"] == pytest.approx(7.4)
    waits = {p["name"]: p for p in block["phases"]}
    assert waits["burst"]["queue_wait_count"] == 10
    assert waits["burst"]["queue_wait_mean_ms"] == pytest.approx(1500.0)
    assert 1000 < waits["burst"]["queue_wait_p95_ms"] <= 2500
    assert waits["baseline"]["queue_wait_p95_ms"] < 5  # ten waits of 1 ms
    # The last phase runs to the final scrape.
    assert waits["cooldown"]["queue_wait_count"] == 11


def test_phase_figures_errors_series_and_sla_verdict() -> None:
    plan = BurstPlan(baseline_s=2, burst_s=2, cooldown_s=2, factor=3)
    records = [_record(0, 0.5, 0.1), _record(1, 1.5, 0.2)]
    records += [_record(2 + i, 2.0 + i * 0.25, 1.0 + i * 0.1) for i in range(6)]
    records += [_record(8, 2.1, 0, status=429), _record(9, 3.9, 0, status=503)]
    records += [_record(10, 4.5, 0.1), _record(11, 5.5, 0.1)]
    block = burst_block(
        plan=plan, records=records, scrapes=None, metrics_url=None, metrics_error="",
        started_unix=0.0, sla=parse_sla("ttft_p95=1s,error_rate=0.1,queue_wait_p95=1s"),
    )  # fmt: skip
    baseline, burst, cooldown = block["phases"]
    assert (burst["requests"], burst["completed"], burst["failed"]) == (8, 6, 2)
    assert (burst["http_429"], burst["http_503"], burst["error_rate"]) == (1, 1, 0.25)
    assert burst["offered_rps"] == 4.0 and baseline["offered_rps"] == 1.0
    assert burst["ttft_p50_ms"] == pytest.approx(1250.0)
    assert baseline["ttft_p95_ms"] == pytest.approx(195.0)
    assert burst["queue_wait_p95_ms"] is None and block["scale_up"] == {}
    outcomes = {(c["phase"], c["key"]): c["outcome"] for c in block["sla"]["checks"]}
    assert outcomes[("baseline", "ttft_p95")] == "pass"
    assert outcomes[("burst", "ttft_p95")] == "fail"
    assert outcomes[("burst", "error_rate")] == "fail"
    assert outcomes[("cooldown", "queue_wait_p95")] == "unmeasured"
    assert block["sla"]["verdict"] == "fail"
    rows = series(records, plan.total_s, 1.0)
    assert [r["offered_rps"] for r in rows] == [1.0, 1.0, 5.0, 3.0, 1.0, 1.0]
    assert rows[2]["errors"] == 1.0 and rows[3]["errors"] == 1.0
    assert rows[0]["ttft_p95_ms"] == pytest.approx(100.0)


def test_nearest_scrape() -> None:
    snaps = [Snapshot(t, t, GatewaySample()) for t in (-0.1, 1.0, 2.01, 3.0)]
    assert nearest(snaps, 0.0).t_s == -0.1  # type: ignore[union-attr]
    assert nearest(snaps, 2.0).t_s == 2.01  # type: ignore[union-attr]
    assert nearest(snaps, math.inf).t_s == 3.0  # type: ignore[union-attr]
    assert nearest([], 1.0) is None


def test_a_pool_that_scaled_before_the_burst_reports_a_negative_time() -> None:
    gw = Gateway()
    gw.set("chat", 1, ready=1)
    start_unix = 1_800_000_000.0
    snaps = [Snapshot(-0.5, start_unix - 0.5, gw.sample())]
    gw.first.labels("chat", "r0").set(start_unix + 0.2)  # the incumbent: it serves first
    gw.set("chat", 2, ready=2)
    gw.first.labels("chat", "r1").set(start_unix + 3.0)  # in the baseline, before the burst
    snaps.append(Snapshot(4.0, start_unix + 4.0, gw.sample()))
    up = scale_up(snaps, replicas_timeline(snaps), 5.0, start_unix)["chat"]
    assert up["new_replica"] == "r1"
    assert up["to_new_replica_first_request_s"] == pytest.approx(-2.0)
    # Before r1 served, only the incumbent had: no new replica yet.
    gw.first.remove("chat", "r1")
    early = [snaps[0], Snapshot(4.0, start_unix + 4.0, gw.sample())]
    assert scale_up(early, replicas_timeline(early), 5.0, start_unix)["chat"]["new_replica"] is None
