"""Time windows of route rules: a cron expression read on a time zone's wall clock.

A window is evaluated at most once per wall-clock minute (cron's granularity): every request of
the same minute reads the cached answer, so a rule with a window costs a clock reading and an
integer comparison on the request path. The clock is injected (``time.time`` in the gateway, a
fake in the tests); the zone's offset, daylight-saving changes included, is applied to each
minute's instant, so "9-17" means 09:00 to 17:59 local time on both sides of a change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from tidegate.config import TimeWindow

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``)."""


class CompiledWindow:
    __slots__ = ("_clock", "_cron", "_zone", "_minute", "_open")

    def __init__(self, window: TimeWindow, clock: Clock) -> None:
        self._clock = clock
        self._cron = window.cron
        self._zone = ZoneInfo(window.timezone)
        self._minute = -1
        self._open = False

    def is_open(self) -> bool:
        """Whether now falls inside the window (cached for the current minute)."""
        minute = int(self._clock() // 60)
        if minute != self._minute:
            # The wall-clock fields, naive: cron reads them as they are, and croniter's own
            # arithmetic on aware times would shift them across a daylight-saving change.
            local = datetime.fromtimestamp(minute * 60, self._zone).replace(tzinfo=None)
            self._open = bool(croniter.match(self._cron, local))
            self._minute = minute
        return self._open
