from __future__ import annotations

from tidegate.engines.backoff import RestartBackoff


def test_delays_double_up_to_the_cap() -> None:
    backoff = RestartBackoff(initial_s=1.0, max_s=10.0, reset_after_s=300.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_short_ready_runs_keep_the_backoff_growing() -> None:
    backoff = RestartBackoff(initial_s=0.5, max_s=60.0, reset_after_s=300.0)
    assert backoff.next_delay() == 0.5
    assert backoff.next_delay(ready_for_s=10.0) == 1.0
    assert backoff.next_delay(ready_for_s=299.0) == 2.0


def test_a_long_ready_run_resets_the_backoff() -> None:
    backoff = RestartBackoff(initial_s=1.0, max_s=60.0, reset_after_s=300.0)
    for _ in range(5):
        backoff.next_delay()
    assert backoff.next_delay(ready_for_s=301.0) == 1.0
    assert backoff.next_delay() == 2.0
