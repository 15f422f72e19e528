"""When a load test is labelled client-bound, and what the label tells the user to do."""

from __future__ import annotations

from tidegate_bench.console import client_line
from tidegate_bench.selfcheck import ClientHealth


def _health(cpu: float, lag: float, median: float | None) -> ClientHealth:
    return ClientHealth(
        schedule_lag_p99_ms=0.0, loop_lag_p99_ms=lag, cpu_percent=cpu, median_latency_ms=median
    )


def test_lag_from_a_busy_host_with_an_idle_client_is_a_note_not_the_label() -> None:
    health = _health(cpu=1.0, lag=17.0, median=300.0)
    assert not health.client_bound and health.host_busy
    line = client_line({"client": health.as_json()})
    assert "CLIENT-BOUND" not in line and "other processes on this host" in line


def test_a_saturated_client_with_large_lag_is_client_bound_and_says_what_to_do() -> None:
    health = _health(cpu=97.0, lag=40.0, median=120.0)
    assert health.client_bound
    line = client_line({"client": health.as_json()})
    assert "CLIENT-BOUND" in line and "--concurrency" in line and "client-capacity" in line


def test_lag_small_next_to_the_latencies_is_not_client_bound() -> None:
    assert not _health(cpu=97.0, lag=15.0, median=2000.0).client_bound
    assert not _health(cpu=50.0, lag=5.0, median=None).host_busy


def test_the_document_keeps_the_client_bound_point() -> None:
    quiet, bound = _health(5.0, 1.0, 100.0), _health(95.0, 30.0, 100.0)
    assert ClientHealth.worst([quiet, bound, quiet]) is bound


def test_the_capacity_probe_keeps_its_strict_limits() -> None:
    assert _health(cpu=50.0, lag=15.0, median=None).over_capacity
    assert _health(cpu=95.0, lag=1.0, median=None).over_capacity
