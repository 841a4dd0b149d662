"""Quartz cron expressions parsed into the sorted allowed values of each field (:class:`CronSpec`).

An expression has six or seven fields, ``second minute hour dayOfMonth month dayOfWeek [year]``, and
exactly one of the two day fields is ``?``. Each field is parsed once into a sorted tuple of allowed
values (plus the special day forms ``L``, ``L-n``, ``LW``, ``nW``, ``nL`` and ``n#k``); an invalid
expression raises :class:`CronError` naming the field and the offending part.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sx.processors._errors import CronError

__all__ = ["CronSpec", "parse_cron"]

_SECONDS = "seconds"
_MINUTES = "minutes"
_HOURS = "hours"
_DAY_OF_MONTH = "dayOfMonth"
_MONTH = "month"
_DAY_OF_WEEK = "dayOfWeek"
_YEAR = "year"
_EXPRESSION = "expression"

_FIELD_ORDER = (_SECONDS, _MINUTES, _HOURS, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK, _YEAR)

_MIN_YEAR = 1970
# Explicit year values above this are refused; Quartz itself stops computing past 2999.
_MAX_YEAR = 2999
_MAX_LAST_DAY_OFFSET = 30


@dataclass(frozen=True, slots=True)
class _Bounds:
    low: int
    high: int
    # The modulus a wrapping range (``22-2``) counts in; 0 means the field does not wrap (year).
    wrap: int
    # The largest increment accepted; Quartz compares with ``>``, so the bound itself is allowed.
    max_step: int


_BOUNDS = {
    _SECONDS: _Bounds(0, 59, 60, 59),
    _MINUTES: _Bounds(0, 59, 60, 59),
    _HOURS: _Bounds(0, 23, 24, 23),
    _DAY_OF_MONTH: _Bounds(1, 31, 31, 31),
    _MONTH: _Bounds(1, 12, 12, 12),
    _DAY_OF_WEEK: _Bounds(1, 7, 7, 7),
    _YEAR: _Bounds(_MIN_YEAR, _MAX_YEAR, 0, _MAX_YEAR - _MIN_YEAR),
}

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
    )
}
# Quartz numbers days of the week 1=SUN ... 7=SAT.
_DAY_NAMES = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1)
}
_NAMES = {_MONTH: _MONTH_NAMES, _DAY_OF_WEEK: _DAY_NAMES}


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed expression: sorted allowed values per field and the special day forms."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    # None means every year (bounded only by the search limit).
    years: tuple[int, ...] | None
    # True when dayOfWeek is '?' (days come from dayOfMonth), False when dayOfMonth is '?'.
    by_day_of_month: bool
    dom_days: tuple[int, ...]
    dom_every_day: bool
    # n of each ``L-n`` (``L`` is 0), the days n of each ``nW``, and n of each ``L-nW`` (``LW`` is 0).
    dom_last_offsets: tuple[int, ...]
    dom_nearest_weekday: tuple[int, ...]
    dom_nearest_weekday_last_offsets: tuple[int, ...]
    dow_days: frozenset[int]
    # ``n#k``: k (0 when absent); ``nL``: True. Both use the smallest day in the field, as Quartz does.
    dow_nth: int
    dow_last: bool
    dow_anchor: int


def _error(expression: str, field: str, message: str) -> CronError:
    return CronError(expression, field, message)


def _is_number(text: str) -> bool:
    # str.isdigit() alone also accepts digits int() refuses, such as superscripts.
    return text.isascii() and text.isdigit()


def _parse_value(expression: str, field: str, text: str, part: str) -> tuple[int, bool]:
    """A number or (month, day-of-week) name in range; returns the value and whether it was a name."""
    bounds = _BOUNDS[field]
    if _is_number(text):
        value = int(text)
        if not bounds.low <= value <= bounds.high:
            raise _error(
                expression,
                field,
                f"value {value} in {part!r} is out of range {bounds.low}-{bounds.high}",
            )
        return value, False
    names = _NAMES.get(field)
    if names is not None and text in names:
        return names[text], True
    if not text:
        raise _error(expression, field, f"missing value in {part!r}")
    if names is not None:
        raise _error(
            expression, field, f"unknown value {text!r} in {part!r} (use numbers or {', '.join(names)})"
        )
    raise _error(expression, field, f"illegal characters {text!r} in {part!r} (expected numbers)")


def _parse_step(expression: str, field: str, text: str, part: str) -> int:
    if not _is_number(text):
        raise _error(expression, field, f"'/' must be followed by an integer in {part!r}")
    step = int(text)
    bounds = _BOUNDS[field]
    if step < 1:
        raise _error(expression, field, f"increment 0 in {part!r} must be at least 1")
    if step > bounds.max_step:
        raise _error(expression, field, f"increment {step} in {part!r} is larger than {bounds.max_step}")
    return step


def _parse_range(expression: str, field: str, part: str) -> set[int]:
    """``*``, ``n``, ``a-b``, each with an optional ``/step``; ``/step`` alone means ``*/step``."""
    bounds = _BOUNDS[field]
    base, slash, step_text = part.partition("/")
    step = _parse_step(expression, field, step_text, part) if slash else 1
    if base in ("*", ""):
        if not slash and base == "":
            raise _error(expression, field, f"empty value in {part!r}")
        return set(range(bounds.low, bounds.high + 1, step))
    low_text, dash, high_text = base.partition("-")
    start, start_is_name = _parse_value(expression, field, low_text, part)
    if not dash:
        if not slash:
            return {start}
        if start_is_name:
            # Quartz silently drops an increment after a name; refusing is safer than firing differently.
            raise _error(expression, field, f"an increment after a name is not supported in {part!r}")
        return set(range(start, bounds.high + 1, step))
    end, end_is_name = _parse_value(expression, field, high_text, part)
    if start_is_name != end_is_name:
        raise _error(expression, field, f"range {base!r} mixes a name and a number")
    if slash and start_is_name:
        raise _error(expression, field, f"an increment after a name is not supported in {part!r}")
    if end >= start:
        return set(range(start, end + 1, step))
    if bounds.wrap == 0:
        raise _error(expression, field, f"range {base!r} must not end before it starts")
    # An overflowing range wraps (hours 22-2 is 22,23,0,1,2); 1-based fields map 0 back to their top.
    values: set[int] = set()
    for raw in range(start, end + bounds.wrap + 1, step):
        value = raw % bounds.wrap
        if value == 0 and bounds.low == 1:
            value = bounds.wrap
        values.add(value)
    return values


def _split_parts(expression: str, field: str, text: str) -> list[str]:
    parts = text.split(",")
    if any(not part for part in parts):
        raise _error(expression, field, f"empty entry in list {text!r}")
    return parts


def _parse_simple_field(expression: str, field: str, text: str) -> tuple[int, ...]:
    if "?" in text:
        raise _error(expression, field, f"'?' is only allowed in dayOfMonth or dayOfWeek, got {text!r}")
    values: set[int] = set()
    for part in _split_parts(expression, field, text):
        values |= _parse_range(expression, field, part)
    return tuple(sorted(values))


@dataclass(slots=True)
class _DayOfMonth:
    days: set[int]
    every_day: bool
    last_offsets: set[int]
    nearest_weekday: set[int]
    nearest_weekday_last_offsets: set[int]


def _parse_day_of_month(expression: str, text: str) -> _DayOfMonth:
    field = _DAY_OF_MONTH
    result = _DayOfMonth(set(), text == "*", set(), set(), set())
    for part in _split_parts(expression, field, text):
        if part.startswith("L"):
            rest = part[1:]
            weekday = rest.endswith("W")
            if weekday:
                rest = rest[:-1]
            offset = 0
            if rest:
                if not (rest.startswith("-") and _is_number(rest[1:])):
                    raise _error(expression, field, f"{part!r}: expected L, L-n, LW or L-nW")
                offset = int(rest[1:])
                if offset > _MAX_LAST_DAY_OFFSET:
                    raise _error(
                        expression,
                        field,
                        f"offset from the last day must be <= {_MAX_LAST_DAY_OFFSET} in {part!r}",
                    )
            (result.nearest_weekday_last_offsets if weekday else result.last_offsets).add(offset)
        elif part.endswith("W"):
            day_text = part[:-1]
            if not _is_number(day_text):
                raise _error(expression, field, f"{part!r}: 'W' must follow a day number 1-31 or L")
            day = int(day_text)
            if not 1 <= day <= 31:
                raise _error(expression, field, f"value {day} in {part!r} is out of range 1-31")
            result.nearest_weekday.add(day)
        elif "L" in part:
            raise _error(expression, field, f"{part!r}: 'L' is only valid as L, L-n, LW or L-nW here")
        else:
            result.days |= _parse_range(expression, field, part)
    return result


@dataclass(slots=True)
class _DayOfWeek:
    days: set[int]
    nth: int
    last: bool


def _parse_day_of_week(expression: str, text: str) -> _DayOfWeek:
    field = _DAY_OF_WEEK
    if "L" in text and len(text) > 1 and "," in text:
        raise _error(expression, field, f"{text!r}: 'L' cannot be combined with other days in a list")
    if text.count("#") > 1:
        raise _error(expression, field, f"{text!r}: only one 'n#k' entry is supported")
    result = _DayOfWeek(set(), 0, False)
    for part in _split_parts(expression, field, text):
        if part == "L":
            # 'L' alone in day-of-week is simply Saturday.
            result.days.add(7)
        elif "#" in part:
            day_text, _, nth_text = part.partition("#")
            day, _ = _parse_value(expression, field, day_text, part)
            if not _is_number(nth_text) or not 1 <= int(nth_text) <= 5:
                raise _error(expression, field, f"{part!r}: a number between 1 and 5 must follow '#'")
            result.days.add(day)
            result.nth = int(nth_text)
        elif part.endswith("L"):
            day, _ = _parse_value(expression, field, part[:-1], part)
            result.days.add(day)
            result.last = True
        else:
            result.days |= _parse_range(expression, field, part)
    return result


@lru_cache(maxsize=4096)
def parse_cron(expression: str) -> CronSpec:
    text = expression.strip().upper()
    fields = text.split()
    if len(fields) < 6:
        raise _error(
            expression,
            _EXPRESSION,
            f"expected 6 or 7 fields (second minute hour dayOfMonth month dayOfWeek [year]), "
            f"got {len(fields)}",
        )
    if len(fields) > 7:
        raise _error(expression, _EXPRESSION, f"expected 6 or 7 fields, got {len(fields)} (too many terms)")
    by_name = dict(zip(_FIELD_ORDER, fields, strict=False))
    dom_text = by_name[_DAY_OF_MONTH]
    dow_text = by_name[_DAY_OF_WEEK]
    for field, value in ((_DAY_OF_MONTH, dom_text), (_DAY_OF_WEEK, dow_text)):
        if "?" in value and value != "?":
            raise _error(expression, field, f"{value!r}: '?' must stand alone")
    seconds = _parse_simple_field(expression, _SECONDS, by_name[_SECONDS])
    minutes = _parse_simple_field(expression, _MINUTES, by_name[_MINUTES])
    hours = _parse_simple_field(expression, _HOURS, by_name[_HOURS])
    dom = _DayOfMonth(set(), False, set(), set(), set())
    if dom_text != "?":
        dom = _parse_day_of_month(expression, dom_text)
    months = _parse_simple_field(expression, _MONTH, by_name[_MONTH])
    dow = _DayOfWeek(set(), 0, False)
    if dow_text != "?":
        dow = _parse_day_of_week(expression, dow_text)
    year_text = by_name.get(_YEAR, "*")
    years = None if year_text == "*" else _parse_simple_field(expression, _YEAR, year_text)
    if (dom_text == "?") == (dow_text == "?"):
        raise _error(
            expression,
            _EXPRESSION,
            f"exactly one of dayOfMonth ({dom_text!r}) and dayOfWeek ({dow_text!r}) must be '?'",
        )
    by_day_of_month = dow_text == "?"
    return CronSpec(
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        months=months,
        years=years,
        by_day_of_month=by_day_of_month,
        dom_days=tuple(sorted(dom.days)),
        dom_every_day=dom.every_day,
        dom_last_offsets=tuple(sorted(dom.last_offsets)),
        dom_nearest_weekday=tuple(sorted(dom.nearest_weekday)),
        dom_nearest_weekday_last_offsets=tuple(sorted(dom.nearest_weekday_last_offsets)),
        dow_days=frozenset(dow.days),
        dow_nth=dow.nth,
        dow_last=dow.last,
        dow_anchor=min(dow.days) if dow.days else 0,
    )
