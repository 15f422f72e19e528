"""Restart delays for a replica: exponential, capped, forgiven after a long healthy run."""

from __future__ import annotations


class RestartBackoff:
    """``initial_s``, doubling per consecutive failure, at most ``max_s``.

    A replica that was ready for ``reset_after_s`` before failing starts again from
    ``initial_s``: one crash a day should not inherit the delay of a crash loop last week.
    """

    def __init__(self, *, initial_s: float, max_s: float, reset_after_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.reset_after_s = reset_after_s
        self.failures = 0

    def next_delay(self, *, ready_for_s: float | None = None) -> float:
        """The wait before the next restart; ``ready_for_s`` is how long the replica was ready."""
        if ready_for_s is not None and ready_for_s >= self.reset_after_s:
            self.failures = 0
        delay = min(self.initial_s * 2.0**self.failures, self.max_s)
        self.failures += 1
        return delay
