"""Planning a backfill of 100,000 fire times (RerunJob), on an SQLite store (or the PostgreSQL ``--url``).

For a per-minute cron job in Europe/Berlin (a range crossing a DST change), and the same job bound to a
working-day calendar: the time to walk the fire times (``backfill_fire_times``, the trigger engine's
own ``next_fire_time``), to plan through the service (a dry run: the job and calendar read too), and to
create the backfill (plan plus storing every fire time). Each figure is the median of ``--runs``.

    python bench/bench_backfill.py [--fires 100000] [--runs 3] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sx.processors import JobSpec, cron
from sx.scheduler import ManualClock
from sx.scheduler.jobs import BackfillService, JobService, NoHooks, backfill_fire_times
from sx.scheduler.store import Calendar, Group, Namespace
from sx.scheduler.store.sql import SqlStore, sqlite_url

START = datetime(2030, 3, 1, tzinfo=UTC)


async def _median_ms(runs: int, work: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def _bench(url: str, fires: int, runs: int) -> None:
    store = SqlStore(url)
    await store.start()
    try:
        await store.create_namespace(Namespace(id="ns", name="ns"))
        await store.create_group(Group(namespace="ns", group_id="g", app_key="k"))
        weekdays = frozenset(
            START.date() + timedelta(days=i)
            for i in range(800)
            if (START.date() + timedelta(days=i)).weekday() < 5
        )
        await store.put_calendar(Calendar(namespace="ns", name="weekdays", days=weekdays))
        clock = ManualClock(datetime(2035, 1, 1, tzinfo=UTC))
        jobs = JobService(store, clock=clock, default_tz=UTC, hooks=NoHooks())
        service = BackfillService(store, jobs=jobs, wake_driver=lambda: None)
        print(f"backfill planning, {fires:,} fire times, median of {runs} ({store.dialect})")
        print(f"{'job':<28} {'walk ms':>9} {'plan ms':>9} {'create ms':>10}")
        for label, calendar, days_per_week in (
            ("every minute", "", 7),
            ("every minute, weekdays", "weekdays", 5),
        ):
            spec = JobSpec(
                name=f"bench-{calendar or 'all'}",
                class_name="bench:Noop",
                schedule=cron("0 * * * * ?"),
                time_zone="Europe/Berlin",
                calendar=calendar,
            )
            job = await jobs.create_job("ns", "g", spec, enabled=False)
            # A range a little longer than `fires` minutes on the calendar's days, cut at the last one.
            end = START + timedelta(weeks=fires / (days_per_week * 1440), days=3)
            cal = await store.get_calendar("ns", calendar) if calendar else None
            times = backfill_fire_times(
                spec, START, end, default_tz=UTC, calendar=cal, anchor=None, limit=10 * fires
            )
            end = times[fires - 1]

            async def walk(
                spec: JobSpec = spec, end: datetime = end, cal: Calendar | None = cal
            ) -> list[datetime]:
                return backfill_fire_times(
                    spec, START, end, default_tz=UTC, calendar=cal, anchor=None, limit=fires
                )

            async def plan(job_id: int = job.id, end: datetime = end) -> object:
                return await service.plan("ns", "g", job_id, START, end, max_fire_times=fires)

            async def create(job_id: int = job.id, end: datetime = end) -> object:
                return await service.create("ns", "g", job_id, START, end, max_fire_times=fires)

            assert len(await walk()) == fires
            walked = await _median_ms(runs, walk)
            planned = await _median_ms(runs, plan)
            created = await _median_ms(runs, create)
            print(f"{label:<28} {walked:>9.0f} {planned:>9.0f} {created:>10.0f}")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", default=None, help="a PostgreSQL URL (default: SQLite in a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_bench(args.url or sqlite_url(Path(folder)), args.fires, args.runs))


if __name__ == "__main__":
    main()
