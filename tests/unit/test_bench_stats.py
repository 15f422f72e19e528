"""Metric definitions, percentiles, paired comparisons and cost on constructed records."""

from __future__ import annotations

import numpy as np
import pytest

from tidegate_bench.cost import cost_block, total_cost
from tidegate_bench.metrics import is_good, target_figures
from tidegate_bench.records import RequestRecord
from tidegate_bench.spec import Prices, Slo, Target, parse_target, parse_tenant
from tidegate_bench.stats import paired_difference, summarize


def _record(index: int = 0, *, start: float = 1.0, chunks: tuple[float, ...] = (1.1, 1.2, 1.3),
            end: float = 1.35, tokens: int = 3, error: str = "") -> RequestRecord:  # fmt: skip
    return RequestRecord(
        index=index, target="t", tenant="default", scheduled_s=start, sent_s=start, end_s=end,
        content_s=chunks, prompt_tokens=10, output_tokens=tokens, cached_tokens=None,
        token_mismatch=False, status=200 if not error else 500, error=error,
    )  # fmt: skip


def test_request_metrics_follow_vllm_definitions() -> None:
    r = _record()
    assert r.ttft_ms == pytest.approx(100.0)
    assert r.e2el_ms == pytest.approx(350.0)
    assert r.tpot_ms == pytest.approx((350.0 - 100.0) / 2)
    assert r.itl_ms() == pytest.approx([100.0, 100.0])
    assert _record(tokens=1, chunks=(1.1,)).tpot_ms is None
    assert _record(error="http_5xx").ttft_ms is None


def test_summary_uses_linear_interpolation() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    s = summarize(values)
    assert s["median"] == 3.0
    assert s["p90"] == pytest.approx(float(np.percentile(values, 90)))
    assert s["p99"] == pytest.approx(4.0 + 0.96 * 6.0)
    assert summarize([])["p99"] == 0.0


def test_goodput_and_throughput_over_the_measured_window() -> None:
    records = [_record(i, start=float(i), chunks=(i + 0.1, i + 0.2), end=i + 0.3, tokens=2)
               for i in range(4)]  # fmt: skip
    records[3] = _record(3, start=3.0, chunks=(3.5, 3.6), end=3.7, tokens=2)  # slow TTFT
    fig = target_figures(
        target=Target(name="t", url="http://x/v1"), model="m", records=records,
        window_start_s=0.0, slo=Slo(ttft_ms=200.0), csv_path="x.csv",
    )  # fmt: skip
    assert fig["duration_s"] == pytest.approx(3.7)
    assert fig["request_throughput"] == pytest.approx(4 / 3.7)
    assert fig["output_throughput"] == pytest.approx(8 / 3.7)
    assert fig["goodput"] == pytest.approx(3 / 3.7)
    assert not is_good(records[3], Slo(ttft_ms=200.0))


def test_paired_difference_detects_a_shift_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(100, 10, 300)
    noisy = base + rng.normal(0, 5, 300)
    same = paired_difference(base.tolist(), noisy.tolist(), seed=1, min_effect=0.05)
    assert same is not None and not same.significant
    slower = paired_difference(base.tolist(), (base * 1.2).tolist(), seed=1, min_effect=0.05)
    assert slower is not None and slower.significant
    assert slower.ratio == pytest.approx(1.2, rel=0.01)
    assert slower.ci95[0] > 0


def test_managed_and_self_hosted_costs() -> None:
    prices = Prices(input_per_m=1.0, output_per_m=4.0)
    records = [_record(i, tokens=1000) for i in range(2)]
    usd = total_cost(prices, records, duration_s=10.0)
    assert usd == pytest.approx((2 * 10 * 1.0 + 2 * 1000 * 4.0) / 1e6)
    hosted = total_cost(Prices(accelerator_per_hour=3.6), records, duration_s=10.0)
    assert hosted == pytest.approx(0.01)
    block = cost_block(0.01, completed=2, good=1, output_tokens=2000)
    assert block["per_request_usd"] == pytest.approx(0.005)
    assert block["per_good_request_usd"] == pytest.approx(0.01)
    assert block["per_million_output_tokens_usd"] == pytest.approx(5.0)


def test_target_and_tenant_strings() -> None:
    t = parse_target("name=api,url=https://h/v1,model=m,output_price=0.6,gpu_hour=2",
                     default_model=None, default_key="k")  # fmt: skip
    assert (t.name, t.model, t.key, t.prices.output_per_m) == ("api", "m", "k", 0.6)
    assert parse_target("a=http://h:1/v1", default_model="x", default_key=None).name == "a"
    assert parse_target("http://h:1/v1", default_model="x", default_key=None).name == "h:1"
    tenant = parse_tenant("gold:sk-1:3:high")
    assert (tenant.key, tenant.weight, tenant.priority) == ("sk-1", 3.0, "high")
