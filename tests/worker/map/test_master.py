"""The map master in process: two or three real workers (real gRPC between them) and a test scheduler."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sx.processors import (
    ROOT_TASK_NAME,
    JobContext,
    MapProcessor,
    MapReduceProcessor,
    Registry,
    TaskStatus,
    processor,
)
from sx.protos.v1 import common_pb2, scheduler_pb2
from sx.worker import Worker
from sx.worker.map import MapMaster, task_file_path
from tests.worker.test_runtime import Endpoint, endpoint, eventually, settings, spec, started

__all__ = ["endpoint"]

registry = Registry()
seen: dict[int, list[tuple[int, str, Any]]] = {}
concurrency: dict[tuple[int, str], list[int]] = {}
_lock = threading.Lock()


def _note(ctx: JobContext) -> None:
    with _lock:
        seen.setdefault(ctx.instance_id, []).append((ctx.task_id, ctx.task_name, ctx.task))


@processor(name="m.fanout", registry=registry)
class FanOut(MapReduceProcessor):
    """Root maps ``n`` numbers in level1; each even one maps two level2 children. Reduce sums results."""

    async def process(self, ctx: JobContext) -> object:
        _note(ctx)
        params = json.loads(ctx.job_parameters or "{}")
        if ctx.is_root_task:
            await ctx.map_async(list(range(params.get("n", 10))), "level1")
            return "root"
        if ctx.task_name == "level1":
            if params.get("nested") and ctx.task % 2 == 0:
                await ctx.map_async([ctx.task * 1000 + 1, ctx.task * 1000 + 2], "level2")
            if ctx.task in params.get("fail", []):
                raise RuntimeError(f"item {ctx.task} broke")
            return str(ctx.task)
        return str(ctx.task)

    def reduce(self, ctx: JobContext) -> str:
        statuses = ctx.task_statuses
        values = [int(v) for k, v in ctx.task_results.items() if k != 0 and statuses[k] is TaskStatus.SUCCESS]
        return json.dumps({"sum": sum(values), "tasks": len(ctx.task_results), "root": ctx.task_results[0]})


@processor(name="m.sync_maponly", registry=registry)
class SyncMapOnly(MapProcessor):
    """Sync hooks: the root maps ``n`` items with ctx.map from its thread."""

    def process(self, ctx: JobContext) -> object:
        _note(ctx)
        if ctx.is_root_task:
            ctx.map(list(range(int(ctx.job_parameters or "10"))), "items")
        return None


@processor(name="m.slow", registry=registry)
class Slow(MapReduceProcessor):
    """Subtasks sleep a little and record how many run at once per worker."""

    running: ClassVar[dict[tuple[int, str], int]] = {}

    async def process(self, ctx: JobContext) -> object:
        if ctx.is_root_task:
            await ctx.map_async(list(range(int(ctx.job_parameters or "20"))), "sleepy")
            return None
        key = (ctx.instance_id, ctx.worker_addr)
        with _lock:
            now = Slow.running.get(key, 0) + 1
            Slow.running[key] = now
            concurrency.setdefault(key, []).append(now)
        try:
            await asyncio.sleep(0.02)
        finally:
            with _lock:
                Slow.running[key] -= 1
        return ctx.worker_addr

    def reduce(self, ctx: JobContext) -> str:
        return str(len(ctx.task_results))


@processor(name="m.flaky", registry=registry, reduce_on_failure=False)
class Flaky(MapReduceProcessor):
    """Each subtask fails on its first attempts (as many as the job parameters say)."""

    async def process(self, ctx: JobContext) -> object:
        if ctx.is_root_task:
            await ctx.map_async([1, 2, 3], "flaky")
            return None
        _note(ctx)
        if ctx.task_attempt < int(ctx.job_parameters or "0"):
            raise RuntimeError(f"attempt {ctx.task_attempt} failed")
        return f"ok after {ctx.task_attempt}"

    def reduce(self, ctx: JobContext) -> str:
        return "reduced"


@processor(name="m.tree", registry=registry)
class Tree(MapReduceProcessor):
    """Maps a tree: the root maps ``n`` items, each task above ``depth`` maps ``fan`` children.

    A task's payload is its depth; every task records its id, so a test can count runs per task.
    """

    async def process(self, ctx: JobContext) -> object:
        _note(ctx)
        params = json.loads(ctx.job_parameters or "{}")
        depth = 0 if ctx.is_root_task else int(ctx.task)
        if depth < params["depth"]:
            count = params["n"] if depth == 0 else params["fan"]
            await ctx.map_async([depth + 1] * count, f"depth{depth + 1}")
        return str(depth)

    def reduce(self, ctx: JobContext) -> str:
        return str(len(ctx.task_results))


loop_ticks = 0
"""Turns of the event loop a ticker coroutine saw (``_tick``)."""
ticks_seen: dict[int, list[int]] = {}
"""The ``loop_ticks`` each CPU-bound subtask of an instance started at."""


@processor(name="m.cpu", registry=registry)
class Cpu(MapProcessor):
    """Async subtasks that burn about 1 ms of CPU and never wait (they hold the event loop)."""

    async def process(self, ctx: JobContext) -> object:
        if ctx.is_root_task:
            await ctx.map_async(list(range(int(ctx.job_parameters or "60"))), "cpu")
            return None
        ticks_seen.setdefault(ctx.instance_id, []).append(loop_ticks)
        until = time.thread_time() + 0.001
        while time.thread_time() < until:
            pass
        return None


async def _tick() -> None:
    global loop_ticks
    while True:
        loop_ticks += 1
        await asyncio.sleep(0)


forever_started: dict[int, int] = {}


@processor(name="m.forever", registry=registry)
class Forever(MapProcessor):
    async def process(self, ctx: JobContext) -> object:
        if ctx.is_root_task:
            await ctx.map_async(list(range(6)), "forever")
            return None
        with _lock:
            forever_started[ctx.instance_id] = forever_started.get(ctx.instance_id, 0) + 1
        await asyncio.sleep(3600)
        return None


def map_spec(name: str, workers: list[Worker], *, mode: str = "grid", **options: Any) -> Any:
    params = options.pop("params", "")
    map_options = common_pb2.MapOptions(
        page_size=options.pop("page_size", 100),
        consumer_size=options.pop("consumer_size", 5),
        queue_size=options.pop("queue_size", 10_000),
        dispatcher_size=options.pop("dispatcher_size", 2),
        task_max_attempt=options.pop("task_max_attempt", 0),
        task_attempt_interval_s=options.pop("task_attempt_interval_s", 0),
    )
    assert not options, options
    return spec(
        name,
        execute_mode=mode,
        parameters=params,
        map_options=map_options,
        workers=[common_pb2.WorkerRef(worker_id=w.worker_id, address=w.address) for w in workers],
    )


async def _workers(ep: Endpoint, count: int, tmp_path: Path) -> list[Worker]:
    workers = []
    for _ in range(count):
        worker = Worker(settings(ep, data_dir=tmp_path), registry=registry)
        worker.alive_interval = 0.3
        worker.progress_interval = 0.2
        workers.append(await started(ep, worker))
    return workers


async def _stop(workers: list[Worker]) -> None:
    await asyncio.gather(*(w.shutdown(grace=1.0) for w in workers))


async def _run(ep: Endpoint, master: Worker, instance: Any) -> scheduler_pb2.InstanceReport:
    ep.scheduler.submit(master.worker_id, instance)
    report: scheduler_pb2.InstanceReport = await eventually(
        lambda: ep.scheduler.final_of(instance.instance_id), what="final report"
    )
    return report


def _progress(report: scheduler_pb2.InstanceReport) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(report.progress)
    return loaded


async def _all_forgotten(workers: list[Worker], instance_id: int) -> None:
    def gone() -> bool:
        return all(
            instance_id not in w.running_instance_ids and instance_id not in w.running_task_instance_ids
            for w in workers
        )

    await eventually(gone, what="instance forgotten on every worker")


async def test_map_reduce_nested_on_two_workers(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec("m.fanout", workers, params=json.dumps({"n": 50, "nested": True}))
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 4, report.result
        body = json.loads(report.result)
        # 50 level1 (0..49) + 25 even ones * 2 level2 children each.
        level2 = sum(i * 1000 * 2 + 3 for i in range(0, 50, 2))
        assert body == {"sum": sum(range(50)) + level2, "tasks": 1 + 50 + 50, "root": "root"}
        ids = [task_id for task_id, _, _ in seen[instance.instance_id]]
        assert len(ids) == len(set(ids)) == 101
        names = {name: c for name, c in ((t["name"], t) for t in _progress(report)["taskProgress"])}
        assert names[ROOT_TASK_NAME]["success"] == 1
        assert names["level1"]["total"] == names["level1"]["success"] == 50
        assert names["level2"]["total"] == 50
        assert names["REDUCE_TASK"]["success"] == 1
        addresses = {w["workerAddr"] for w in _progress(report)["workerProgress"] if w["success"]}
        assert addresses == {w.address for w in workers}
        await _all_forgotten(workers, instance.instance_id)
    finally:
        await _stop(workers)


async def test_sync_map_only_keeps_no_results(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec("m.sync_maponly", workers, params="2500", page_size=50)
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 4, report.result
        assert report.result == "2501 task(s) succeeded"
        dispatch = _progress(report)["dispatch"]
        assert dispatch["maxBatch"] == 50 and dispatch["tasks"] == 2501
        await _all_forgotten(workers, instance.instance_id)
    finally:
        await _stop(workers)


async def test_consumer_size_bounds_concurrency_per_worker(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec("m.slow", workers, params="60", consumer_size=3, page_size=4)
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 4, report.result
        peaks = {addr: max(v) for (iid, addr), v in concurrency.items() if iid == instance.instance_id}
        assert set(peaks) == {w.address for w in workers}
        assert max(peaks.values()) == 3
        assert _progress(report)["dispatch"]["maxBatch"] == 4
    finally:
        await _stop(workers)


async def test_running_reports_carry_progress(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 1, tmp_path)
    try:
        instance = map_spec("m.slow", workers, params="40", consumer_size=1)
        await _run(endpoint, workers[0], instance)
        running = [
            r for r in endpoint.scheduler.reports_of(instance.instance_id) if r.status == 3 and r.progress
        ]
        assert running, "no RUNNING report with progress"
        assert "taskProgress" in _progress(running[-1])
    finally:
        await _stop(workers)


async def test_subtask_retries(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        ok = map_spec("m.flaky", workers, params="2", task_max_attempt=2)
        report = await _run(endpoint, workers[0], ok)
        assert report.status == 4 and report.result == "reduced"
        attempts = sorted(t for t, _, _ in seen[ok.instance_id])
        assert len(attempts) == 9  # three subtasks, three attempts each
        failing = map_spec("m.flaky", workers, params="5", task_max_attempt=1)
        report = await _run(endpoint, workers[0], failing)
        assert report.status == 5
        assert "3 of 4 task(s) failed" in report.result and "attempt 1 failed" in report.result
        assert "reduce" not in report.result  # reduce_on_failure=False: reduce did not run
    finally:
        await _stop(workers)


async def test_failed_subtask_fails_instance_and_reduce_still_runs(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    workers = await _workers(endpoint, 1, tmp_path)
    try:
        instance = map_spec("m.fanout", workers, params=json.dumps({"n": 5, "fail": [3]}))
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 5
        assert "1 of 6 task(s) failed" in report.result and "item 3 broke" in report.result
        assert _progress(report)["taskProgress"][-1]["name"] == "REDUCE_TASK"
    finally:
        await _stop(workers)


async def test_full_queue_blocks_map_without_losing_tasks(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec("m.fanout", workers, params=json.dumps({"n": 3000}), queue_size=100, page_size=10)
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 4, report.result
        assert json.loads(report.result)["tasks"] == 3001
    finally:
        await _stop(workers)


async def test_kill_stops_every_worker_and_frees_everything(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec("m.forever", workers, consumer_size=2)
        endpoint.scheduler.submit(workers[0].worker_id, instance)
        await eventually(lambda: forever_started.get(instance.instance_id, 0) >= 4, what="tasks started")
        endpoint.scheduler.kill(workers[0].worker_id, instance.instance_id, "enough")
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id))
        assert report.status == 5 and "enough" in report.result
        await _all_forgotten(workers, instance.instance_id)
    finally:
        await _stop(workers)


async def test_dead_worker_tasks_go_to_survivors(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 3, tmp_path)
    try:
        doomed = workers[2]
        instance = map_spec("m.slow", workers, params="90", consumer_size=2, page_size=3)
        endpoint.scheduler.submit(workers[0].worker_id, instance)
        await eventually(
            lambda: any(addr == doomed.address for (iid, addr) in concurrency if iid == instance.instance_id),
            what="a task on the doomed worker",
        )
        await doomed.shutdown(grace=0)
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id))
        assert report.status == 4, report.result
        assert report.result == "91"
    finally:
        await _stop(workers)


async def test_parallel_mode_caps_subtasks(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 1, tmp_path)
    try:
        instance = map_spec("m.fanout", workers, mode="parallel", params=json.dumps({"n": 301}))
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 5 and "at most 300 subtasks" in report.result
    finally:
        await _stop(workers)


async def test_batch_mode_runs_from_a_file_and_removes_it(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec("m.fanout", workers, mode="batch", params=json.dumps({"n": 500, "nested": True}))
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 4, report.result
        assert json.loads(report.result)["tasks"] == 1 + 500 + 500
        assert not task_file_path(tmp_path, instance.instance_id).exists()
    finally:
        await _stop(workers)


def _master_of(worker: Worker, instance_id: int) -> MapMaster | None:
    master = worker._instances.master_of(instance_id) if worker._instances is not None else None
    return master if isinstance(master, MapMaster) else None


async def test_queue_size_bounds_the_masters_pending_tasks(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec(
            "m.fanout",
            workers,
            params=json.dumps({"n": 700, "nested": True}),
            queue_size=10,
            page_size=3,
            consumer_size=2,
        )
        endpoint.scheduler.submit(workers[0].worker_id, instance)
        master = await eventually(lambda: _master_of(workers[0], instance.instance_id), what="the master")
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id), what="the end")
        assert report.status == 4, report.result
        assert json.loads(report.result)["tasks"] == 1 + 700 + 700
        ids = [task_id for task_id, _, _ in seen[instance.instance_id]]
        assert len(ids) == len(set(ids)) == 1 + 700 + 700  # every task ran exactly once
        assert 0 < master.queue_peak <= 10
    finally:
        await _stop(workers)


@pytest.mark.parametrize("count", [1, 2])
async def test_nested_maps_with_a_tiny_queue_and_one_consumer_finish(
    endpoint: Endpoint, tmp_path: Path, count: int
) -> None:
    # Every consumer slot may hold a task waiting in map for room in the full queue: they must not
    # keep the queue from draining.
    workers = await _workers(endpoint, count, tmp_path)
    try:
        params = {"n": 12, "fan": 3, "depth": 3}
        instance = map_spec(
            "m.tree", workers, params=json.dumps(params), queue_size=2, page_size=1, consumer_size=1
        )
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 4, report.result
        total = 1 + 12 + 12 * 3 + 12 * 9
        assert report.result == str(total)
        ids = [task_id for task_id, _, _ in seen[instance.instance_id]]
        assert len(ids) == len(set(ids)) == total
        await _all_forgotten(workers, instance.instance_id)
    finally:
        await _stop(workers)


async def test_subtasks_that_never_wait_leave_the_loop_to_the_rest_of_the_worker(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    # Run whole, a page of such subtasks would hold the loop for its length: statuses, dispatch and
    # peer calls wait meanwhile and the instance's other workers starve. Consumers take turns with the
    # rest of the loop instead, so a ticker coroutine keeps running between subtasks.
    workers = await _workers(endpoint, 1, tmp_path)
    ticker = asyncio.create_task(_tick())
    try:
        instance = map_spec("m.cpu", workers, params="200", page_size=100, consumer_size=8)
        report = await _run(endpoint, workers[0], instance)
        assert report.status == 4, report.result
        ticks = ticks_seen[instance.instance_id]
        assert len(ticks) == 200
        # Subtasks started in one turn of the loop: each burns at least 1 ms, and a turn gives
        # consumers about 2 ms, so a handful at most (a page of 100 without the turns).
        longest = max(ticks.count(tick) for tick in set(ticks))
        assert longest <= 10, longest
    finally:
        ticker.cancel()
        await _stop(workers)
