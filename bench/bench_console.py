"""The console's jobs page with many jobs: time to answer the first page, a far page and a name search.

    python bench/bench_console.py [--jobs 10000] [--requests 30]

A real scheduler (in-process, SQLite in a temporary folder, real HTTP on 127.0.0.1) holding ``--jobs``
jobs in one group; each figure is the round trip of a GET on loopback (an upper bound of the server's
time: rendering included), median / p90 / max over ``--requests`` requests, after one warm-up.
Target: the first page under 300 ms with 10,000 jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from sx.processors import JobSpec, cron
from sx.scheduler import SchedulerServer, SchedulerSettings

NS, GROUP = "bench", "console"


async def timed(http: httpx.AsyncClient, label: str, path: str, requests: int) -> None:
    assert (await http.get(path)).status_code == 200  # warm-up
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        response = await http.get(path)
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text[:300]
    samples.sort()
    p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
    print(
        f"{label:<34} median {statistics.median(samples) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"
        f"   max {samples[-1] * 1000:7.1f} ms"
    )


async def run(jobs: int, requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sx-bench-console-") as folder:
        settings = SchedulerSettings(data_dir=Path(folder), http_port=0, grpc_port=0)
        async with SchedulerServer(settings) as server:
            await server.services.admin.create_namespace(NS)
            await server.services.admin.create_group(NS, GROUP)
            start = time.perf_counter()
            store = server.services.jobs.store
            for n in range(jobs):
                # Half cron jobs (a next fire time to show), half API jobs; all created straight in the store.
                spec = JobSpec(name=f"job-{n:05d}", class_name="bench.noop")
                if n % 2:
                    spec = spec.model_copy(update={"schedule": cron("0 0 3 * * ?")})
                await store.create_job(
                    namespace=NS, group_id=GROUP, spec=spec, enabled=True, managed=False, next_fire_time=None
                )
            print(
                f"{jobs} jobs stored in {time.perf_counter() - start:.1f} s; {requests} requests per figure"
            )
            async with httpx.AsyncClient(base_url=server.http_url + "/console", timeout=60) as http:
                query = f"ns={NS}&group={GROUP}"
                await timed(http, "jobs page 1", f"/jobs?{query}", requests)
                await timed(
                    http,
                    f"jobs page {jobs // 25 // 2} (middle)",
                    f"/jobs?{query}&page={jobs // 50}",
                    requests,
                )
                await timed(http, "search 'job-0999' (as htmx asks)", f"/jobs?{query}&q=job-0999", requests)
                await timed(http, "overview", "/", requests)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.requests))


if __name__ == "__main__":
    main()
