# ruff: noqa: ASYNC110, ASYNC220, ASYNC240 - a benchmark driver: blocking set-up calls are fine
"""Map-mode throughput: sx-worker grid and batch, a Celery chord, and a bare gRPC baseline.

    .venv/bin/python bench/bench_map.py [--tasks 100000] [--batch-tasks 1000000] [--skip-celery]

Figures printed (run one bench at a time on an otherwise idle machine):

1. grid: ``--tasks`` no-op subtasks mapped by the root, reduced on the master; 2 worker processes.
   End-to-end subtasks per second (submit to final status) and the master's peak RSS.
2. batch: ``--batch-tasks`` no-op subtasks, map only; wall time and the master's peak RSS.
3. Celery (when importable and Redis answers on 127.0.0.1:6379): the same fan-out + reduce as a chord,
   one task per subtask and chunks of 100; 2 worker processes (``--concurrency 1`` each).
4. A bare gRPC baseline: the same payloads pushed in StartTasks pages of ``pageSize`` from one process
   to another, acknowledged per page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NS, GROUP, APP_KEY = "bench", "bench", "bench-key"
PAGE_SIZE = 1000

# -- the processors the worker processes serve --------------------------------------------------------


def _registry() -> Any:
    from sx.processors import JobContext, MapProcessor, MapReduceProcessor, Registry, processor

    registry = Registry()

    @processor(name="bench.reduce", registry=registry)
    class NoOpReduce(MapReduceProcessor):
        async def process(self, ctx: JobContext) -> object:
            if ctx.is_root_task:
                n = int(ctx.job_parameters)
                for start in range(0, n, 1000):
                    await ctx.map_async(list(range(start, min(n, start + 1000))), "noop")
            return None

        def reduce(self, ctx: JobContext) -> str:
            return str(len(ctx.task_results))

    @processor(name="bench.maponly", registry=registry)
    class NoOpMap(MapProcessor):
        async def process(self, ctx: JobContext) -> object:
            if ctx.is_root_task:
                n = int(ctx.job_parameters)
                for start in range(0, n, 1000):
                    await ctx.map_async(list(range(start, min(n, start + 1000))), "noop")
            return None

    del NoOpReduce, NoOpMap
    return registry


async def _worker_main() -> None:
    from sx.worker import Worker, WorkerSettings

    worker = Worker(WorkerSettings(concurrency=256), registry=_registry())
    await worker.run()


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- sx-worker ----------------------------------------------------------------------------------------


async def _sx_runs(tasks: int, batch_tasks: int) -> dict[str, float]:
    from sx.processors._enums import ExecuteMode, InstanceStatus, TimeType, TriggerType
    from sx.processors._spec import JobSpec, MapOptions
    from sx.scheduler._server import SchedulerServer
    from sx.scheduler._settings import SchedulerSettings
    from sx.scheduler._store import Group, Namespace, NewInstance

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = SchedulerSettings(data_dir=Path(tmp) / "scheduler", http_port=0, grpc_port=0)
        async with SchedulerServer(settings) as server:
            store = server.store
            await store.create_namespace(Namespace(id=NS, name=NS))
            await store.create_group(Group(namespace=NS, group_id=GROUP, app_key=APP_KEY))
            env = dict(os.environ)
            env.update(
                SX_SERVER=server.grpc_address,
                SX_NAMESPACE=NS,
                SX_GROUP_ID=GROUP,
                SX_APP_KEY=APP_KEY,
                SX_DATA_DIR=str(Path(tmp) / "worker"),
                PYTHONPATH=str(ROOT),
            )

            async def run(processor: str, mode: ExecuteMode, n: int) -> tuple[float, float, str]:
                procs = [
                    subprocess.Popen([sys.executable, __file__, "--worker"], env=env, cwd=ROOT)
                    for _ in range(2)
                ]
                try:
                    while len(server.dispatcher.live_workers(NS, GROUP)) < 2:
                        await asyncio.sleep(0.05)
                    job = await store.create_job(
                        namespace=NS,
                        group_id=GROUP,
                        spec=JobSpec(
                            name=f"{processor}-{mode.value}",
                            class_name=processor,
                            execute_mode=mode,
                            parameters=str(n),
                            map=MapOptions(
                                page_size=PAGE_SIZE, consumer_size=64, queue_size=20_000, dispatcher_size=4
                            ),
                        ),
                        enabled=True,
                        managed=False,
                        next_fire_time=None,
                    )
                    now = datetime.now(UTC)
                    started = time.perf_counter()
                    instance = await store.create_instance(
                        NewInstance(
                            job_id=job.id,
                            namespace=NS,
                            group_id=GROUP,
                            status=InstanceStatus.WAITING,
                            trigger_type=TriggerType.API,
                            time_type=TimeType.API,
                            schedule_time=now,
                            data_time=now,
                        )
                    )
                    await server.dispatcher.instance_created(instance)
                    while True:
                        current = await store.get_instance(instance.id)
                        assert current is not None
                        if current.status.finished:
                            break
                        await asyncio.sleep(0.02)
                    elapsed = time.perf_counter() - started
                    master_pid = int(current.worker_id.split("_")[-2])
                    rss = _peak_rss_mb(master_pid)
                    if current.status is not InstanceStatus.SUCCESS:
                        raise SystemExit(f"{processor} {mode.value} failed: {current.result}")
                    return elapsed, rss, current.result
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.wait()

            elapsed, rss, result = await run("bench.reduce", ExecuteMode.GRID, tasks)
            print(
                f"sx grid map-reduce: {tasks:,} subtasks in {elapsed:.2f}s = {tasks / elapsed:,.0f}/s; "
                f"master peak RSS {rss:.0f} MB (reduce saw {result} results)"
            )
            figures["grid_rate"] = tasks / elapsed
            if batch_tasks:
                elapsed, rss, result = await run("bench.maponly", ExecuteMode.BATCH, batch_tasks)
                print(
                    f"sx batch map-only: {batch_tasks:,} subtasks in {elapsed:.1f}s = "
                    f"{batch_tasks / elapsed:,.0f}/s; master peak RSS {rss:.0f} MB"
                )
    return figures


# -- bare gRPC ----------------------------------------------------------------------------------------


async def _grpc_server_main(port_file: str) -> None:
    from grpc import aio

    from sx.protos.v1 import peer_pb2, peer_pb2_grpc

    class Sink(peer_pb2_grpc.PeerServicer):
        async def StartTasks(self, request: Any, context: Any) -> Any:
            return peer_pb2.StartTasksReply(accepted=True)

    server = aio.server()
    peer_pb2_grpc.add_PeerServicer_to_server(Sink(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    Path(port_file).write_text(str(port))
    await server.wait_for_termination()


async def _grpc_baseline(tasks: int) -> float:
    from grpc import aio

    from sx.protos.v1 import common_pb2, peer_pb2, peer_pb2_grpc

    with tempfile.TemporaryDirectory() as tmp:
        port_file = str(Path(tmp) / "port")
        proc = subprocess.Popen(
            [sys.executable, __file__, "--grpc-sink", port_file], cwd=ROOT, env={**os.environ}
        )
        try:
            while not Path(port_file).exists() or not Path(port_file).read_text():
                await asyncio.sleep(0.02)
            target = f"127.0.0.1:{Path(port_file).read_text()}"
            spec = common_pb2.InstanceSpec(instance_id=1, job_name="bench", execute_mode="grid")
            payloads = [json.dumps(i).encode() for i in range(tasks)]
            async with aio.insecure_channel(target) as channel:
                stub = peer_pb2_grpc.PeerStub(channel)
                started = time.perf_counter()
                for start in range(0, tasks, PAGE_SIZE):
                    await stub.StartTasks(
                        peer_pb2.StartTasksRequest(
                            instance=spec,
                            tasks=[
                                peer_pb2.TaskRequest(task_id=start + i + 1, task_name="noop", payload=p)
                                for i, p in enumerate(payloads[start : start + PAGE_SIZE])
                            ],
                        )
                    )
                elapsed = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait()
    rate = tasks / elapsed
    print(f"bare gRPC pages of {PAGE_SIZE}: {tasks:,} payloads in {elapsed:.2f}s = {rate:,.0f}/s")
    return rate


# -- Celery -------------------------------------------------------------------------------------------

CELERY_MODULE = """
from celery import Celery
app = Celery("bench_map", broker="redis://127.0.0.1:6379/15", backend="redis://127.0.0.1:6379/15")
app.conf.update(worker_prefetch_multiplier=100, result_expires=600, task_ignore_result=False)

@app.task
def noop(i):
    return None

@app.task
def noop_chunk(items):
    return [None for _ in items]

@app.task
def gather(results):
    return len(results)
"""


def _celery(tasks: int) -> tuple[float, float] | None:
    try:
        import celery  # noqa: F401
        import redis
    except ImportError:
        print("celery: not installed (pip install 'celery[redis]'); skipped")
        return None
    try:
        redis.Redis(host="127.0.0.1", port=6379, db=15).flushdb()
    except Exception as exc:
        print(f"celery: Redis on 127.0.0.1:6379 not reachable ({exc}); skipped")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_celery_app.py").write_text(CELERY_MODULE)
        sys.path.insert(0, tmp)
        env = {**os.environ, "PYTHONPATH": tmp}
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench_celery_app",
                    "worker",
                    "--concurrency",
                    "1",
                    "--pool",
                    "solo",
                    "-n",
                    f"bench{i}@%h",
                    "--loglevel",
                    "warning",
                ],
                cwd=tmp,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(2)
        ]
        try:
            import bench_celery_app as capp  # type: ignore[import-not-found]
            from celery import chord

            capp.app.control.ping(timeout=5)
            time.sleep(2)
            started = time.perf_counter()
            result = chord(capp.noop.s(i) for i in range(tasks))(capp.gather.s())
            count = result.get(timeout=1800)
            one = time.perf_counter() - started
            print(f"celery chord, one task per subtask: {count:,} in {one:.1f}s = {tasks / one:,.0f}/s")
            started = time.perf_counter()
            items = list(range(tasks))
            chunks = [items[i : i + 100] for i in range(0, tasks, 100)]
            result = chord(capp.noop_chunk.s(c) for c in chunks)(capp.gather.s())
            result.get(timeout=1800)
            chunked = time.perf_counter() - started
            print(f"celery chord, chunks of 100: {tasks:,} in {chunked:.1f}s = {tasks / chunked:,.0f}/s")
            return tasks / one, tasks / chunked
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--batch-tasks", type=int, default=1_000_000)
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--grpc-sink", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.worker:
        uvloop.run(_worker_main())
        return
    if args.grpc_sink:
        uvloop.run(_grpc_server_main(args.grpc_sink))
        return
    figures = uvloop.run(_sx_runs(args.tasks, args.batch_tasks))
    baseline = uvloop.run(_grpc_baseline(args.tasks))
    print(f"sx grid end to end is {figures['grid_rate'] / baseline:.1%} of the bare gRPC push")
    if not args.skip_celery:
        celery_rates = _celery(args.tasks)
        if celery_rates is not None:
            one, chunked = celery_rates
            print(
                f"sx grid vs celery: {figures['grid_rate'] / one:.1f}x (one task per subtask), "
                f"{figures['grid_rate'] / chunked:.1f}x (chunks of 100)"
            )


if __name__ == "__main__":
    main()
