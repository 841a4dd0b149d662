"""Store figures: claim_fires for N due jobs in one call, and the trigger engine's look-ups.

    python bench/bench_store.py [--jobs N] [--rounds R] [--url URL]

Without --url it runs on a SQLite file in a temporary directory (the embedded default); pass
``--url postgresql://postgres@127.0.0.1:5432/<db>`` to measure PostgreSQL (the tables are created there).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType
from sx.scheduler.store import Fire, Job, NewInstance
from sx.scheduler.store.sql import SqlStore, sqlite_url

T0 = datetime(2030, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=1)


def _fires(jobs: list[Job], due: datetime) -> list[Fire]:
    return [
        Fire(
            job_id=job.id,
            due=due,
            next_fire_time=due + STEP,
            instance=NewInstance(
                job_id=job.id,
                namespace=job.namespace,
                group_id=job.group_id,
                status=InstanceStatus.WAITING,
                trigger_type=TriggerType.SCHEDULED,
                time_type=TimeType.FIXED_RATE,
                schedule_time=due,
                data_time=due,
            ),
        )
        for job in jobs
    ]


async def _timed(label: str, samples: list[float]) -> None:
    print(
        f"{label:<38} median {statistics.median(samples) * 1000:8.2f} ms"
        f"   min {min(samples) * 1000:8.2f} ms   max {max(samples) * 1000:8.2f} ms"
    )


async def run(url: str, jobs_count: int, rounds: int) -> None:
    store = SqlStore(url)
    await store.start()
    try:
        print(f"store: {store.url}  jobs: {jobs_count}  rounds: {rounds}")
        start = time.perf_counter()
        jobs = [
            await store.create_job(
                namespace="bench",
                group_id="bench",
                spec=JobSpec(name=f"bench-{i}", class_name="bench:Proc"),
                enabled=True,
                managed=False,
                next_fire_time=T0,
            )
            for i in range(jobs_count)
        ]
        elapsed = time.perf_counter() - start
        print(f"{'create_job (one at a time)':<38} {elapsed / jobs_count * 1e6:8.1f} us per job")

        claims: list[float] = []
        due_reads: list[float] = []
        next_reads: list[float] = []
        due = T0
        for _ in range(rounds):
            t = time.perf_counter()
            assert await store.next_due_time() == due
            next_reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert len(await store.due_jobs(due, jobs_count)) == jobs_count
            due_reads.append(time.perf_counter() - t)
            fires = _fires(jobs, due)
            t = time.perf_counter()
            created = await store.claim_fires(fires)
            claims.append(time.perf_counter() - t)
            assert all(c is not None for c in created)
            due += STEP
        await _timed("next_due_time", next_reads)
        await _timed(f"due_jobs ({jobs_count} rows)", due_reads)
        await _timed(f"claim_fires ({jobs_count} fires, 1 call)", claims)

        # A replica that lost the race: every claim fails the compare-and-set.
        stale = _fires(jobs, T0)
        t = time.perf_counter()
        assert await store.claim_fires(stale) == [None] * jobs_count
        await _timed(f"claim_fires ({jobs_count} stale fires)", [time.perf_counter() - t])
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--url", default=None, help="a store URL; default: SQLite in a temporary directory")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.jobs, args.rounds))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(sqlite_url(Path(tmp)), args.jobs, args.rounds))


if __name__ == "__main__":
    main()
