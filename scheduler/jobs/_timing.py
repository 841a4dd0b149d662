"""When a job fires: the next fire time of each time type, data times and missed fires.

Every answer is a timezone-aware UTC instant strictly after the one given. Cron searches run on the
wall clock of the job's zone (the job's ``time_zone`` or the scheduler's default), and a custom
calendar keeps only fires whose local date is one of its days.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from sx.processors import CronExpression, DefinitionError, JobSpec, TimeType
from sx.scheduler.store import Calendar

__all__ = [
    "data_time",
    "job_zone",
    "latest_missed_fire",
    "next_fire_time",
    "schedule_seconds",
]

# A calendar can only move a search day by day; beyond this many hops the job is treated as never firing
# again rather than spinning (a calendar is a finite set of days, so this is generous).
_MAX_CALENDAR_HOPS = 4000
# Walking missed fires one by one is bounded; past this a job jumps straight to the fire after now.
_MAX_MISSED_WALK = 512
# Windows (seconds before now) probed to find the latest missed fire without walking every one of them.
_PROBE_WINDOWS = (1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 31 * 86400, 366 * 86400)


@lru_cache(maxsize=4096)
def _cron(expression: str) -> CronExpression:
    # Parsing is the expensive part; thousands of jobs share a handful of expressions.
    return CronExpression(expression)


@lru_cache(maxsize=65536)
def _cron_next(expression: str, tz: tzinfo, after: datetime) -> datetime | None:
    # Jobs due together with the same expression share their next fire: one search serves them all.
    found = _cron(expression).next_after(after, tz)
    return None if found is None else found.astimezone(UTC)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def job_zone(spec: JobSpec, default_tz: tzinfo) -> tzinfo:
    """The zone a job's cron expression and calendar are read in."""
    return _zone(spec.time_zone) if spec.time_zone else default_tz


def schedule_seconds(spec: JobSpec) -> int:
    """The period of a fixed_rate job or the delay of a second_delay job, in seconds."""
    text = spec.schedule.expression.strip()
    try:
        seconds = int(text)
    except ValueError:
        raise DefinitionError("timeExpression", spec.schedule.expression, "expected whole seconds") from None
    if seconds < 1:
        raise DefinitionError("timeExpression", spec.schedule.expression, "must be at least 1 second")
    return seconds


def data_time(spec: JobSpec, schedule_time: datetime) -> datetime:
    """The data time of an instance: its schedule time shifted by the job's dataOffset."""
    return schedule_time + timedelta(seconds=spec.data_offset)


def next_fire_time(
    spec: JobSpec, after: datetime, *, default_tz: tzinfo, calendar: Calendar | None
) -> datetime | None:
    """The job's first fire strictly after ``after``, in UTC; None when it never fires by time.

    cron: the expression on the job's zone, restricted to ``calendar`` days when one is given;
    fixed_rate: ``after`` + N s; second_delay: ``after`` + N s (only the first fire: later ones are set
    from the end of the previous instance); api: None.
    """
    if after.tzinfo is None:
        raise ValueError(f"after={after!r}: must be timezone-aware")
    after = after.astimezone(UTC)
    time_type = spec.schedule.time_type
    if time_type == TimeType.API:
        return None
    if time_type in (TimeType.FIXED_RATE, TimeType.SECOND_DELAY):
        return after + timedelta(seconds=schedule_seconds(spec))
    if time_type != TimeType.CRON:
        raise DefinitionError("timeType", int(time_type), "unknown time type")
    tz = job_zone(spec, default_tz)
    expression = spec.schedule.expression
    if calendar is None:
        return _cron_next(expression, tz, after)
    cursor = after
    for _ in range(_MAX_CALENDAR_HOPS):
        found = _cron_next(expression, tz, cursor)
        if found is None:
            return None
        local_day = found.astimezone(tz).date()
        if local_day in calendar.days:
            return found
        # Jump to just before the next calendar day rather than stepping through fires on other days.
        next_day = _first_day_after(_sorted_days(calendar.days), local_day)
        if next_day is None:
            return None
        cursor = max(found, _start_of_day(next_day, tz) - timedelta(seconds=1))
    return None


@lru_cache(maxsize=256)
def _sorted_days(days: frozenset[date]) -> tuple[date, ...]:
    # A calendar's days change rarely and a walk over many fires (a backfill) asks again and again.
    return tuple(sorted(days))


def _first_day_after(days: Sequence[date], day: date) -> date | None:
    index = bisect_right(days, day)
    return days[index] if index < len(days) else None


def _start_of_day(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def latest_missed_fire(
    spec: JobSpec, due: datetime, now: datetime, *, default_tz: tzinfo, calendar: Calendar | None
) -> tuple[datetime, datetime | None]:
    """For a job whose fire at ``due`` (<= now) was missed: the latest fire at or before ``now`` and the
    first fire after ``now``. The work is bounded however long the downtime was."""
    if spec.schedule.time_type in (TimeType.FIXED_RATE, TimeType.SECOND_DELAY):
        period = timedelta(seconds=schedule_seconds(spec))
        latest = due + period * ((now - due) // period)
        return latest, latest + period
    latest = due
    for window in _PROBE_WINDOWS:
        start = now - timedelta(seconds=window)
        if start <= due:
            break
        found = next_fire_time(spec, start, default_tz=default_tz, calendar=calendar)
        if found is not None and found <= now:
            latest = found
            break
    following = next_fire_time(spec, latest, default_tz=default_tz, calendar=calendar)
    for _ in range(_MAX_MISSED_WALK):
        if following is None or following > now:
            return latest, following
        latest = following
        following = next_fire_time(spec, latest, default_tz=default_tz, calendar=calendar)
    return latest, next_fire_time(spec, now, default_tz=default_tz, calendar=calendar)
