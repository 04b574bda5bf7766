"""Report intervals: 15 minutes, an hour, a day, an ISO week (Monday first) or a calendar month,
aligned in the report's time zone (a day is a local day, including 23- and 25-hour days)."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from switchboard.core.errors import InvalidArgument


class Interval(enum.StrEnum):
    QUARTER_HOUR = "15m"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def parse_interval(value: str) -> Interval:
    aliases = {"15min": "15m", "quarter": "15m", "1h": "hour", "1d": "day"}
    try:
        return Interval(aliases.get(value, value))
    except ValueError:
        names = ", ".join(i.value for i in Interval)
        raise InvalidArgument("interval", f"{value!r} is not one of {names}") from None


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument("time_zone", f"{name!r} is not an IANA time zone") from None


def _local_start(local: datetime, interval: Interval) -> datetime:
    if interval is Interval.QUARTER_HOUR:
        return local.replace(minute=local.minute - local.minute % 15, second=0, microsecond=0)
    if interval is Interval.HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval is Interval.DAY:
        return day
    if interval is Interval.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _local_next(start: datetime, interval: Interval) -> datetime:
    if interval is Interval.QUARTER_HOUR:
        return start + timedelta(minutes=15)
    if interval is Interval.HOUR:
        return start + timedelta(hours=1)
    if interval is Interval.DAY:
        return start + timedelta(days=1)
    if interval is Interval.WEEK:
        return start + timedelta(weeks=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def _wall(local: datetime, tz: ZoneInfo) -> datetime:
    # Arithmetic above is on wall-clock time; re-attach the zone so the offset is the one in force.
    return local.replace(tzinfo=None).replace(tzinfo=tz)


def bucket(moment: datetime, interval: Interval, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The [start, end) of the interval holding `moment`, as UTC datetimes."""
    if interval in (Interval.QUARTER_HOUR, Interval.HOUR):
        # Sub-day intervals are aligned on UTC offsets that are whole quarter hours in every zone
        # but a few; aligning in UTC keeps DST changes from folding two hours into one bucket.
        local = moment.astimezone(tz)
        offset = local.utcoffset() or timedelta()
        shifted = moment.astimezone(UTC) + offset
        start = _local_start(shifted, interval) - offset
        return start, _local_next(start, interval)
    local = moment.astimezone(tz)
    start = _wall(_local_start(local, interval), tz)
    end = _wall(_local_next(start, interval), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def intervals(
    start: datetime, end: datetime, interval: Interval, tz: ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """Every interval overlapping [start, end), in order."""
    current, current_end = bucket(start, interval, tz)
    while current < end:
        yield current, current_end
        current, current_end = bucket(current_end, interval, tz)
