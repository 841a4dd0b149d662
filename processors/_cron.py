"""Quartz cron expressions as values: :class:`CronExpression` computes fire times, :func:`validate_cron`
checks a text; parsing is ``_cron_parse``'s role.

A search walks the wall clock of the job's zone from year down to second with bisection, never second by
second, and maps the wall time found to an instant:

- a wall time repeated when clocks go back resolves to the later (standard-time) instant, so the first
  pass through a repeated hour never fires;
- a wall time that does not exist when clocks go forward is skipped, not shifted;
- the search gives up more than 100 years after the start.

Where Quartz releases disagree on ``W``/``LW`` (2.5 skips Monday the 3rd for ``1W``), the documented
meaning shared by Quartz 2.3.2 and Spring is followed: the weekday nearest day n, never leaving the month.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left
from datetime import UTC, datetime, timedelta, tzinfo

from sx.processors._cron_parse import parse_cron

__all__ = ["CronExpression", "validate_cron"]

# How far ahead of the start a search may go before it reports "never".
_SEARCH_YEARS = 100
_ONE_SECOND = timedelta(seconds=1)
# Per-expression cache of allowed days per month; bounded so a long-lived expression cannot grow forever.
_DAY_CACHE_LIMIT = 512


def validate_cron(expression: str) -> None:
    """Raise :class:`CronError` naming the cron field and the offending part if ``expression`` is invalid."""
    parse_cron(expression)


def _nearest_weekday(day: int, first_weekday: int, last_day: int) -> int:
    """The weekday (Mon-Fri) nearest ``day``, staying inside the month (``1W`` on a Saturday is the 3rd)."""
    weekday = (first_weekday + day - 2) % 7 + 1
    if weekday == 7:  # Saturday
        return 3 if day == 1 else day - 1
    if weekday == 1:  # Sunday
        return day - 2 if day == last_day else day + 1
    return day


class CronExpression:
    """A parsed Quartz cron expression; raises :class:`CronError` when invalid."""

    __slots__ = ("_day_cache", "_first_time", "_spec", "expression")

    def __init__(self, expression: str) -> None:
        self.expression = expression.strip()
        self._spec = parse_cron(self.expression)
        spec = self._spec
        self._first_time = (spec.hours[0], spec.minutes[0], spec.seconds[0])
        self._day_cache: dict[tuple[int, int], tuple[int, ...]] = {}

    def __repr__(self) -> str:
        return f"CronExpression({self.expression!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronExpression) and other._spec == self._spec

    def __hash__(self) -> int:
        return hash(self._spec)

    def next_after(self, instant: datetime, tz: tzinfo) -> datetime | None:
        """The first fire strictly after ``instant`` (timezone-aware), searched on the wall clock of
        ``tz``; an aware datetime in ``tz``, or None when there is none within 100 years."""
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise ValueError(f"instant={instant!r}: must be timezone-aware")
        # One-second resolution: the search starts at the next whole second after the instant, taken on
        # the absolute timeline so that a repeated hour is entered, not jumped over.
        start = instant.astimezone(UTC).replace(microsecond=0) + _ONE_SECOND
        wall = start.astimezone(tz).replace(tzinfo=None, fold=0)
        limit_year = min(wall.year + _SEARCH_YEARS, datetime.max.year - 1)
        while True:
            found = self._next_wall(wall, limit_year)
            if found is None:
                return None
            candidate = found.replace(tzinfo=tz)
            offset = candidate.utcoffset()
            later_offset = found.replace(tzinfo=tz, fold=1).utcoffset()
            if offset == later_offset:
                return candidate
            if offset is not None and later_offset is not None and offset > later_offset:
                # Clocks went back: the wall time happens twice; Quartz fires on the later pass only.
                return found.replace(tzinfo=tz, fold=1)
            wall = _after_gap(found, tz)

    def fires_after(self, instant: datetime, tz: tzinfo, count: int) -> list[datetime]:
        """Up to ``count`` successive fires after ``instant`` (fewer when the expression runs out)."""
        if count < 0:
            raise ValueError(f"count={count!r}: must be >= 0")
        fires: list[datetime] = []
        cursor = instant
        while len(fires) < count:
            found = self.next_after(cursor, tz)
            if found is None:
                break
            fires.append(found)
            cursor = found
        return fires

    def _next_wall(self, wall: datetime, limit_year: int) -> datetime | None:
        """The first wall-clock time at or after ``wall`` matching every field, up to ``limit_year``."""
        spec = self._spec
        year0, month0, day0 = wall.year, wall.month, wall.day
        if spec.years is None:
            years: range | tuple[int, ...] = range(year0, limit_year + 1)
        else:
            years = spec.years[bisect_left(spec.years, year0) :]
        months = spec.months
        for year in years:
            if year > limit_year:
                return None
            first_month = month0 if year == year0 else 1
            for month in months[bisect_left(months, first_month) :]:
                days = self._days(year, month)
                same_month = year == year0 and month == month0
                first_day = day0 if same_month else 1
                for day in days[bisect_left(days, first_day) :]:
                    if same_month and day == day0:
                        time = self._next_time(wall.hour, wall.minute, wall.second)
                        if time is None:
                            continue
                    else:
                        time = self._first_time
                    return datetime(year, month, day, *time)
        return None

    def _next_time(self, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:
        """The first allowed time of day at or after hour:minute:second, or None."""
        spec = self._spec
        hours, minutes, seconds = spec.hours, spec.minutes, spec.seconds
        h = bisect_left(hours, hour)
        if h == len(hours):
            return None
        if hours[h] == hour:
            m = bisect_left(minutes, minute)
            if m < len(minutes):
                if minutes[m] == minute:
                    s = bisect_left(seconds, second)
                    if s < len(seconds):
                        return hour, minute, seconds[s]
                    m += 1
                if m < len(minutes):
                    return hour, minutes[m], seconds[0]
            h += 1
            if h == len(hours):
                return None
        return hours[h], minutes[0], seconds[0]

    def _days(self, year: int, month: int) -> tuple[int, ...]:
        key = (year, month)
        cached = self._day_cache.get(key)
        if cached is not None:
            return cached
        days = self._compute_days(year, month)
        if len(self._day_cache) >= _DAY_CACHE_LIMIT:
            self._day_cache.clear()
        self._day_cache[key] = days
        return days

    def _compute_days(self, year: int, month: int) -> tuple[int, ...]:
        spec = self._spec
        monday_based, last_day = calendar.monthrange(year, month)
        # Quartz day-of-week (1=SUN .. 7=SAT) of the 1st of the month.
        first_weekday = (monday_based + 1) % 7 + 1
        if spec.by_day_of_month:
            if spec.dom_every_day:
                return tuple(range(1, last_day + 1))
            days = {day for day in spec.dom_days if day <= last_day}
            days.update(last_day - offset for offset in spec.dom_last_offsets if offset < last_day)
            days.update(
                _nearest_weekday(day, first_weekday, last_day)
                for day in spec.dom_nearest_weekday
                if day <= last_day
            )
            days.update(
                _nearest_weekday(last_day - offset, first_weekday, last_day)
                for offset in spec.dom_nearest_weekday_last_offsets
                if offset < last_day
            )
            return tuple(sorted(days))
        first_match = (spec.dow_anchor - first_weekday) % 7 + 1
        if spec.dow_nth:
            day = first_match + 7 * (spec.dow_nth - 1)
            return (day,) if day <= last_day else ()
        if spec.dow_last:
            return (first_match + 7 * ((last_day - first_match) // 7),)
        return tuple(
            day for day in range(1, last_day + 1) if (first_weekday + day - 2) % 7 + 1 in spec.dow_days
        )


def _is_nonexistent(wall: datetime, tz: tzinfo) -> bool:
    early = wall.replace(tzinfo=tz).utcoffset()
    late = wall.replace(tzinfo=tz, fold=1).utcoffset()
    return early is not None and late is not None and early < late


def _after_gap(wall: datetime, tz: tzinfo) -> datetime:
    """Where to resume after ``wall``, a time that does not exist (clocks went forward over it).

    A gap is one interval of wall time, so when both ends of the day, hour or minute holding ``wall`` are
    missing, the whole unit is: the search jumps past it instead of stepping second by second."""
    day_start = wall.replace(hour=0, minute=0, second=0)
    if _is_nonexistent(day_start, tz) and _is_nonexistent(wall.replace(hour=23, minute=59, second=59), tz):
        return day_start + timedelta(days=1)
    hour_start = wall.replace(minute=0, second=0)
    if _is_nonexistent(hour_start, tz) and _is_nonexistent(wall.replace(minute=59, second=59), tz):
        return hour_start + timedelta(hours=1)
    minute_start = wall.replace(second=0)
    if _is_nonexistent(minute_start, tz) and _is_nonexistent(wall.replace(second=59), tz):
        return minute_start + timedelta(minutes=1)
    return wall + _ONE_SECOND
