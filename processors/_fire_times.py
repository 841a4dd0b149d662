"""When a schedule fires next: the scheduler's own computation, for users to test their schedules.

The public face is ``next_fire_times`` (in ``_schedule``, beside the schedules it reads) and
``Schedule.next_fire_times``; this module does the arithmetic. Cron expressions are read on the wall
clock of the zone with the scheduler's rules (a wall time repeated when clocks go back fires once, on the
later pass; one that does not exist when they go forward is skipped); intervals step on the absolute
timeline. The scheduler also applies calendars (a fire is kept only on a calendar's days); those live in
its store, not here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sx.processors._cron import CronExpression
from sx.processors._enums import TimeType
from sx.processors._errors import DefinitionError

__all__ = ["fire_times", "zone_of"]


def fire_times(
    time_type: TimeType, expression: str, time_zone: str | tzinfo, count: int, after: datetime | None
) -> list[datetime]:
    """Up to ``count`` fires strictly after ``after`` (default: now), as aware datetimes in the zone.

    ``expression`` is already valid for ``time_type`` (a ``Schedule`` checked it). second_delay fires
    N seconds after the previous run ends, so its list assumes runs that take no time; api: none.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count={count!r}: must be a whole number >= 0")
    zone = zone_of(time_zone)
    if after is None:
        after = datetime.now(UTC)
    elif after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"after={after!r}: must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    if time_type is TimeType.API:
        return []
    if time_type in (TimeType.FIXED_RATE, TimeType.SECOND_DELAY):
        # On the absolute timeline (UTC), so a daylight-saving change does not stretch an interval.
        interval = timedelta(seconds=int(expression))
        start = after.astimezone(UTC)
        return [(start + interval * (n + 1)).astimezone(zone) for n in range(count)]
    return CronExpression(expression).fires_after(after, zone, count)


def zone_of(time_zone: str | tzinfo) -> tzinfo:
    """A ``tzinfo`` as given, or the IANA zone of that name; ``DefinitionError`` naming timeZone."""
    if isinstance(time_zone, tzinfo):
        return time_zone
    if not isinstance(time_zone, str) or not time_zone.strip():
        raise DefinitionError("timeZone", time_zone, "must be an IANA zone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(time_zone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise DefinitionError("timeZone", time_zone, "is not a known IANA time zone") from None
