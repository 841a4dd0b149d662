"""OpenAPI throughput: requests per second and latency percentiles for GetJobInfo and CreateJob on a
SQLite store, with 50 concurrent clients against a real uvicorn server on 127.0.0.1.

    .venv/bin/python bench/bench_openapi.py [--clients 50] [--duration 10] [--requests 4000]
        [--generator auto|wrk|httpx]

The load comes from wrk when it is on PATH (one thread, ``--clients`` connections, ``--duration``
seconds per operation; CreateJob names are made unique by a small Lua script): a Python load generator
on the same small machine saturates before the server does. Without wrk, ``--requests`` requests are
sent by ``--clients`` httpx clients. The generator used is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from urllib.parse import urlencode

import httpx
import uvicorn

from sx.scheduler import RealClock
from sx.scheduler.api import Authenticator, Services, create_app
from sx.scheduler.jobs import JobService, NoHooks
from sx.scheduler.store.sql import SqlStore, sqlite_url

JOB = {"jobType": "python", "className": "app:Job", "executeMode": "standalone", "timeType": 100}
ADDR = {"namespace": "bench", "groupId": "g"}
CREATE_PATH = "/openapi/v1/job/create"
GET_PATH = "/openapi/job/v1/get"

# wrk's Lua: each request a CreateJob form body with a name never used before (one wrk thread).
_CREATE_LUA = """\
local counter = 0
local prefix = "wrk-" .. tostring(os.time()) .. "-"
local body_start = "{body}&name="
request = function()
  counter = counter + 1
  return wrk.format("POST", "{path}",
    {{["Content-Type"] = "application/x-www-form-urlencoded"}}, body_start .. prefix .. counter)
end
"""


def _report(name: str, count: int, clients: int, rate: float, p50_ms: float, p99_ms: float) -> None:
    print(
        f"{name:10s} {count} requests, {clients} clients: {rate:8.0f} req/s  "
        f"p50 {p50_ms:6.1f} ms  p99 {p99_ms:6.1f} ms"
    )


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"wrk latency {text!r}: not understood")
    return float(match[1]) * _UNIT_MS[match[2]]


def _wrk(name: str, url: str, clients: int, duration: int, script: str | None = None) -> None:
    args = ["wrk", "-t1", f"-c{clients}", f"-d{duration}s", "--latency", "--timeout", "30s"]
    with tempfile.TemporaryDirectory() as tmp:
        if script is not None:
            lua = Path(tmp) / "request.lua"
            lua.write_text(script)
            args += ["-s", str(lua)]
        out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if failed or errors:
        raise RuntimeError(f"{name}: failures under load:\n{out}")
    count = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
    _report(name, count, clients, rate, p50, p99)


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
    _report(name, len(latencies), clients, len(latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000)


async def _serve(data_dir: str, ports: multiprocessing.queues.Queue[int]) -> None:
    store = SqlStore(sqlite_url(Path(data_dir)))
    await store.start()
    service = JobService(store, clock=RealClock(), default_tz=UTC, hooks=NoHooks())
    config = uvicorn.Config(
        create_app(Services.jobs_only(store, service), auth=Authenticator(store, clock=RealClock())),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.01)
    ports.put(server.servers[0].sockets[0].getsockname()[1])
    await task


def _server_process(data_dir: str, ports: multiprocessing.queues.Queue[int]) -> None:
    asyncio.run(_serve(data_dir, ports))


async def main(clients: int, requests: int, duration: int, generator: str) -> None:
    use_wrk = generator == "wrk" or (generator == "auto" and shutil.which("wrk") is not None)
    if generator == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--generator wrk: wrk is not on PATH")
    # The server runs in its own process so the load generator does not share its event loop.
    with tempfile.TemporaryDirectory() as tmp:
        ports: multiprocessing.queues.Queue[int] = multiprocessing.Queue()
        process = multiprocessing.Process(target=_server_process, args=(tmp, ports), daemon=True)
        process.start()
        try:
            base = f"http://127.0.0.1:{ports.get(timeout=60)}"
            async with httpx.AsyncClient(base_url=base) as client:
                await client.post("/openapi/v1/namespace/create", data={"namespace": "bench"})
                await client.post("/openapi/v1/group/create", data=ADDR)
                created = await client.post(CREATE_PATH, data={**ADDR, **JOB, "name": "probe"})
                job_id = created.json()["data"]
            if use_wrk:
                print(f"load generator: wrk (1 thread, {clients} connections, {duration} s per operation)")
                body = urlencode({**ADDR, **JOB})
                _wrk(
                    "CreateJob",
                    base + CREATE_PATH,
                    clients,
                    duration,
                    _CREATE_LUA.format(body=body, path=CREATE_PATH),
                )
                query = urlencode({**ADDR, "jobId": job_id})
                _wrk("GetJobInfo", f"{base}{GET_PATH}?{query}", clients, duration)
                return
            print(f"load generator: httpx ({clients} clients in this process, {requests} requests each)")
            await _measure(
                "CreateJob",
                clients,
                requests,
                lambda c, i: c.post(CREATE_PATH, data={**ADDR, **JOB, "name": f"job-{i}"}),
                base,
            )
            await _measure(
                "GetJobInfo",
                clients,
                requests,
                lambda c, i: c.get(GET_PATH, params={**ADDR, "jobId": job_id}),
                base,
            )
        finally:
            process.terminate()
            process.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=4000, help="per operation, httpx only")
    parser.add_argument("--duration", type=int, default=10, help="seconds per operation, wrk only")
    parser.add_argument("--generator", choices=("auto", "wrk", "httpx"), default="auto")
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.requests, args.duration, args.generator))
