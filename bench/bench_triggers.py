"""Trigger engine figures on a real clock and an SQLite store.

(a) 1,000 jobs due together every second for 60 s; (b) 10,000 jobs due together every 10 s;
(c) 100,000 stored cron jobs: start-up time and CPU used while idle between fires. These three run the
trigger engine alone (no workers): lateness is an instance's created_at minus its schedule time, missed
is expected fires (due within the window) minus created, counted once the engine has drained: it runs
past the window until it has caught up beyond the window's end (the time that took is printed).
With ``--peer``, (a) and (b) also run on APScheduler 3 (in memory, one process, its defaults) in the
same run, lateness being its job submission minus the scheduled time, and the ratios are printed.
(d) the whole system: a ``sx-worker serve`` scheduler and 2 ``sx-worker run`` workers, 100 jobs due
together every second; lateness is the processor's start minus the schedule time (what a user sees),
missed is expected fires minus processor runs.

    python bench/bench_triggers.py [a|b|c|d ...] [--peer] [--seconds S] [--jobs-a N] [--jobs-b N] [--jobs-c N]
        [--jobs-d N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _cluster import GROUP, NS, cluster

from sx.processors import JobContext, JobSpec, Processor, cron, definition_of, processor
from sx.scheduler import RealClock
from sx.scheduler.jobs import TriggerEngine, next_fire_time
from sx.scheduler.store import Group, Instance, Namespace, Store
from sx.scheduler.store.sql import SqlStore, sqlite_url

LATENESS_DIR_ENV = "BENCH_TRIGGERS_LATENESS_DIR"
SETTLE_SECONDS = 3.0
"""Seconds APScheduler runs past the window, so fires due at its end are submitted before counting."""
DRAIN_LIMIT = timedelta(seconds=30)
"""How long our engine may run past its window to create the fires due within it (it is drained)."""


@processor(name="bench.tick", max_concurrency=1_000_000)
class Tick(Processor):
    """(d): appends ``<schedule time> <processor start minus schedule time>`` to its process's file."""

    def process(self, ctx: JobContext) -> None:
        started = time.time()
        due = ctx.schedule_time.timestamp()
        folder = Path(os.environ[LATENESS_DIR_ENV])
        with (folder / f"{os.getpid()}.txt").open("a") as out:
            out.write(f"{due} {started - due}\n")


async def _nothing(instances: list[Instance]) -> None:
    return None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def _open_store(directory: Path) -> SqlStore:
    store = SqlStore(sqlite_url(directory))
    await store.start()
    await store.create_namespace(Namespace(id=NS, name=NS))
    await store.create_group(Group(namespace=NS, group_id=GROUP, app_key="k"))
    return store


async def _add_jobs(store: Store, count: int, expression: str, *, max_concurrency: int) -> list[int]:
    now = datetime.now(UTC)
    ids: list[int] = []
    for n in range(count):
        spec = JobSpec(
            class_name="demo:Noop",
            name=f"job-{n}",
            schedule=cron(expression),
            max_concurrency=max_concurrency,
        )
        first = next_fire_time(spec, now, default_tz=UTC, calendar=None)
        job = await store.create_job(
            namespace=NS, group_id=GROUP, spec=spec, enabled=True, managed=False, next_fire_time=first
        )
        ids.append(job.id)
    return ids


async def _drain(engine: TriggerEngine, end: datetime) -> float:
    """Wait until the engine has caught up past ``end`` (DRAIN_LIMIT at most); returns the seconds
    waited after ``end``. What is still not created after that counts as missed."""
    while datetime.now(UTC) < end + DRAIN_LIMIT:
        caught_up = engine.caught_up_to
        if caught_up is not None and caught_up > end:
            break
        await asyncio.sleep(0.05)
    return max(0.0, (datetime.now(UTC) - end).total_seconds())


async def _due_together(
    label: str, jobs: int, expression: str, period: int, seconds: float
) -> tuple[float, int]:
    """Prints the figures; returns (p99 lateness ms, missed fires)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = await _open_store(Path(tmp))
        # As `sx-worker serve` does once started (freeze_startup_objects): what start-up built is moved
        # out of the collector's full passes (the jobs added next are not, as jobs created through the
        # OpenAPI are not).
        gc.collect()
        gc.freeze()
        try:
            # Nothing ever runs (no workers): a high maxConcurrency keeps every fire a plain WAITING one.
            ids = await _add_jobs(store, jobs, expression, max_concurrency=1_000_000)
            # The set-up's inserts leave a large write-ahead log; fold it into the database now, or the
            # first round's commit pays for that checkpoint (once) and the window measures the set-up.
            async with store.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine = TriggerEngine(store, clock=RealClock(), default_tz=UTC, on_created=_nothing)
            await engine.start()
            # Fires due while the jobs were being stored are a set-up backlog: count from a clean start.
            started = datetime.now(UTC)
            first_fire = (math.floor(started.timestamp() / period) + 1) * period
            cpu0 = _cpu_seconds()
            await asyncio.sleep(seconds)
            cpu = _cpu_seconds() - cpu0
            # Fires due up to the end of the window count. The engine is drained before it stops: it
            # runs on until it has caught up past the end (DRAIN_LIMIT at most), so a round due just
            # before the end is created (and its lateness counted) rather than reported missed.
            end = started + timedelta(seconds=seconds)
            drain = await _drain(engine, end)
            await engine.stop()
            expected_per_job = max(0, math.floor((end.timestamp() - first_fire) / period) + 1)
            lateness: list[float] = []
            created = 0
            for job_id in ids:
                page = await store.list_instances(
                    job_id, since=datetime.fromtimestamp(first_fire, UTC), until=end, limit=100_000
                )
                created += len(page.items)
                lateness.extend((i.created_at - i.schedule_time).total_seconds() * 1000 for i in page.items)
            expected = expected_per_job * jobs
            print(
                f"({label}) {jobs} jobs '{expression}' for {seconds:.0f}s: "
                f"created {created}, expected {expected}, missed {max(0, expected - created)}; "
                f"lateness ms p50 {_percentile(lateness, 0.5):.1f} p99 {_percentile(lateness, 0.99):.1f} "
                f"max {max(lateness, default=math.nan):.1f}; CPU {cpu:.1f}s over {seconds:.0f}s; "
                f"drained {drain:.2f}s after the window"
            )
            return _percentile(lateness, 0.99), max(0, expected - created)
        finally:
            await store.close()


async def _nothing_async() -> None:
    return None


async def _aps_due_together(
    label: str, jobs: int, second: str, period: int, seconds: float
) -> tuple[float, int]:
    """The same fires on APScheduler 3 (memory job store, asyncio executor, default misfire grace)."""
    from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobEvent
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger

    scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={"max_instances": 1000})
    late: list[tuple[float, float]] = []  # (due, lateness ms)
    missed: list[float] = []

    def on_event(event: JobEvent) -> None:
        now = datetime.now(UTC)
        for due in getattr(event, "scheduled_run_times", None) or [event.scheduled_run_time]:
            if event.code == EVENT_JOB_SUBMITTED:
                late.append((due.timestamp(), (now - due).total_seconds() * 1000))
            else:
                missed.append(due.timestamp())

    scheduler.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED)
    for n in range(jobs):
        scheduler.add_job(_nothing_async, CronTrigger(second=second, timezone=UTC), id=f"job-{n}")
    scheduler.start()
    started = datetime.now(UTC)
    first_fire = (math.floor(started.timestamp() / period) + 1) * period
    cpu0 = _cpu_seconds()
    await asyncio.sleep(seconds)
    cpu = _cpu_seconds() - cpu0
    end = started.timestamp() + seconds  # the same window as ours, with the same time to settle
    await asyncio.sleep(SETTLE_SECONDS)
    scheduler.shutdown(wait=False)
    lateness = [ms for due, ms in late if first_fire <= due <= end]
    expected = jobs * max(0, math.floor((end - first_fire) / period) + 1)
    lost = sum(1 for due in missed if first_fire <= due <= end)
    print(
        f"({label}) APScheduler 3: submitted {len(lateness)}, expected {expected}, missed "
        f"{max(lost, expected - len(lateness))}; lateness ms p50 {_percentile(lateness, 0.5):.1f} "
        f"p99 {_percentile(lateness, 0.99):.1f} max {max(lateness, default=math.nan):.1f}; CPU {cpu:.1f}s"
    )
    return _percentile(lateness, 0.99), max(lost, expected - len(lateness))


def _compare(label: str, ours: tuple[float, int], peer: tuple[float, int]) -> None:
    print(
        f"({label}) sx / APScheduler: p99 lateness {ours[0] / peer[0]:.2f}x; "
        f"missed fires {ours[1]} vs {peer[1]}"
    )


async def _idle(jobs: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await _open_store(Path(tmp))
        try:
            t0 = time.perf_counter()
            # Daily jobs at 03:00 UTC: none falls due while we measure (unless run right at 03:00).
            await _add_jobs(store, jobs, "0 0 3 * * ?", max_concurrency=1)
            print(f"(c) stored {jobs} cron jobs in {time.perf_counter() - t0:.1f}s")
            engine = TriggerEngine(store, clock=RealClock(), default_tz=UTC, on_created=_nothing)
            t0 = time.perf_counter()
            await engine.start()
            while engine.caught_up_to is None:  # noqa: ASYNC110 - the engine offers no event for this
                await asyncio.sleep(0.001)
            startup = time.perf_counter() - t0
            cpu0, wall0 = _cpu_seconds(), time.perf_counter()
            await asyncio.sleep(seconds)
            cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
            await engine.stop()
            print(
                f"(c) {jobs} jobs stored: start-up {startup * 1000:.1f} ms; idle CPU "
                f"{cpu / wall:.4f} s per wall second over {wall:.0f}s"
            )
        finally:
            await store.close()


def _end_to_end(jobs: int, seconds: float) -> None:
    from sx.worker import SyncOpenApiClient

    with tempfile.TemporaryDirectory(prefix="sx-bench-") as tmp:
        folder = Path(tmp)
        marks = folder / "lateness"
        marks.mkdir()
        with cluster(folder, "bench_triggers", worker_env={LATENESS_DIR_ENV: str(marks)}) as running:
            with SyncOpenApiClient(running.base_url, namespace=NS, group_id=GROUP) as client:
                base = definition_of(Tick).spec
                for n in range(jobs):
                    client.create_job(
                        base.model_copy(update={"name": f"tick-{n}", "schedule": cron("* * * * * ?")})
                    )
            # Count from the first whole second after every job exists (fires before are set-up).
            first = math.floor(time.time()) + 2
            time.sleep(first + seconds - time.time())
            last = first + seconds - 1
            time.sleep(3)  # the last fires' processors run
        runs = [line.split() for f in marks.iterdir() for line in f.read_text().splitlines()]
        lateness = [float(late) * 1000 for due, late in runs if first <= float(due) <= last]
        expected = jobs * seconds
        print(
            f"(d) {jobs} jobs '* * * * * ?' for {seconds:.0f}s through 2 workers: processor runs "
            f"{len(lateness)}, expected {expected}, missed {max(0, expected - len(lateness))}; processor "
            f"start minus due ms p50 {_percentile(lateness, 0.5):.1f} p99 {_percentile(lateness, 0.99):.1f} "
            f"max {max(lateness, default=math.nan):.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", nargs="*", default=["a", "b", "c", "d"], choices=["a", "b", "c", "d"])
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="duration of (a), (b) and (d); (c) idles a third"
    )
    parser.add_argument("--jobs-a", type=int, default=1000)
    parser.add_argument("--jobs-b", type=int, default=10_000)
    parser.add_argument("--jobs-c", type=int, default=100_000)
    parser.add_argument("--jobs-d", type=int, default=100)
    parser.add_argument("--peer", action="store_true", help="also run (a) and (b) on APScheduler 3")
    args = parser.parse_args()
    if "a" in args.which:
        ours = asyncio.run(_due_together("a", args.jobs_a, "* * * * * ?", 1, args.seconds))
        if args.peer:
            _compare("a", ours, asyncio.run(_aps_due_together("a", args.jobs_a, "*", 1, args.seconds)))
    if "b" in args.which:
        seconds_b = max(args.seconds, 21.0)
        ours = asyncio.run(_due_together("b", args.jobs_b, "0/10 * * * * ?", 10, seconds_b))
        if args.peer:
            _compare("b", ours, asyncio.run(_aps_due_together("b", args.jobs_b, "0/10", 10, seconds_b)))
    if "c" in args.which:
        asyncio.run(_idle(args.jobs_c, max(5.0, args.seconds / 3)))
    if "d" in args.which:
        _end_to_end(args.jobs_d, int(args.seconds))


if __name__ == "__main__":
    main()
