"""When a job is triggered: the OpenAPI's ``timeType`` and ``timeExpression`` as one frozen value.

Build schedules with :func:`cron`, :func:`fixed_rate`, :func:`second_delay` and :func:`api`; each
validates its input and raises :class:`~sx.processors._errors.DefinitionError` naming
``timeExpression``. Expressions are kept in one canonical form (surrounding blanks removed, interval
seconds written as plain decimal digits) so equal schedules compare equal.

Limits (ours where the OpenAPI names none):

- cron: a Quartz expression, checked by ``validate_cron``;
- fix_rate: whole seconds, 1 to :data:`MAX_INTERVAL_SECONDS` (ten years);
- second_delay: whole seconds, 1 to 60 (the OpenAPI's range);
- api: no expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sx.processors._enums import TimeType
from sx.processors._errors import DefinitionError
from sx.processors._fire_times import fire_times

__all__ = [
    "MAX_INTERVAL_SECONDS",
    "MAX_SECOND_DELAY",
    "Schedule",
    "api",
    "cron",
    "fixed_rate",
    "next_fire_times",
    "parse_time_type",
    "second_delay",
    "to_definition_error",
]

MAX_INTERVAL_SECONDS = 10 * 366 * 24 * 3600
"""Upper bound of a fix_rate interval: far beyond any real use, and safe for datetime arithmetic."""

MAX_SECOND_DELAY = 60

_FIELD = "timeExpression"
_DIGITS = re.compile(r"[+-]?\d+")

# Names accepted for timeType besides the numbers (the original's spellings and our enum's).
_TIME_TYPE_NAMES: dict[str, TimeType] = {
    "cron": TimeType.CRON,
    "fix_rate": TimeType.FIXED_RATE,
    "fixed_rate": TimeType.FIXED_RATE,
    "second_delay": TimeType.SECOND_DELAY,
    "api": TimeType.API,
}


class Schedule(BaseModel):
    """A job's trigger: ``time_type`` and its ``expression`` (wire ``timeType``/``timeExpression``).

    Constructing one directly validates like the helper functions and raises ``DefinitionError``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    time_type: TimeType
    expression: str = ""

    if not TYPE_CHECKING:
        # At run time, turn pydantic's errors into DefinitionError; type checkers keep the
        # signature the pydantic plugin derives from the fields.
        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise to_definition_error(exc, _WIRE_NAMES) from None

    @model_validator(mode="before")
    @classmethod
    def _canonical(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "time_type" not in data:
            return data
        time_type = parse_time_type(data["time_type"])
        expression = data.get("expression", "")
        if not isinstance(expression, str):
            raise DefinitionError(_FIELD, expression, "must be a string")
        return {**data, "time_type": time_type, "expression": _canonical_expression(time_type, expression)}

    @property
    def interval(self) -> timedelta | None:
        """The fix_rate or second_delay interval; None for cron and api schedules."""
        if self.time_type in (TimeType.FIXED_RATE, TimeType.SECOND_DELAY):
            return timedelta(seconds=int(self.expression))
        return None

    def next_fire_times(
        self, time_zone: str | tzinfo, count: int, after: datetime | None = None
    ) -> list[datetime]:
        """The next ``count`` fires after ``after`` (default: now) in ``time_zone``; see
        :func:`next_fire_times`."""
        return fire_times(self.time_type, self.expression, time_zone, count, after)

    def __str__(self) -> str:
        name = self.time_type.name.lower()
        return f"{name}({self.expression})" if self.expression else f"{name}()"


def next_fire_times(
    expression: str | Schedule, time_zone: str | tzinfo, count: int, after: datetime | None = None
) -> list[datetime]:
    """The next ``count`` fires strictly after ``after`` (default: now), as aware datetimes in ``time_zone``.

    ``expression`` is a Quartz cron expression or a :class:`Schedule`; ``time_zone`` an IANA name
    (``"Asia/Shanghai"``) or a ``tzinfo``. The same computation as the scheduler's: a cron wall time
    repeated when clocks go back fires once (on the later pass), one that does not exist when they go
    forward is skipped::

        next_fire_times("0 30 2 * * ?", "Europe/Berlin", 2, after=datetime(2026, 3, 28, 12, tzinfo=UTC))
        # -> 2026-03-30 02:30 and 2026-03-31 02:30 Berlin time (the 29th has no 02:30)

    fixed_rate fires every N seconds; second_delay N seconds after the previous run ends, so its list
    assumes runs that take no time; api schedules never fire by time (an empty list). Fewer than
    ``count`` come back when the expression runs out. A bad expression or zone raises
    ``DefinitionError`` naming ``timeExpression`` or ``timeZone``. Calendars are not applied here.
    """
    schedule = expression if isinstance(expression, Schedule) else cron(expression)
    return fire_times(schedule.time_type, schedule.expression, time_zone, count, after)


def parse_time_type(value: object) -> TimeType:
    """Read a wire ``timeType``: 1, 3, 4 or 100 (as int or string) or a name such as ``"cron"``."""
    if isinstance(value, TimeType):
        return value
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in _TIME_TYPE_NAMES:
            return _TIME_TYPE_NAMES[text]
        if _DIGITS.fullmatch(text):
            number = int(text)
    if number is not None:
        try:
            return TimeType(number)
        except ValueError:
            pass
    raise DefinitionError("timeType", value, "must be 1 (cron), 3 (fix_rate), 4 (second_delay) or 100 (api)")


def cron(expression: str) -> Schedule:
    """A Quartz cron schedule, e.g. ``cron("0 0 2 * * ?")`` for 02:00 every day."""
    return Schedule(time_type=TimeType.CRON, expression=expression)


def fixed_rate(seconds: int | timedelta) -> Schedule:
    """Trigger every ``seconds`` (whole seconds, at least 1), counted from the last trigger."""
    return Schedule(time_type=TimeType.FIXED_RATE, expression=str(_whole_seconds(seconds)))


def second_delay(seconds: int | timedelta) -> Schedule:
    """Trigger ``seconds`` (1 to 60) after the previous run ends."""
    return Schedule(time_type=TimeType.SECOND_DELAY, expression=str(_whole_seconds(seconds)))


def api() -> Schedule:
    """Never triggered by time; only ExecuteJob (or a workflow) starts the job."""
    return Schedule(time_type=TimeType.API)


def _whole_seconds(seconds: object) -> int:
    if isinstance(seconds, timedelta):
        total = seconds.total_seconds()
        if total != int(total):
            raise DefinitionError(_FIELD, seconds, "must be a whole number of seconds")
        return int(total)
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        return seconds
    raise DefinitionError(_FIELD, seconds, "must be an int of seconds or a timedelta")


def _canonical_expression(time_type: TimeType, expression: str) -> str:
    text = expression.strip()
    if time_type is TimeType.API:
        if text:
            raise DefinitionError(_FIELD, expression, "must be empty for an api schedule")
        return ""
    if time_type is TimeType.CRON:
        if not text:
            raise DefinitionError(_FIELD, expression, "a cron schedule needs a cron expression")
        # Lazy: the cron evaluator is the heavier module and only cron schedules need it.
        from sx.processors._cron import validate_cron

        validate_cron(text)
        return text
    if not _DIGITS.fullmatch(text):
        raise DefinitionError(_FIELD, expression, "must be a whole number of seconds")
    value = int(text)
    if time_type is TimeType.FIXED_RATE:
        if not 1 <= value <= MAX_INTERVAL_SECONDS:
            raise DefinitionError(_FIELD, expression, f"fix_rate must be 1 to {MAX_INTERVAL_SECONDS} seconds")
    elif not 1 <= value <= MAX_SECOND_DELAY:
        raise DefinitionError(_FIELD, expression, f"second_delay must be 1 to {MAX_SECOND_DELAY} seconds")
    return str(value)


def to_definition_error(exc: ValidationError, wire_names: Mapping[str, str]) -> DefinitionError:
    """The DefinitionError behind a ValidationError, so callers never see a raw pydantic error.

    A DefinitionError raised by one of our validators is returned as it is; otherwise pydantic's first
    error is restated with the wire name of its field: ``wire_names`` maps attribute names (the
    elements of an error's location) to wire names, and the first location element it knows wins.
    """
    errors = exc.errors()
    for error in errors:
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, DefinitionError):
            return cause
    first = errors[0]
    names = [str(part) for part in first["loc"] if isinstance(part, str)]
    field = next((wire_names[name] for name in names if name in wire_names), None)
    if field is None:
        field = names[-1] if names else exc.title
    message = str(first["msg"])
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return DefinitionError(field, first.get("input"), message)


_WIRE_NAMES = {"time_type": "timeType", "expression": _FIELD}
