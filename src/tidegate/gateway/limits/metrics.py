"""The limiter's metrics and its rate-limited warning about an unreachable limit store.

Labels come from fixed sets: ``operation`` admit|settle, ``mode`` closed|open (the tenant's
failure mode), ``code`` one of ``errors.LIMIT_CODES``. No tenant or key id becomes a label here.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter

from tidegate.errors import LIMIT_CODES, LimitCode
from tidegate.gateway.policy import LimiterFailureMode

_LOG_INTERVAL_S = 10.0


class LimiterMetrics:
    def __init__(self, *, registry: CollectorRegistry) -> None:
        unavailable = Counter(
            "tidegate_limiter_unavailable",
            "Limit checks or settlements the limit store (Redis) did not answer, by operation "
            "and the tenant's failure mode (closed: refused, open: admitted unlimited).",
            ["operation", "mode"],
            registry=registry,
        )
        rejections = Counter(
            "tidegate_limit_rejections",
            "Requests refused by a rate limit, concurrency limit or budget, by code.",
            ["code"],
            registry=registry,
        )
        # Children resolved once: the request path then pays an increment, not a label lookup.
        self.unavailable = {
            (operation, mode): unavailable.labels(operation, mode)
            for operation in ("admit", "settle")
            for mode in ("closed", "open")
        }
        self.rejections = {code: rejections.labels(code) for code in LIMIT_CODES}

    def store_unavailable(self, operation: str, mode: LimiterFailureMode) -> None:
        self.unavailable[(operation, mode)].inc()

    def rejected(self, code: LimitCode) -> None:
        self.rejections[code].inc()


class ThrottledWarning:
    """Logs a warning at most once per interval and says how many were held back."""

    def __init__(self, *, logger: logging.Logger, interval_s: float = _LOG_INTERVAL_S) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._next = 0.0
        self._held_back = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held_back += 1
            return
        held_back, self._held_back, self._next = self._held_back, 0, now + self._interval_s
        if held_back:
            self._logger.warning(message + " (%d more like this held back)", *args, held_back)
        else:
            self._logger.warning(message, *args)
