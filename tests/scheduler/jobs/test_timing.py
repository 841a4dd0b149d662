"""Next fire times, data times and missed fires for each time type."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sx.processors import DefinitionError, JobSpec, MisfirePolicy, api, cron, fixed_rate, second_delay
from sx.scheduler.jobs._timing import data_time, job_zone, latest_missed_fire, next_fire_time
from sx.scheduler.store import Calendar

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_cron_fires_strictly_after() -> None:
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 * * * * ?"))
    assert next_fire_time(spec, T0, default_tz=UTC, calendar=None) == at(2030, 1, 1, 0, 1)
    assert next_fire_time(spec, at(2030, 1, 1, 0, 0, 30), default_tz=UTC, calendar=None) == at(
        2030, 1, 1, 0, 1
    )


def test_cron_result_is_utc_and_uses_job_zone() -> None:
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 0 2 * * ?"), time_zone="Asia/Shanghai")
    fire = next_fire_time(spec, T0, default_tz=UTC, calendar=None)
    assert fire == at(2030, 1, 1, 18, 0)
    assert fire is not None and fire.tzinfo == UTC


def test_cron_uses_scheduler_default_zone_when_job_names_none() -> None:
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 0 2 * * ?"))
    assert job_zone(spec, BERLIN) is BERLIN
    assert next_fire_time(spec, T0, default_tz=BERLIN, calendar=None) == at(2030, 1, 1, 1, 0)


def test_cron_spring_forward_time_is_skipped() -> None:
    # 2030-03-31 is the spring-forward Sunday in Berlin: 02:00-03:00 local does not exist.
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 30 2 * * ?"), time_zone="Europe/Berlin")
    fire = next_fire_time(spec, at(2030, 3, 30, 12, 0), default_tz=UTC, calendar=None)
    assert fire == datetime(2030, 4, 1, 2, 30, tzinfo=BERLIN).astimezone(UTC)
    before = next_fire_time(spec, at(2030, 3, 29, 12, 0), default_tz=UTC, calendar=None)
    assert before == datetime(2030, 3, 30, 2, 30, tzinfo=BERLIN).astimezone(UTC)


def test_calendar_keeps_only_its_days() -> None:
    days = frozenset({date(2030, 1, 3), date(2030, 1, 7)})
    calendar = Calendar(namespace="ns", name="work", days=days)
    spec = JobSpec(
        class_name="demo:Noop",
        name="j",
        schedule=cron("0 0 9 * * ?"),
        calendar="work",
        time_zone="Europe/Berlin",
    )
    first = next_fire_time(spec, T0, default_tz=UTC, calendar=calendar)
    assert first == datetime(2030, 1, 3, 9, 0, tzinfo=BERLIN).astimezone(UTC)
    assert first is not None
    second = next_fire_time(spec, first, default_tz=UTC, calendar=calendar)
    assert second == datetime(2030, 1, 7, 9, 0, tzinfo=BERLIN).astimezone(UTC)
    assert second is not None
    assert next_fire_time(spec, second, default_tz=UTC, calendar=calendar) is None


def test_calendar_with_dense_cron_jumps_days() -> None:
    calendar = Calendar(namespace="ns", name="c", days=frozenset({date(2031, 6, 1)}))
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=cron("* * * * * ?"), calendar="c")
    assert next_fire_time(spec, T0, default_tz=UTC, calendar=calendar) == at(2031, 6, 1)


def test_empty_calendar_never_fires() -> None:
    calendar = Calendar(namespace="ns", name="c", days=frozenset())
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 0 9 * * ?"), calendar="c")
    assert next_fire_time(spec, T0, default_tz=UTC, calendar=calendar) is None


def test_fixed_rate_and_second_delay_add_seconds() -> None:
    rate = JobSpec(class_name="demo:Noop", name="r", schedule=fixed_rate(30))
    assert next_fire_time(rate, T0, default_tz=UTC, calendar=None) == T0 + timedelta(seconds=30)
    delay = JobSpec(class_name="demo:Noop", name="d", schedule=second_delay(5))
    assert next_fire_time(delay, T0, default_tz=UTC, calendar=None) == T0 + timedelta(seconds=5)


def test_api_never_fires_by_time() -> None:
    assert (
        next_fire_time(
            JobSpec(class_name="demo:Noop", name="a", schedule=api()), T0, default_tz=UTC, calendar=None
        )
        is None
    )


def test_naive_after_is_refused() -> None:
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=fixed_rate(30))
    with pytest.raises(ValueError, match="after="):
        next_fire_time(spec, datetime(2030, 1, 1), default_tz=UTC, calendar=None)


def test_data_time_adds_offset() -> None:
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 0 2 * * ?"), data_offset=-86400)
    assert data_time(spec, at(2030, 1, 2, 2)) == at(2030, 1, 1, 2)


def test_latest_missed_cron_fire_is_bounded_and_exact() -> None:
    spec = JobSpec(
        class_name="demo:Noop", name="j", schedule=cron("* * * * * ?"), misfire=MisfirePolicy.RUN_ONCE
    )
    due = T0 + timedelta(seconds=1)
    now = T0 + timedelta(days=3, seconds=0.5)
    latest, following = latest_missed_fire(spec, due, now, default_tz=UTC, calendar=None)
    assert latest == T0 + timedelta(days=3)
    assert following == T0 + timedelta(days=3, seconds=1)


def test_latest_missed_fire_is_due_when_only_one_was_missed() -> None:
    spec = JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 0 * * * ?"))
    due = at(2030, 1, 1, 1)
    latest, following = latest_missed_fire(spec, due, at(2030, 1, 1, 1, 30), default_tz=UTC, calendar=None)
    assert (latest, following) == (due, at(2030, 1, 1, 2))


def test_latest_missed_fixed_rate_fire_is_arithmetic() -> None:
    spec = JobSpec(class_name="demo:Noop", name="r", schedule=fixed_rate(7))
    due = T0
    latest, following = latest_missed_fire(
        spec, due, T0 + timedelta(seconds=100), default_tz=UTC, calendar=None
    )
    assert latest == T0 + timedelta(seconds=98)
    assert following == T0 + timedelta(seconds=105)


def test_fixed_rate_expression_error_names_field() -> None:
    spec = JobSpec(class_name="demo:Noop", name="r", schedule=fixed_rate(7))
    broken = spec.model_copy(update={"schedule": spec.schedule.model_copy(update={"expression": "soon"})})
    with pytest.raises(DefinitionError, match="timeExpression"):
        next_fire_time(broken, T0, default_tz=UTC, calendar=None)
