# ruff: noqa: ASYNC110, ASYNC220, ASYNC240 - a benchmark driver: blocking set-up calls are fine
"""Map-mode throughput: sx-worker grid and batch, a Celery chord, and a bare gRPC baseline.

    .venv/bin/python bench/bench_map.py [--tasks 100000] [--batch-tasks 1000000] [--page-size 100]
        [--scaleout-tasks 20000] [--celery-one-tasks 10000] [--repeat 3]
        [--only scaleout,grid,batch,grpc,celery] [--skip-celery]

Every configuration runs ``--repeat`` times, one run at a time; each run is printed and the median is
what the summary uses. Run it on an otherwise idle machine (check ``uptime`` first).

0. scaleout: a grid job of ``--scaleout-tasks`` subtasks that each burn about 1 ms of CPU (a blocking
   hook), run with 1 and then 2 worker processes in turn; each run's rate and subtasks per worker, the
   ratio 2 workers / 1 worker (target >= 1.7x) and the master's share of the subtasks.
1. grid: ``--tasks`` no-op subtasks mapped by the root, reduced on the master; 2 worker processes.
   End-to-end subtasks per second (instance submitted to final status stored), every subtask tracked
   individually, and the master's peak RSS. The job's pageSize is ``--page-size`` (the default, 100).
2. batch: ``--batch-tasks`` no-op subtasks, map only; wall time and the master's peak RSS.
3. A bare gRPC baseline: the same payloads pushed from one process to another in StartTasks pages of
   ``--page-size`` (the job's pageSize), one page in flight, each acknowledged; ours as a fraction of it.
4. Celery (when importable and Redis answers on 127.0.0.1:6379): the same fan-out + reduce as a chord
   over Redis, 2 worker processes (``--concurrency 1`` each): one task per subtask at
   ``--celery-one-tasks`` (slow; its rate is what is compared, and the time it would take at
   ``--tasks`` is printed as an extrapolation) and chunks of 100 at the full ``--tasks``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NS, GROUP, APP_KEY = "bench", "bench", "bench-key"
CONSUMER_SIZE, QUEUE_SIZE, DISPATCHER_SIZE = 64, 20_000, 4
BURN_SECONDS = 0.001
"""CPU each subtask of the scale-out job burns."""

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

    @processor(name="bench.burn", registry=registry)
    class BurnReduce(MapReduceProcessor):
        async def process(self, ctx: JobContext) -> object:
            if ctx.is_root_task:
                n = int(ctx.job_parameters)
                for start in range(0, n, 1000):
                    await ctx.map_async(list(range(start, min(n, start + 1000))), "burn")
                return None
            # About 1 ms of this thread's CPU, the GIL held as plain Python code holds it.
            until = time.thread_time() + BURN_SECONDS
            while time.thread_time() < until:
                pass
            return None

        def reduce(self, ctx: JobContext) -> str:
            return str(len(ctx.task_results))

    del NoOpReduce, NoOpMap, BurnReduce
    return registry


async def _worker_main() -> None:
    from sx.worker import Worker, WorkerSettings

    worker = Worker(WorkerSettings(concurrency=256), registry=_registry())
    profile_dir = os.environ.get("SX_BENCH_PROFILE_DIR")
    if not profile_dir:
        await worker.run()
        return
    # cProfile the worker (to find per-task costs); the stats are written when it is terminated.
    import cProfile
    import signal

    profiler = cProfile.Profile()
    loop = asyncio.get_running_loop()
    runner = asyncio.current_task()
    assert runner is not None
    loop.add_signal_handler(signal.SIGTERM, runner.cancel)
    profiler.enable()
    try:
        await worker.run()
    except asyncio.CancelledError:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(str(Path(profile_dir) / f"worker-{os.getpid()}.prof"))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (other engineers' load included)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- sx-worker ----------------------------------------------------------------------------------------


async def _sx_runs(
    *, tasks: int, batch_tasks: int, scaleout_tasks: int, page_size: int, repeat: int, grid: bool
) -> dict[str, list[tuple[float, float]]]:
    """(seconds, master peak RSS MB) of every grid and batch run; for the scale-out runs ("scale1",
    "scale2": 1 and 2 worker processes) (seconds, the master's share of the subtasks)."""
    from sx.processors import ExecuteMode, InstanceStatus, JobSpec, MapOptions, TimeType, TriggerType
    from sx.scheduler import SchedulerServer, SchedulerSettings
    from sx.scheduler.store import Group, Namespace, NewInstance

    figures: dict[str, list[tuple[float, float]]] = {"grid": [], "batch": [], "scale1": [], "scale2": []}
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

            async def run(
                processor: str, mode: ExecuteMode, n: int, workers: int = 2
            ) -> tuple[float, float, str, float]:
                """(seconds, master peak RSS MB, result, the master's share of the subtasks)."""
                procs = [
                    subprocess.Popen([sys.executable, __file__, "--worker"], env=env, cwd=ROOT)
                    for _ in range(workers)
                ]
                try:
                    # Exactly this run's two processes: a worker of the previous run may still be
                    # listed for a moment after it exited, and an instance sent to it runs on one worker.
                    pids = {str(proc.pid) for proc in procs}
                    while {
                        w.worker_id.split("_")[-2] for w in server.dispatcher.live_workers(NS, GROUP)
                    } != pids:
                        await asyncio.sleep(0.05)
                    job = await store.create_job(
                        namespace=NS,
                        group_id=GROUP,
                        spec=JobSpec(
                            name=f"{processor}-{mode.value}-{time.time_ns()}",
                            class_name=processor,
                            execute_mode=mode,
                            parameters=str(n),
                            map=MapOptions(
                                page_size=page_size,
                                consumer_size=CONSUMER_SIZE,
                                queue_size=QUEUE_SIZE,
                                dispatcher_size=DISPATCHER_SIZE,
                            ),
                        ),
                        enabled=True,
                        managed=False,
                        next_fire_time=None,
                    )
                    now = datetime.now(UTC)
                    cpu_before = {proc.pid: _cpu_seconds(proc.pid) for proc in procs}
                    busy_before = _machine_busy_seconds()
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
                    cpu = {proc.pid: _cpu_seconds(proc.pid) - cpu_before[proc.pid] for proc in procs}
                    # What else ran: with 2 cores, 2 workers can only scale out into idle cores.
                    others_busy = _machine_busy_seconds() - busy_before - sum(cpu.values())
                    if current.status is not InstanceStatus.SUCCESS:
                        raise SystemExit(f"{processor} {mode.value} failed: {current.result}")
                    others = ", ".join(f"{c:.2f}s" for pid, c in cpu.items() if pid != master_pid)
                    # Subtasks that succeeded on each worker (the root included), the master's first.
                    split, master_share = "?", float("nan")
                    with contextlib.suppress(ValueError, KeyError, TypeError, ZeroDivisionError):
                        done = {
                            w["workerId"].split("_")[-2]: w["success"]
                            for w in json.loads(current.progress)["workerProgress"]
                        }
                        mine = done.pop(str(master_pid), 0)
                        split = " / ".join(f"{c:,}" for c in [mine, *done.values()])
                        master_share = mine / (mine + sum(done.values()))
                    print(
                        f"    worker CPU during the run: master {cpu[master_pid]:.2f}s, "
                        f"other {others or '-'}; the rest of the machine {others_busy / elapsed:.1f} "
                        f"core(s) busy; subtasks per worker (master first) {split}",
                        flush=True,
                    )
                    return elapsed, rss, current.result, master_share
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.wait()

            for i in range(repeat if scaleout_tasks else 0):
                # 1 and 2 worker processes alternate, so both see the same machine.
                for workers in (1, 2):
                    elapsed, _, result, share = await run(
                        "bench.burn", ExecuteMode.GRID, scaleout_tasks, workers=workers
                    )
                    print(
                        f"  sx grid scale-out run {i + 1}, {workers} worker process(es): "
                        f"{scaleout_tasks:,} subtasks of {BURN_SECONDS * 1000:g} ms CPU in {elapsed:.2f}s = "
                        f"{scaleout_tasks / elapsed:,.0f}/s; master ran {share:.0%} (reduce saw {result})",
                        flush=True,
                    )
                    figures[f"scale{workers}"].append((elapsed, share))
            for i in range(repeat if grid else 0):
                elapsed, rss, result, _ = await run("bench.reduce", ExecuteMode.GRID, tasks)
                print(
                    f"  sx grid map-reduce run {i + 1}: {tasks:,} subtasks in {elapsed:.2f}s = "
                    f"{tasks / elapsed:,.0f}/s; master peak RSS {rss:.0f} MB (reduce saw {result} results)",
                    flush=True,
                )
                figures["grid"].append((elapsed, rss))
            for i in range(repeat if batch_tasks else 0):
                elapsed, rss, _, _ = await run("bench.maponly", ExecuteMode.BATCH, batch_tasks)
                print(
                    f"  sx batch map-only run {i + 1}: {batch_tasks:,} subtasks in {elapsed:.1f}s = "
                    f"{batch_tasks / elapsed:,.0f}/s; master peak RSS {rss:.0f} MB",
                    flush=True,
                )
                figures["batch"].append((elapsed, rss))
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


async def _grpc_baseline(*, tasks: int, page_size: int, repeat: int) -> list[float]:
    """Seconds of every run pushing ``tasks`` payloads in pages of ``page_size``."""
    from grpc import aio

    from sx.protos.v1 import common_pb2, peer_pb2, peer_pb2_grpc

    times: list[float] = []
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
                for run in range(repeat):
                    started = time.perf_counter()
                    for start in range(0, tasks, page_size):
                        await stub.StartTasks(
                            peer_pb2.StartTasksRequest(
                                instance=spec,
                                tasks=[
                                    peer_pb2.TaskRequest(task_id=start + i + 1, task_name="noop", payload=p)
                                    for i, p in enumerate(payloads[start : start + page_size])
                                ],
                            )
                        )
                    elapsed = time.perf_counter() - started
                    times.append(elapsed)
                    print(
                        f"  bare gRPC pages of {page_size} run {run + 1}: {tasks:,} payloads in "
                        f"{elapsed:.2f}s = {tasks / elapsed:,.0f}/s",
                        flush=True,
                    )
        finally:
            proc.terminate()
            proc.wait()
    return times


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


def _celery(*, tasks: int, one_tasks: int, repeat: int) -> tuple[list[float], list[float]] | None:
    """Seconds of every chord run: one task per subtask (``one_tasks``), chunks of 100 (``tasks``)."""
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

            while len(capp.app.control.ping(timeout=1)) < 2:
                time.sleep(0.2)
            one_times: list[float] = []
            chunk_times: list[float] = []
            for run in range(repeat):
                started = time.perf_counter()
                result = chord(capp.noop.s(i) for i in range(one_tasks))(capp.gather.s())
                count = result.get(timeout=1800)
                elapsed = time.perf_counter() - started
                one_times.append(elapsed)
                print(
                    f"  celery chord, one task per subtask run {run + 1}: {count:,} in {elapsed:.1f}s = "
                    f"{one_tasks / elapsed:,.0f}/s",
                    flush=True,
                )
            items = list(range(tasks))
            for run in range(repeat):
                started = time.perf_counter()
                chunks = [items[i : i + 100] for i in range(0, tasks, 100)]
                result = chord(capp.noop_chunk.s(c) for c in chunks)(capp.gather.s())
                count = result.get(timeout=1800)
                elapsed = time.perf_counter() - started
                chunk_times.append(elapsed)
                print(
                    f"  celery chord, chunks of 100 run {run + 1}: {tasks:,} in {elapsed:.1f}s = "
                    f"{tasks / elapsed:,.0f}/s ({count:,} chunks)",
                    flush=True,
                )
            return one_times, chunk_times
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
    parser.add_argument("--page-size", type=int, default=100, help="the job's pageSize (default 100)")
    parser.add_argument("--scaleout-tasks", type=int, default=20_000)
    parser.add_argument("--celery-one-tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only", default="scaleout,grid,batch,grpc,celery", help="comma-separated parts to run"
    )
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
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if args.skip_celery:
        parts.discard("celery")
    tasks, page, repeat = args.tasks, args.page_size, args.repeat
    print(
        f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; each configuration run {repeat} "
        f"time(s), medians below. Map options: pageSize={page} consumerSize={CONSUMER_SIZE} "
        f"queueSize={QUEUE_SIZE} dispatcherSize={DISPATCHER_SIZE}",
        flush=True,
    )
    figures = uvloop.run(
        _sx_runs(
            tasks=tasks,
            batch_tasks=args.batch_tasks if "batch" in parts else 0,
            scaleout_tasks=args.scaleout_tasks if "scaleout" in parts else 0,
            page_size=page,
            repeat=repeat,
            grid="grid" in parts,
        )
    )
    grpc_times = (
        uvloop.run(_grpc_baseline(tasks=tasks, page_size=page, repeat=repeat)) if "grpc" in parts else []
    )
    celery_times = (
        _celery(tasks=tasks, one_tasks=args.celery_one_tasks, repeat=repeat) if "celery" in parts else None
    )

    print("\nmedians:")
    grid_rate = 0.0
    if figures["scale1"]:
        one = statistics.median([t for t, _ in figures["scale1"]])
        two = statistics.median([t for t, _ in figures["scale2"]])
        ratios = [a / b for (a, _), (b, _) in zip(figures["scale1"], figures["scale2"], strict=True)]
        share = statistics.median([s for _, s in figures["scale2"]])
        n = args.scaleout_tasks
        burn = f"{BURN_SECONDS * 1000:g} ms CPU"
        print(
            f"sx grid scale-out, {n:,} subtasks of {burn}: 1 worker {n / one:,.0f}/s, "
            f"2 workers {n / two:,.0f}/s; 2 workers / 1 worker {statistics.median(ratios):.2f}x "
            f"(median of the per-run ratios; target >= 1.7x); the master ran {share:.0%} with 2 workers"
        )
    if figures["grid"]:
        seconds = statistics.median([t for t, _ in figures["grid"]])
        grid_rate = tasks / seconds
        rss = statistics.median([r for _, r in figures["grid"]])
        print(
            f"sx grid map-reduce: {tasks:,} subtasks in {seconds:.2f}s = {grid_rate:,.0f}/s; "
            f"master peak RSS {rss:.0f} MB"
        )
    if figures["batch"]:
        seconds = statistics.median([t for t, _ in figures["batch"]])
        rss = statistics.median([r for _, r in figures["batch"]])
        print(
            f"sx batch map-only: {args.batch_tasks:,} subtasks in {seconds:.1f}s = "
            f"{args.batch_tasks / seconds:,.0f}/s; master peak RSS {rss:.0f} MB"
        )
    if grpc_times:
        baseline = tasks / statistics.median(grpc_times)
        print(f"bare gRPC, pages of {page}: {baseline:,.0f} payloads/s")
        if grid_rate:
            print(f"sx grid end to end is {grid_rate / baseline:.1%} of the bare gRPC push (target >= 60%)")
    if celery_times is not None:
        one_rate = args.celery_one_tasks / statistics.median(celery_times[0])
        chunk_rate = tasks / statistics.median(celery_times[1])
        print(
            f"celery chord, one task per subtask: {one_rate:,.0f}/s measured at {args.celery_one_tasks:,} "
            f"tasks (extrapolated: {tasks / one_rate:,.0f}s for {tasks:,})"
        )
        print(f"celery chord, chunks of 100: {chunk_rate:,.0f}/s at {tasks:,} tasks")
        if grid_rate:
            print(
                f"sx grid / celery: {grid_rate / one_rate:.1f}x (one task per subtask), "
                f"{grid_rate / chunk_rate:.2f}x (chunks of 100)"
            )


if __name__ == "__main__":
    main()
