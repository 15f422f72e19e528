"""The arrival schedule generator follows the requested process (seeded, no clock involved)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tidegate_bench.schedule import ArrivalProcess, arrival_times


def _ks_exponential(gaps: np.ndarray, rate: float) -> float:
    """Kolmogorov-Smirnov statistic of ``gaps`` against Exp(rate)."""
    x = np.sort(gaps)
    n = len(x)
    cdf = 1.0 - np.exp(-rate * x)
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


def test_poisson_inter_arrivals_pass_a_ks_test_and_counts_are_poisson() -> None:
    rate = 20.0
    times = np.asarray(
        arrival_times(
            ArrivalProcess(shape="poisson", rate=rate), count=5000, duration_s=None, seed=7
        )
    )
    gaps = np.diff(times)
    # 5% critical value of the KS statistic for large n.
    assert _ks_exponential(gaps, rate) < 1.36 / math.sqrt(len(gaps))
    counts = np.bincount(times.astype(int))[:-1]  # whole seconds only
    # Poisson counts: mean close to the rate, index of dispersion close to 1.
    assert abs(counts.mean() - rate) < 0.1 * rate
    assert 0.7 < counts.var() / counts.mean() < 1.3


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_keeps_the_mean_rate_and_sets_the_variability(burstiness: float) -> None:
    process = ArrivalProcess(shape="gamma", rate=10.0, burstiness=burstiness)
    gaps = np.diff(arrival_times(process, count=20000, duration_s=None, seed=3))
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)
    # Gamma(k) inter-arrivals have squared coefficient of variation 1/k.
    assert (gaps.std() / gaps.mean()) ** 2 == pytest.approx(1 / burstiness, rel=0.1)


def test_constant_rate_is_evenly_spaced_and_bounded_by_duration() -> None:
    times = arrival_times(
        ArrivalProcess(shape="constant", rate=4.0), count=None, duration_s=2.0, seed=0
    )
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])


def test_count_bounds_before_duration() -> None:
    process = ArrivalProcess(shape="poisson", rate=100.0)
    assert len(arrival_times(process, count=50, duration_s=100.0, seed=1)) == 50


def test_onoff_sends_nothing_during_the_off_periods() -> None:
    process = ArrivalProcess(shape="onoff", rate=50.0, on_s=1.0, off_s=2.0)
    times = np.asarray(arrival_times(process, count=None, duration_s=12.0, seed=5))
    phase = times % 3.0
    assert (phase < 1.0).all()
    # Four bursts of one second at 50/s.
    assert 150 < len(times) < 250


def test_ramp_rate_grows_linearly() -> None:
    process = ArrivalProcess(shape="ramp", rate=100.0, rate_start=0.0)
    times = np.asarray(arrival_times(process, count=None, duration_s=10.0, seed=11))
    first, last = (times < 5).sum(), (times >= 5).sum()
    # Expected: 125 in the first half, 375 in the second (integral of a linear rate).
    assert 90 < first < 160 and 320 < last < 430


def test_same_seed_same_schedule() -> None:
    process = ArrivalProcess(shape="gamma", rate=5.0, burstiness=0.5)
    a = arrival_times(process, count=100, duration_s=None, seed=42)
    assert a == arrival_times(process, count=100, duration_s=None, seed=42)
    assert a != arrival_times(process, count=100, duration_s=None, seed=43)


def test_needs_a_bound() -> None:
    with pytest.raises(ValueError):
        arrival_times(
            ArrivalProcess(shape="poisson", rate=1.0), count=None, duration_s=None, seed=0
        )
