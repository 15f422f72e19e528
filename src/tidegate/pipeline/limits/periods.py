"""Budget periods: the UTC day and the UTC calendar month a moment falls in.

A period has a key (``d20261115``, ``m202611``) that names its counters in every store, and an
end, after which its counters are dropped. ``PeriodClock`` recomputes them only when the
current day ends, so the request path pays a comparison, not a datetime conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Period:
    key: str
    end: float
    """Unix time the period ends (exclusive)."""


def day_period(now: float) -> Period:
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return Period(key=f"d{start:%Y%m%d}", end=(start + timedelta(days=1)).timestamp())


def month_period(now: float) -> Period:
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        following = start.replace(year=start.year + 1, month=1)
    else:
        following = start.replace(month=start.month + 1)
    return Period(key=f"m{start:%Y%m}", end=following.timestamp())


class PeriodClock:
    """The current day and month, cached until the day ends (a month always ends with a day)."""

    def __init__(self) -> None:
        self._day = Period(key="", end=float("-inf"))
        self._month = self._day

    def periods(self, now: float) -> tuple[Period, Period]:
        if now >= self._day.end or now < self._day.end - 86_400:
            self._day = day_period(now)
            self._month = month_period(now)
        return self._day, self._month
