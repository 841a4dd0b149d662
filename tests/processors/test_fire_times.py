"""``next_fire_times``: the scheduler's own fire computation, offered to users for their schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sx.processors import DefinitionError, api, cron, fixed_rate, next_fire_times, second_delay

BERLIN = ZoneInfo("Europe/Berlin")


def test_cron_fires_in_the_given_zone_and_skips_a_missing_wall_time() -> None:
    after = datetime(2026, 3, 28, 12, tzinfo=UTC)
    fires = next_fire_times("0 30 2 * * ?", "Europe/Berlin", 3, after=after)
    # 2026-03-29 has no 02:30 in Berlin (clocks jump from 02:00 to 03:00): that fire is skipped.
    assert [f.replace(tzinfo=None) for f in fires] == [
        datetime(2026, 3, 30, 2, 30),
        datetime(2026, 3, 31, 2, 30),
        datetime(2026, 4, 1, 2, 30),
    ]
    assert all(f.tzinfo is BERLIN or f.utcoffset() == timedelta(hours=2) for f in fires)


def test_the_fires_are_strictly_after_the_start() -> None:
    after = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert next_fire_times("0 0 0 * * ?", "UTC", 1, after=after) == [datetime(2026, 1, 2, tzinfo=UTC)]


def test_a_schedule_answers_too_and_matches_the_function() -> None:
    after = datetime(2026, 6, 1, tzinfo=UTC)
    schedule = cron("0 0/15 9-10 ? * MON-FRI")
    fires = schedule.next_fire_times("Asia/Shanghai", 10, after=after)
    assert fires == next_fire_times("0 0/15 9-10 ? * MON-FRI", "Asia/Shanghai", 10, after=after)
    assert fires[0] == datetime(2026, 6, 1, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert len(fires) == 10 and fires == sorted(fires)


def test_interval_schedules_step_on_the_absolute_timeline() -> None:
    after = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 in Berlin, half an hour before the jump
    fires = fixed_rate(3600).next_fire_times("Europe/Berlin", 2, after=after)
    assert [f.astimezone(UTC) for f in fires] == [after + timedelta(hours=1), after + timedelta(hours=2)]
    assert second_delay(30).next_fire_times(UTC, 1, after=after) == [after + timedelta(seconds=30)]
    assert api().next_fire_times("UTC", 5, after=after) == []


def test_an_expression_that_runs_out_gives_fewer() -> None:
    after = datetime(2026, 1, 1, tzinfo=UTC)
    assert len(next_fire_times("0 0 0 1 1 ? 2027", "UTC", 5, after=after)) == 1


def test_now_is_the_default_start() -> None:
    before = datetime.now(UTC)
    (fire,) = next_fire_times("* * * * * ?", "UTC", 1)
    assert before < fire <= datetime.now(UTC) + timedelta(seconds=2)


def test_bad_input_names_the_field() -> None:
    with pytest.raises(DefinitionError, match="timeExpression"):
        next_fire_times("0 0 25 * * ?", "UTC", 1)
    with pytest.raises(DefinitionError, match="timeZone='Mars/Base'"):
        next_fire_times("0 0 1 * * ?", "Mars/Base", 1)
    with pytest.raises(ValueError, match="count=-1"):
        next_fire_times("0 0 1 * * ?", "UTC", -1)
    with pytest.raises(ValueError, match=r"after=.*timezone-aware"):
        next_fire_times("0 0 1 * * ?", "UTC", 1, after=datetime(2026, 1, 1))
