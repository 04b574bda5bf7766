"""Business-hours calendars: weekly opening hours in a time zone, minus holidays.

An SLA target such as "first response within 4 business hours" counts only the seconds a calendar
is open; the calendar answers two questions: how much business time lies between two instants,
and when a given amount of business time will have passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MAX_DAYS = 3 * 366  # a target further away than this is not a business-hours target

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Calendar:
    """Opening hours per weekday (0 = Monday) in `tz`; `always_open` counts every second."""

    name: str
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    hours: Mapping[int, Sequence[tuple[time, time]]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()
    always_open: bool = False

    def _open_periods(self, day: date) -> list[tuple[datetime, datetime]]:
        if day in self.holidays:
            return []
        periods = []
        for opens, closes in self.hours.get(day.weekday(), ()):
            o = datetime.combine(day, opens, self.tz)
            # "24:00" is stored as time.max; the next midnight closes the day.
            c = (
                datetime.combine(day + timedelta(days=1), time(0), self.tz)
                if closes == time.max
                else datetime.combine(day, closes, self.tz)
            )
            periods.append((o, c))
        return periods

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Seconds of business time in [start, end); 0 when end <= start."""
        if end <= start:
            return 0.0
        if self.always_open:
            return (end - start).total_seconds()
        total = 0.0
        day = start.astimezone(self.tz).date() - timedelta(days=1)
        last = end.astimezone(self.tz).date()
        while day <= last:
            for o, c in self._open_periods(day):
                lo, hi = max(o, start), min(c, end)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total

    def add(self, start: datetime, seconds: float) -> datetime | None:
        """The instant when `seconds` of business time have passed since `start` (None if the
        calendar is not open within MAX_DAYS)."""
        if self.always_open:
            return start + timedelta(seconds=seconds)
        remaining = seconds
        day = start.astimezone(self.tz).date() - timedelta(days=1)
        for _ in range(MAX_DAYS):
            for o, c in self._open_periods(day):
                lo = max(o, start)
                if c <= lo:
                    continue
                span = (c - lo).total_seconds()
                if span >= remaining:
                    return lo + timedelta(seconds=remaining)
                remaining -= span
            day += timedelta(days=1)
        return None


ALWAYS = Calendar("24x7", always_open=True)


def _clock(text: str) -> time:
    if text.strip() == "24:00":
        return time.max
    return time.fromisoformat(text.strip())


def parse_calendar(name: str, spec: Mapping[str, object]) -> Calendar:
    """A calendar from its policy-file form (see docs/case.md)::

    timezone: Asia/Seoul
    hours: {mon-fri: "09:00-18:00", sat: "10:00-14:00"}
    holidays: [2026-12-25]
    """
    if spec.get("always_open"):
        return Calendar(name, always_open=True)
    tz = ZoneInfo(str(spec.get("timezone", "UTC")))
    hours: dict[int, list[tuple[time, time]]] = {}
    raw_hours = spec.get("hours") or {}
    if not isinstance(raw_hours, Mapping):
        raise ValueError(f"calendar {name}: hours must be a mapping of days to ranges")
    for days, ranges in raw_hours.items():
        first, _, final = str(days).lower().partition("-")
        lo = WEEKDAYS.index(first.strip())
        hi = WEEKDAYS.index(final.strip()) if final else lo
        items = [ranges] if isinstance(ranges, str) else list(ranges)  # type: ignore[call-overload]
        for day in range(lo, hi + 1):
            for item in items:
                opens, _, closes = str(item).partition("-")
                o, c = _clock(opens), _clock(closes)
                if c != time.max and c <= o:
                    raise ValueError(f"calendar {name}: {item!r} closes before it opens")
                hours.setdefault(day, []).append((o, c))
    holidays = frozenset(
        h if isinstance(h, date) else date.fromisoformat(str(h))
        for h in spec.get("holidays") or ()  # type: ignore[attr-defined]
    )
    return Calendar(name, tz, hours, holidays)
