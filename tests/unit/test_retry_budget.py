"""The retry budget: retries never exceed ``ratio`` × first attempts, however they come."""

from __future__ import annotations

import random

from tidegate.routing.retry_budget import RetryBudget


def test_no_retry_before_enough_requests_have_paid_for_one() -> None:
    budget = RetryBudget(ratio=0.2)
    for _ in range(4):
        budget.on_request()
        assert not budget.try_retry()
    budget.on_request()
    assert budget.try_retry()
    assert not budget.try_retry()
    assert (budget.retries, budget.denied) == (1, 5)


def test_retries_never_exceed_the_ratio_whatever_the_pattern() -> None:
    rng = random.Random(7)
    for ratio in (0.0, 0.1, 0.2, 0.5, 1.0):
        budget = RetryBudget(ratio=ratio)
        requests = 0
        for _ in range(5000):
            if rng.random() < 0.6:
                budget.on_request()
                requests += 1
            else:
                budget.try_retry()
            assert budget.retries <= ratio * requests + 1e-9


def test_quiet_periods_save_up_at_most_the_cap() -> None:
    budget = RetryBudget(ratio=0.5, cap=3.0)
    for _ in range(1000):
        budget.on_request()
    granted = sum(budget.try_retry() for _ in range(100))
    assert granted == 3
