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
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sx.processors import JobContext, Processor, processor

HERE = Path(__file__).resolve().parent
NS, GROUP = "bench", "bench"


@processor(name="bench.noop", max_concurrency=1_000_000)
class Noop(Processor):
    """Does nothing."""

    async def process(self, ctx: JobContext) -> None:
        return None


def _sx_worker() -> str:
    return str(Path(sys.executable).parent / "sx-worker")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SX_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_output(log: Path, proc: subprocess.Popen[bytes], pattern: str, *, count: int = 1) -> re.Match[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        matches = list(re.finditer(pattern, text))
        if len(matches) >= count:
            return matches[-1]
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {pattern!r} in {log}")


async def _bench(instances: int, callers: int, workers: int, base_url: str) -> None:
    from sx.processors import InstanceStatus
    from sx.processors._registry import definition_of
    from sx.worker._openapi_client import OpenApiClient

    async with OpenApiClient(base_url, namespace=NS, group_id=GROUP, timeout=60) as client:
        job_id = await client.create_job(definition_of(Noop).spec)
        finished = (InstanceStatus.SUCCESS, InstanceStatus.FAILED)

        async def done_count() -> int:
            return (await client.list_instances(job_id, statuses=finished, page_size=1)).total

        async def wait_done(total: int) -> float:
            while True:
                if await done_count() >= total:
                    return time.perf_counter()
                await asyncio.sleep(0.02)

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
        folder = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            log = folder / "scheduler.log"
            with log.open("wb") as sink:
                serve = subprocess.Popen(
                    [
                        _sx_worker(),
                        "serve",
                        "--data-dir",
                        str(folder / "data"),
                        "--http-port",
                        "0",
                        "--grpc-port",
                        "0",
                        "--log-level",
                        "warning",
                    ],
                    # The finished instances are counted through the OpenAPI, so keep them all.
                    env={**_env(), "SX_HISTORY_KEEP": str(10 * (args.instances + 10_000))},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            procs.append(serve)
            match = _wait_output(log, serve, r"scheduler: OpenAPI (http://\S+) .*gRPC (\S+)")
            base_url, grpc_address = match.group(1), match.group(2)
            from sx.worker._openapi_client import SyncOpenApiClient

            with SyncOpenApiClient(base_url, namespace=NS, group_id=GROUP) as client:
                app_key = client.ensure_group().app_key
            for n in range(args.workers):
                wlog = folder / f"worker-{n}.log"
                with wlog.open("wb") as sink:
                    worker = subprocess.Popen(
                        [
                            _sx_worker(),
                            "run",
                            "bench_instances",
                            "--server",
                            grpc_address,
                            "--namespace",
                            NS,
                            "--group",
                            GROUP,
                            "--app-key",
                            app_key,
                            "--no-sync",
                            "--concurrency",
                            str(args.concurrency),
                            "--log-level",
                            "warning",
                        ],
                        cwd=HERE,
                        env={**_env(), "SX_DATA_DIR": str(folder / f"worker-{n}")},
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                procs.append(worker)
            asyncio.run(_bench(args.instances, args.callers, args.workers, base_url))
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
