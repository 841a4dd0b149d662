"""Schedules: the helper constructors, their limits and the canonical expression form."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sx.processors._enums import TimeType
from sx.processors._errors import CronError, DefinitionError
from sx.processors._schedule import (
    MAX_INTERVAL_SECONDS,
    Schedule,
    api,
    cron,
    fixed_rate,
    parse_time_type,
    second_delay,
)


@pytest.mark.parametrize(
    ("expression", "stored"),
    [
        ("0 0 2 * * ?", "0 0 2 * * ?"),
        ("  0/15 * * * * ?  ", "0/15 * * * * ?"),
        ("0 30 9 ? * MON-FRI", "0 30 9 ? * MON-FRI"),
        ("0 0 12 L * ? 2030", "0 0 12 L * ? 2030"),
    ],
)
def test_cron_accepts_quartz_expressions(expression: str, stored: str) -> None:
    schedule = cron(expression)
    assert schedule.time_type is TimeType.CRON
    assert schedule.expression == stored
    assert schedule.interval is None


@pytest.mark.parametrize(
    "expression", ["", "   ", "not a cron", "0 0 2 * *", "0 0 25 * * ?", "0 0 2 * * MON"]
)
def test_cron_rejects_invalid_expressions(expression: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        cron(expression)
    assert caught.value.field == "timeExpression"


def test_cron_errors_from_the_evaluator_name_the_cron_field() -> None:
    with pytest.raises(CronError) as caught:
        cron("0 0 25 * * ?")
    assert caught.value.field == "timeExpression"
    assert caught.value.cron_field


@pytest.mark.parametrize(
    ("seconds", "stored"),
    [(1, "1"), (30, "30"), (timedelta(minutes=5), "300"), (MAX_INTERVAL_SECONDS, str(MAX_INTERVAL_SECONDS))],
)
def test_fixed_rate_accepts_whole_seconds(seconds: int | timedelta, stored: str) -> None:
    schedule = fixed_rate(seconds)
    assert schedule.time_type is TimeType.FIXED_RATE
    assert schedule.expression == stored
    assert schedule.interval == timedelta(seconds=int(stored))


@pytest.mark.parametrize(
    "seconds",
    [0, -1, MAX_INTERVAL_SECONDS + 1, timedelta(seconds=1.5), timedelta(0), True, 1.5, "30", None],
)
def test_fixed_rate_rejects_bad_intervals(seconds: Any) -> None:
    with pytest.raises(DefinitionError) as caught:
        fixed_rate(seconds)
    assert caught.value.field == "timeExpression"


@pytest.mark.parametrize(("seconds", "stored"), [(1, "1"), (60, "60"), (timedelta(seconds=10), "10")])
def test_second_delay_accepts_one_to_sixty(seconds: int | timedelta, stored: str) -> None:
    schedule = second_delay(seconds)
    assert schedule.time_type is TimeType.SECOND_DELAY
    assert schedule.expression == stored
    assert schedule.interval == timedelta(seconds=int(stored))


@pytest.mark.parametrize("seconds", [0, 61, -5, timedelta(milliseconds=500), timedelta(minutes=2), False])
def test_second_delay_rejects_out_of_range(seconds: Any) -> None:
    with pytest.raises(DefinitionError) as caught:
        second_delay(seconds)
    assert caught.value.field == "timeExpression"


def test_api_has_no_expression() -> None:
    schedule = api()
    assert schedule == Schedule(time_type=TimeType.API, expression="  ")
    assert schedule.expression == ""
    assert schedule.interval is None
    assert str(schedule) == "api()"


def test_api_rejects_an_expression() -> None:
    with pytest.raises(DefinitionError) as caught:
        Schedule(time_type=TimeType.API, expression="30")
    assert (caught.value.field, caught.value.value) == ("timeExpression", "30")


@pytest.mark.parametrize(
    ("time_type", "expression", "stored"),
    [
        (TimeType.FIXED_RATE, " 030 ", "30"),
        (3, "+45", "45"),
        ("4", "7", "7"),
        ("second_delay", "60", "60"),
    ],
)
def test_direct_construction_reads_wire_values(time_type: Any, expression: str, stored: str) -> None:
    schedule = Schedule(time_type=time_type, expression=expression)
    assert schedule.expression == stored
    assert schedule == Schedule(time_type=schedule.time_type, expression=stored)
    assert hash(schedule) == hash(Schedule(time_type=schedule.time_type, expression=stored))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"time_type": TimeType.FIXED_RATE, "expression": "abc"}, "timeExpression"),
        ({"time_type": TimeType.FIXED_RATE, "expression": "1.5"}, "timeExpression"),
        ({"time_type": TimeType.SECOND_DELAY, "expression": ""}, "timeExpression"),
        ({"time_type": TimeType.FIXED_RATE, "expression": 30}, "timeExpression"),
        ({"time_type": 2, "expression": "30"}, "timeType"),
        ({"expression": "30"}, "timeType"),
        ({"time_type": TimeType.API, "extra": 1}, "extra"),
    ],
)
def test_direct_construction_raises_definition_errors(data: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        Schedule(**data)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, TimeType.CRON),
        ("1", TimeType.CRON),
        (" 100 ", TimeType.API),
        ("cron", TimeType.CRON),
        ("FIX_RATE", TimeType.FIXED_RATE),
        ("fixed_rate", TimeType.FIXED_RATE),
        ("second_delay", TimeType.SECOND_DELAY),
        (TimeType.SECOND_DELAY, TimeType.SECOND_DELAY),
    ],
)
def test_parse_time_type_reads_numbers_and_names(value: object, expected: TimeType) -> None:
    assert parse_time_type(value) is expected


@pytest.mark.parametrize("value", [2, "2", "5", "x", "", True, None, 1.0])
def test_parse_time_type_rejects_unknown_values(value: object) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_time_type(value)
    assert (caught.value.field, caught.value.value) == ("timeType", value)


def test_schedules_are_frozen_and_printable() -> None:
    schedule = fixed_rate(30)
    with pytest.raises(ValueError):
        schedule.expression = "60"  # type: ignore[misc]
    assert str(schedule) == "fixed_rate(30)"
    assert Schedule.model_validate_json(schedule.model_dump_json()) == schedule
