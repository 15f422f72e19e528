"""A circuit breaker for one pool: stop sending to a failing remote API for a while.

Closed: traffic flows; ``failures`` failures in a row open it. Open: ``allow`` says no for
``open_s`` (requests take the next pool of their chain at once instead of timing out one by one).
Half-open: one probe request is let through; its success closes the breaker, its failure opens it
again for another ``open_s``. A probe that never reports back (its client went away, or the
upstream refused it as the client's error) gives way to another one after ``open_s``, so the
breaker cannot stay shut for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = ("_failures", "_open_s", "_clock", "_consecutive", "_opened_at", "_probing")

    def __init__(
        self, *, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failures = failures
        self._open_s = open_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self._open_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """May a request go to the pool now? In half-open, only the first caller gets a yes."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self._open_s:
            return False  # open, or a probe went out less than open_s ago
        self._opened_at = now
        self._probing = True
        return True

    def record_success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self._failures:
            self._opened_at = self._clock()
            self._probing = False
