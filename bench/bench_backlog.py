"""Dispatch rate against the number of waiting instances: does a backlog slow dispatch down?

For each size N, a fresh SQLite store is filled with N WAITING instances of one no-op job (written
straight into the store before the scheduler starts), then a ``sx-worker serve`` scheduler and 2
``sx-worker run`` workers start; the scheduler takes the backlog on at start. The instances finished
during a window of ``--seconds`` (counted in the store; it opens after a warm-up and closes early when
the backlog runs out) give the drain rate for that size.
The rates should be about equal: each dispatch pass costs what it dispatches, not what waits.

    python bench/bench_backlog.py [--sizes 1000,10000,100000] [--seconds 15] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _cluster import GROUP, NS, cluster

from sx.processors import InstanceStatus, JobContext, JobSpec, Processor, TimeType, TriggerType, processor
from sx.scheduler.store import Group, Namespace, NewInstance
from sx.scheduler.store.sql import SqlStore, sqlite_url


@processor(name="bench.backlog.noop", max_concurrency=1_000_000)
class Noop(Processor):
    async def process(self, ctx: JobContext) -> None:
        return None


async def fill(data_dir: Path, size: int) -> None:
    """N WAITING instances of one job, due now, in the store the scheduler will open."""
    store = SqlStore(sqlite_url(data_dir))
    await store.start()
    try:
        await store.create_namespace(Namespace(NS, NS))
        await store.create_group(Group(NS, GROUP, app_key="bench-backlog-key"))
        spec = JobSpec(name="noop", class_name="bench.backlog.noop", max_concurrency=1_000_000)
        job = await store.create_job(
            namespace=NS, group_id=GROUP, spec=spec, enabled=True, managed=False, next_fire_time=None
        )
        now = datetime.now(UTC)
        new = NewInstance(
            job_id=job.id,
            namespace=NS,
            group_id=GROUP,
            status=InstanceStatus.WAITING,
            trigger_type=TriggerType.API,
            time_type=TimeType.API,
            schedule_time=now,
            data_time=now,
        )
        for _ in range(size):
            await store.create_instance(new)
    finally:
        await store.close()


def finished(data_dir: Path, size: int) -> int:
    """The backlog's instances that are no longer waiting, ready or running (finished ones beyond the
    history kept per job are pruned, so they are counted as what is left of the backlog)."""
    with sqlite3.connect(f"file:{data_dir / 'scheduler.db'}?mode=ro", uri=True, timeout=30) as db:
        return size - int(
            db.execute("SELECT count(*) FROM sx_instances WHERE status IN (1, 2, 3)").fetchone()[0]
        )


def drain_rate(size: int, seconds: float) -> float:
    """Instances finished per second over the window, which opens once a tenth of the backlog (at most
    200) has finished (workers registered, the scheduler warm) and closes after ``seconds`` or when the
    backlog ran out."""
    with tempfile.TemporaryDirectory(prefix="sx-bench-backlog-") as tmp:
        folder = Path(tmp)
        data = folder / "data"
        asyncio.run(fill(data, size))
        env = {"SX_NO_WORKER_GRACE": "3600"}
        with cluster(folder, "bench_backlog", workers=2, scheduler_env=env):
            deadline = time.monotonic() + 120
            while finished(data, size) < min(200, size // 10):
                if time.monotonic() > deadline:
                    raise SystemExit("no instance finished within 120 s")
                time.sleep(0.05)
            start, first = time.monotonic(), finished(data, size)
            done = first
            while time.monotonic() - start < seconds and done < size:
                # Looked at often: a small backlog drains within a fraction of a second, and a coarse
                # look would stretch its window.
                time.sleep(0.02)
                done = finished(data, size)
            elapsed = time.monotonic() - start
        return (done - first) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        rates = [drain_rate(size, args.seconds) for _ in range(args.repeat)]
        shown = ", ".join(f"{r:.0f}" for r in rates)
        print(f"{size:>7} waiting: {statistics.median(rates):.0f} instances/s drained (runs: {shown})")


if __name__ == "__main__":
    main()
