"""Standalone instances per second, end to end: ExecuteJob over HTTP until the scheduler stores SUCCESS.

    .venv/bin/python bench/bench_instances.py [--instances 2000] [--callers 50] [--workers 2]

A scheduler (``sx-worker serve``, SQLite) and ``--workers`` worker processes (``sx-worker run
bench_instances``, which imports this file as a module for its no-op processor) run on 127.0.0.1.
``--callers`` concurrent clients send ExecuteJob back to back; a monitor counts finished instances.
Prints the ExecuteJob rate, the end-to-end rate (first ExecuteJob to last SUCCESS) and the failures.
Run it alone on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _cluster import GROUP, NS, cluster

from sx.processors import JobContext, Processor, processor


@processor(name="bench.noop", max_concurrency=1_000_000)
class Noop(Processor):
    """Does nothing."""

    async def process(self, ctx: JobContext) -> None:
        return None


async def _bench(instances: int, callers: int, workers: int, base_url: str) -> None:
    from sx.processors import InstanceStatus, definition_of
    from sx.worker import OpenApiClient

    async with OpenApiClient(base_url, namespace=NS, group_id=GROUP, timeout=60) as client:
        job_id = await client.create_job(definition_of(Noop).spec)
        finished = (InstanceStatus.SUCCESS, InstanceStatus.FAILED)

        async def done_count() -> int:
            return (await client.list_instances(job_id, statuses=finished, page_size=1)).total

        async def wait_done(total: int) -> float:
            while True:
                if await done_count() >= total:
                    return time.perf_counter()
                await asyncio.sleep(0.1)  # a light poll: counting is a query on the measured scheduler

        # Warm-up (connections, SQLite's caches), until every worker has run instances: that also
        # proves they all registered.
        warm = 0
        deadline = time.monotonic() + 60
        while True:
            await asyncio.gather(*(client.execute_job(job_id) for _ in range(20)))
            warm += 20
            await wait_done(warm)
            page = await client.list_instances(job_id, page_size=100)
            if len({i.work_addr for i in page.instances}) >= workers:
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"only {len({i.work_addr for i in page.instances})} worker(s) took instances"
                )
            await asyncio.sleep(0.2)

        todo = iter(range(instances))

        async def caller() -> None:
            for _ in todo:
                await client.execute_job(job_id)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        submitted = time.perf_counter()
        ended = await wait_done(warm + instances)
        failed = (await client.list_instances(job_id, statuses=[InstanceStatus.FAILED], page_size=1)).total

    print(f"instances            {instances} (after {warm} warm-up), {callers} concurrent callers")
    print(f"ExecuteJob rate      {instances / (submitted - started):8.0f} calls/s")
    print(f"end to end           {instances / (ended - started):8.0f} instances/s  ({ended - started:.2f} s)")
    print(f"failed               {failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64, help="per worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sx-bench-") as tmp:
        # The finished instances are counted through the OpenAPI, so the scheduler keeps them all.
        keep = {"SX_HISTORY_KEEP": str(10 * (args.instances + 10_000))}
        with cluster(
            Path(tmp),
            "bench_instances",
            workers=args.workers,
            concurrency=args.concurrency,
            scheduler_env=keep,
        ) as running:
            asyncio.run(_bench(args.instances, args.callers, args.workers, running.base_url))


if __name__ == "__main__":
    main()
