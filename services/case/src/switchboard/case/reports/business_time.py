"""How much of a stretch of time counts toward a target measured in business hours.

The email service level ("90 % answered within 24 h") is measured in business time when the
tenant has a calendar: an email received on Friday evening and answered on Monday morning waited
only the business hours in between. Reports need nothing from a calendar but this one question,
so any calendar with a ``business_seconds(start, end)`` method serves (the SLA module's calendars
included); `WeeklyHours` is a self-contained one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


class BusinessClock(Protocol):
    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Seconds of business time in [start, end); 0 when end <= start."""
        ...


class AlwaysOpen:
    """Every second counts: the clock when no calendar is configured."""

    def business_seconds(self, start: datetime, end: datetime) -> float:
        return max(0.0, (end - start).total_seconds())


@dataclass(frozen=True)
class WeeklyHours:
    """Opening hours per weekday (0 = Monday) in a time zone, minus holidays."""

    tz: ZoneInfo
    hours: Mapping[int, Sequence[tuple[time, time]]]
    holidays: frozenset[date] = field(default_factory=frozenset)

    @classmethod
    def weekdays(
        cls, tz: str, opens: time, closes: time, holidays: Iterable[date] = ()
    ) -> WeeklyHours:
        """Monday to Friday, `opens` to `closes`."""
        return cls(ZoneInfo(tz), {d: [(opens, closes)] for d in range(5)}, frozenset(holidays))

    def business_seconds(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        total = 0.0
        day = start.astimezone(self.tz).date() - timedelta(days=1)
        last = end.astimezone(self.tz).date()
        while day <= last:
            if day not in self.holidays:
                for opens, closes in self.hours.get(day.weekday(), ()):
                    o = datetime.combine(day, opens, self.tz)
                    c = datetime.combine(day, closes, self.tz)
                    lo, hi = max(o, start), min(c, end)
                    if hi > lo:
                        total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total
