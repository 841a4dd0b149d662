"""Planning a backfill: the fire times a job's schedule had over a past range of data times.

The walk uses the trigger engine's own ``next_fire_time`` (the job's zone, its calendar, whole-second
fixed rates), so a backfill runs exactly the times the live schedule fired or would have fired. A fire's
data time is its schedule time plus the job's dataOffset, so the range of data times asked for is
shifted back by the offset to find the schedule times.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from sx.processors import JobSpec, TimeType
from sx.scheduler._errors import BadRequest
from sx.scheduler.jobs._timing import next_fire_time, schedule_seconds
from sx.scheduler.store import Calendar

__all__ = ["MAX_FIRE_TIMES", "backfill_fire_times", "check_backfillable"]

MAX_FIRE_TIMES = 1_000_000
"""The most fire times one backfill may hold (its ``maxFireTimes`` may be set up to this)."""

_BEFORE = timedelta(microseconds=1)


def check_backfillable(job_id: int, spec: JobSpec) -> None:
    """BadRequest naming ``jobId`` when the job's schedule has no past fire times to run again."""
    if spec.schedule.time_type not in (TimeType.CRON, TimeType.FIXED_RATE):
        kind = spec.schedule.time_type.name.lower()
        message = f"job {job_id} is triggered by {kind}: only cron and fix_rate jobs can be backfilled"
        raise BadRequest("jobId", job_id, message)


def backfill_fire_times(
    spec: JobSpec,
    start: datetime,
    end: datetime,
    *,
    default_tz: tzinfo,
    calendar: Calendar | None,
    anchor: datetime | None,
    limit: int,
) -> list[datetime]:
    """The schedule times, in order, whose data time lies in ``[start, end]``.

    ``anchor`` is a fire time of a fixed_rate job (its persisted next fire time): its past fires are
    whole periods before it. Without one they count from ``start``. More than ``limit`` fire times is a
    BadRequest naming ``maxFireTimes``.
    """
    offset = timedelta(seconds=spec.data_offset)
    low, high = start - offset, end - offset
    if spec.schedule.time_type == TimeType.FIXED_RATE:
        period = timedelta(seconds=schedule_seconds(spec))
        base = anchor if anchor is not None else low
        # The first whole period from ``base`` at or after ``low`` (ceiling division of timedeltas).
        current: datetime | None = base - period * ((base - low) // period)
    else:
        current = next_fire_time(spec, low - _BEFORE, default_tz=default_tz, calendar=calendar)
    found: list[datetime] = []
    while current is not None and current <= high:
        if len(found) == limit:
            raise BadRequest(
                "maxFireTimes",
                limit,
                f"the range holds more than {limit} fire times: narrow startDate/endDate, or raise "
                f"maxFireTimes (at most {MAX_FIRE_TIMES})",
            )
        found.append(current)
        current = next_fire_time(spec, current, default_tz=default_tz, calendar=calendar)
    return found
