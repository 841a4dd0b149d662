"""OpenAPI throughput: requests per second and latency percentiles for GetJobInfo and CreateJob on a
SQLite store, with 50 concurrent clients against a real uvicorn server on 127.0.0.1.

    .venv/bin/python bench/bench_openapi.py [--clients 50] [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path

import httpx
import uvicorn

from sx.scheduler._api import create_app
from sx.scheduler._clock import RealClock
from sx.scheduler._service import JobService, NoHooks
from sx.scheduler._sql_store import SqlStore, sqlite_url

JOB = {"jobType": "python", "className": "app:Job", "executeMode": "standalone", "timeType": 100}


async def _measure(
    name: str,
    clients: int,
    total: int,
    send: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    base: str,
) -> None:
    latencies: list[float] = []
    counter = iter(range(total))

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            for i in counter:
                started = time.perf_counter()
                response = await send(client, i)
                latencies.append(time.perf_counter() - started)
                if response.json()["code"] != 200:
                    raise RuntimeError(f"{name} failed: {response.text}")

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{name:10s} {len(latencies)} requests, {clients} clients: {len(latencies) / elapsed:8.0f} req/s  "
        f"p50 {cuts[49] * 1000:6.1f} ms  p99 {cuts[98] * 1000:6.1f} ms"
    )


async def _serve(data_dir: str, ports: multiprocessing.queues.Queue[int]) -> None:
    store = SqlStore(sqlite_url(Path(data_dir)))
    await store.start()
    service = JobService(store, clock=RealClock(), default_tz=UTC, hooks=NoHooks())
    config = uvicorn.Config(
        create_app(service), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.01)
    ports.put(server.servers[0].sockets[0].getsockname()[1])
    await task


def _server_process(data_dir: str, ports: multiprocessing.queues.Queue[int]) -> None:
    asyncio.run(_serve(data_dir, ports))


async def main(clients: int, requests: int) -> None:
    # The server runs in its own process so the load generator does not share its event loop.
    with tempfile.TemporaryDirectory() as tmp:
        ports: multiprocessing.queues.Queue[int] = multiprocessing.Queue()
        process = multiprocessing.Process(target=_server_process, args=(tmp, ports), daemon=True)
        process.start()
        try:
            base = f"http://127.0.0.1:{ports.get(timeout=60)}"
            addr = {"namespace": "bench", "groupId": "g"}
            async with httpx.AsyncClient(base_url=base) as client:
                await client.post("/openapi/v1/namespace/create", data={"namespace": "bench"})
                await client.post("/openapi/v1/group/create", data=addr)
                created = await client.post("/openapi/v1/job/create", data={**addr, **JOB, "name": "probe"})
                job_id = created.json()["data"]
            await _measure(
                "CreateJob",
                clients,
                requests,
                lambda c, i: c.post("/openapi/v1/job/create", data={**addr, **JOB, "name": f"job-{i}"}),
                base,
            )
            await _measure(
                "GetJobInfo",
                clients,
                requests,
                lambda c, i: c.get("/openapi/job/v1/get", params={**addr, "jobId": job_id}),
                base,
            )
        finally:
            process.terminate()
            process.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.requests))
