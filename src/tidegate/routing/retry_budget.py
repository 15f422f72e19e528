"""The retry budget: retries may add at most a fixed share of extra upstream requests.

Every first attempt deposits ``ratio`` of a token; a retry spends a whole one. Over any stretch
since start, retries therefore stay at or under ``ratio`` × first attempts, so a failing backend
never meets a retry storm that multiplies its load. ``cap`` bounds what quiet periods save up, so
a burst of failures after a calm hour still gets only a few retries.
"""

from __future__ import annotations


class RetryBudget:
    __slots__ = ("_ratio", "_cap", "_balance", "retries", "denied")

    def __init__(self, *, ratio: float, cap: float = 10.0) -> None:
        self._ratio = ratio
        self._cap = cap
        self._balance = 0.0
        self.retries = 0
        self.denied = 0

    def on_request(self) -> None:
        balance = self._balance + self._ratio
        self._balance = balance if balance < self._cap else self._cap

    def try_retry(self) -> bool:
        if self._balance >= 1.0:
            self._balance -= 1.0
            self.retries += 1
            return True
        self.denied += 1
        return False
