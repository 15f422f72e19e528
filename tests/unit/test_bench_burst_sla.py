"""``--sla``: strict parsing (every malformed part is refused with its reason) and the verdict."""

from __future__ import annotations

import pytest

from tidegate_bench.burst.sla import check_phases, parse_sla, verdict


def test_latencies_take_ms_or_s_and_rates_a_fraction_or_a_percentage() -> None:
    sla = parse_sla(" ttft_p95=2s, e2e_p99=1500ms,queue_wait_p95=0.25s,error_rate=1% ")
    assert [(b.key, b.limit) for b in sla.bounds] == [
        ("ttft_p95", 2000.0), ("e2e_p99", 1500.0), ("queue_wait_p95", 250.0),
        ("error_rate", 0.01),
    ]  # fmt: skip
    assert sla.spec == "ttft_p95=2s,e2e_p99=1500ms,queue_wait_p95=0.25s,error_rate=1%"
    assert parse_sla("error_rate=0").bounds[0].limit == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--sla is empty"),
        ("ttft_p95", "is not key=value"),
        ("ttft_p95=2s,", "'' is not key=value"),
        ("ttft_p95=", "is not key=value"),
        ("ttft_p90=2s", "key 'ttft_p90' is unknown; known: ttft_p50"),
        ("ttft_p95=2s,ttft_p95=3s", "given twice"),
        ("ttft_p95=2", "a latency is a number with a unit"),
        ("ttft_p95=2min", "a latency is a number with a unit"),
        ("ttft_p95=-2s", "a latency is a number with a unit"),
        ("ttft_p95=0ms", "must be positive"),
        ("ttft_p95=1e3ms", "a latency is a number with a unit"),
        ("error_rate=1.5", "between 0 and 1"),
        ("error_rate=150%", "between 0 and 1"),
        ("error_rate=lots", "a fraction (0.01) or a percentage"),
        ("error_rate=2s", "a fraction (0.01) or a percentage"),
    ],
)
def test_malformed_slas_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_sla(text)


def test_every_phase_is_checked_against_every_bound() -> None:
    sla = parse_sla("ttft_p95=2s,error_rate=0.01,queue_wait_p95=100ms")
    figures = {
        "baseline": {"ttft_p95_ms": 300.0, "error_rate": 0.0, "queue_wait_p95_ms": 5.0},
        "burst": {"ttft_p95_ms": 2000.5, "error_rate": 0.01, "queue_wait_p95_ms": None},
    }
    checks = check_phases(sla, figures)
    assert [(c.phase, c.key, c.outcome) for c in checks] == [
        ("baseline", "ttft_p95", "pass"), ("baseline", "error_rate", "pass"),
        ("baseline", "queue_wait_p95", "pass"),
        ("burst", "ttft_p95", "fail"), ("burst", "error_rate", "pass"),  # a bound is inclusive
        ("burst", "queue_wait_p95", "unmeasured"),
    ]  # fmt: skip
    assert verdict(checks) == "fail"
    assert verdict([c for c in checks if c.outcome != "fail"]) == "unknown"
    assert verdict([c for c in checks if c.outcome == "pass"]) == "pass"
    assert verdict([]) == "unknown"
