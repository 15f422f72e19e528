"""Budget periods: the UTC day and the UTC calendar month a moment falls in.

A period has a key (``d20261115``, ``m202611``) that names its counters in every store, and an
end, after which its counters are dropped. ``PeriodClock`` recomputes them only when the
first of them ends, so the request path pays a comparison, not a datetime conversion. A budget
kind's period (``limit_kinds.LimitKind.period``) must be one of ``PERIODS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Period:
    key: str
    end: float
    """Unix time the period ends (exclusive)."""
    start: float = float("-inf")


def day_period(now: float) -> Period:
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=1)).timestamp()
    return Period(key=f"d{start:%Y%m%d}", end=end, start=start.timestamp())


def month_period(now: float) -> Period:
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        following = start.replace(year=start.year + 1, month=1)
    else:
        following = start.replace(month=start.month + 1)
    return Period(key=f"m{start:%Y%m}", end=following.timestamp(), start=start.timestamp())


PERIODS: dict[str, Callable[[float], Period]] = {"day": day_period, "month": month_period}


class PeriodClock:
    """The current periods of ``names`` (``Layout.periods``), cached until the first ends."""

    def __init__(self, names: tuple[str, ...] = ("day", "month")) -> None:
        self._makers = tuple(PERIODS[name] for name in names)
        self._periods: tuple[Period, ...] = ()
        self._start = self._end = float("-inf")

    def periods(self, now: float) -> tuple[Period, ...]:
        if now >= self._end or now < self._start:
            periods = self._periods = tuple(make(now) for make in self._makers)
            self._end = min((period.end for period in periods), default=float("inf"))
            self._start = max((period.start for period in periods), default=float("-inf"))
        return self._periods
