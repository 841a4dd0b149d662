"""Map-engine behaviours: reduce outcomes, ``reduce_on_failure``, results kept (or not) on the master,
subtask retries, ``dispatcher_size``, "no worker left" and progress read through the OpenAPI mid-run.

In process, as ``test_map_master``: real workers with real gRPC between them and the test scheduler of
``test_runtime``; the progress test runs a whole scheduler (``LocalScheduler``) to read GetJobInstance.
Subtasks that must stay unfinished wait on an ``asyncio.Event`` the test sets (``gates``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sx.processors import (
    REDUCE_TASK_NAME,
    ROOT_TASK_NAME,
    InstanceStatus,
    JobContext,
    MapProcessor,
    MapReduceProcessor,
    Registry,
    TaskStatus,
    processor,
)
from sx.protos.v1 import peer_pb2, scheduler_pb2
from sx.worker import Worker
from sx.worker._peer import PeerService
from sx.worker.map import MapMaster, task_file_path
from sx.worker.testing import LocalScheduler
from tests.worker.map.test_master import _master_of, _progress, _run, _stop, map_spec
from tests.worker.test_runtime import Endpoint, endpoint, eventually, settings, started

__all__ = ["endpoint"]

registry = Registry()
_lock = threading.Lock()
gates: dict[object, asyncio.Event] = {}
"""Gated subtasks of an instance wait on ``gates[key]`` (key: instance parameters, else instance id)."""
reduced: dict[int, tuple[dict[int, str], dict[int, TaskStatus]]] = {}
"""What reduce saw, by instance id (copies)."""


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a task (one attempt)."""

    task_id: int
    attempt: int
    started: float
    failed_at: float | None = None


runs: dict[int, list[Run]] = {}


def _record(ctx: JobContext, run: Run) -> None:
    with _lock:
        runs.setdefault(ctx.instance_id, []).append(run)


def _params(ctx: JobContext) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ctx.job_parameters or "{}")
    return loaded


# -- processors ------------------------------------------------------------------------------------


class _Reducing(MapReduceProcessor):
    """Root maps ``n`` items; items in ``fail`` raise; reduce records what it saw and then, per ``reduce``:
    ``value`` returns ``"reduced <tasks>"``, ``empty`` returns ``""``, ``raise`` raises."""

    async def process(self, ctx: JobContext) -> object:
        params = _params(ctx)
        if ctx.is_root_task:
            await ctx.map_async(list(range(params.get("n", 3))), "items")
            return "root"
        if ctx.task in params.get("fail", []):
            raise RuntimeError(f"item {ctx.task} broke")
        return f"r{ctx.task}"

    def reduce(self, ctx: JobContext) -> str:
        with _lock:
            reduced[ctx.instance_id] = (dict(ctx.task_results), dict(ctx.task_statuses))
        how = _params(ctx).get("reduce", "value")
        if how == "raise":
            raise ValueError("cannot reduce")
        if how == "empty":
            return ""
        return f"reduced {len(ctx.task_results)}"


@processor(name="b.reducer", registry=registry)
class Reducer(_Reducing):
    """``reduce_on_failure`` left at its default (True)."""


@processor(name="b.reducer_strict", registry=registry, reduce_on_failure=False)
class StrictReducer(_Reducing):
    pass


class _Gated(MapProcessor):
    """Root maps ``n`` items; the items listed in ``gated`` wait for the instance's gate."""

    async def process(self, ctx: JobContext) -> object:
        params = _params(ctx)
        if ctx.is_root_task:
            await ctx.map_async(list(range(params.get("n", 3))), "items")
            return "root"
        if ctx.task in params.get("gated", []):
            key: object = ctx.instance_parameters or ctx.instance_id
            await gates.setdefault(key, asyncio.Event()).wait()
        return f"r{ctx.task}"


@processor(name="b.gated", registry=registry)
class Gated(_Gated):
    """Map only: no reduce."""


@processor(name="b.gated_reduce", registry=registry)
class GatedReduce(_Gated, MapReduceProcessor):
    def reduce(self, ctx: JobContext) -> str:
        return "reduced"


PROGRESS_N = 10
PROGRESS_GATED = [6, 7, 8, 9]


@processor(
    name="b.progress",
    registry=registry,
    mode="grid",
    parameters=json.dumps({"n": PROGRESS_N, "gated": PROGRESS_GATED}),
    consumer_size=10,
    page_size=2,
)
class Progressing(_Gated):
    """For the scheduler: the job's own map options and parameters."""


@processor(name="b.retry", registry=registry)
class Retry(MapProcessor):
    """Root maps ``n`` items (or raises when ``root_fails``); an item fails its first ``fail_first``
    attempts. Every attempt is recorded with its start and failure times."""

    async def process(self, ctx: JobContext) -> object:
        params = _params(ctx)
        started_at = time.monotonic()
        if ctx.is_root_task:
            if params.get("root_fails"):
                _record(ctx, Run(ctx.task_id, ctx.task_attempt, started_at, time.monotonic()))
                raise RuntimeError("root broke")
            _record(ctx, Run(ctx.task_id, ctx.task_attempt, started_at))
            await ctx.map_async(list(range(params.get("n", 2))), "items")
            return None
        if ctx.task_attempt < params.get("fail_first", 0):
            _record(ctx, Run(ctx.task_id, ctx.task_attempt, started_at, time.monotonic()))
            raise RuntimeError(f"attempt {ctx.task_attempt} failed")
        _record(ctx, Run(ctx.task_id, ctx.task_attempt, started_at))
        return None


# -- helpers ---------------------------------------------------------------------------------------


async def _workers(ep: Endpoint, count: int, tmp_path: Path) -> list[Worker]:
    workers = []
    for _ in range(count):
        worker = Worker(settings(ep, data_dir=tmp_path), registry=registry)
        worker.alive_interval = 0.3
        worker.progress_interval = 0.2
        workers.append(await started(ep, worker))
    return workers


def _names(report: scheduler_pb2.InstanceReport) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in _progress(report)["taskProgress"]}


def _destroyed_on(worker: Worker, instance_id: int) -> bool:
    """True when the worker holds no tasks of the instance or was told to drop them (DestroyInstance)."""
    tasks = worker._tasks
    assert tasks is not None
    group = tasks._groups.get(instance_id)
    return group is None or group.destroyed


def _runs_by_task(instance_id: int) -> dict[int, list[Run]]:
    by_task: dict[int, list[Run]] = {}
    for run in runs.get(instance_id, []):
        by_task.setdefault(run.task_id, []).append(run)
    for task_runs in by_task.values():
        task_runs.sort(key=lambda r: r.attempt)
    return by_task


# -- 1. reduce outcome -----------------------------------------------------------------------------


async def test_a_reduce_that_raises_fails_the_instance(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 1, tmp_path)
    try:
        instance = map_spec("b.reducer", workers, params=json.dumps({"n": 3, "reduce": "raise"}))
        report = await _run(endpoint, workers[0], instance)
        assert report.status == InstanceStatus.FAILED, report.result
        assert report.result == "reduce failed: ValueError: cannot reduce"
        names = _names(report)
        assert names["items"]["success"] == 3 and names["items"]["failed"] == 0
        assert names[REDUCE_TASK_NAME]["failed"] == 1 and names[REDUCE_TASK_NAME]["success"] == 0
        assert len(reduced[instance.instance_id][0]) == 4  # it ran, with every result
        # Its workers were told to drop the instance before the end was reported.
        assert _destroyed_on(workers[0], instance.instance_id)
    finally:
        await _stop(workers)


@pytest.mark.parametrize(
    ("how", "expected"),
    # The default text counts REDUCE_TASK as a task: root + 3 items + reduce.
    [("value", "reduced 4"), ("empty", "5 task(s) succeeded")],
)
async def test_a_reduce_result_replaces_the_instance_result(
    endpoint: Endpoint, tmp_path: Path, how: str, expected: str
) -> None:
    # A non-empty reduce result is the instance result; an empty one leaves the default text.
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec("b.reducer", workers, params=json.dumps({"n": 3, "reduce": how}))
        report = await _run(endpoint, workers[0], instance)
        assert report.status == InstanceStatus.SUCCESS, report.result
        assert report.result == expected
        assert _names(report)[REDUCE_TASK_NAME]["success"] == 1
    finally:
        await _stop(workers)


# -- 2. reduce_on_failure --------------------------------------------------------------------------


async def test_reduce_on_failure_false_skips_reduce_after_a_failed_subtask(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        failing = map_spec("b.reducer_strict", workers, params=json.dumps({"n": 3, "fail": [1]}))
        report = await _run(endpoint, workers[0], failing)
        assert report.status == InstanceStatus.FAILED
        # Items 0, 1, 2 are tasks 1, 2, 3 (ids follow the map order).
        assert report.result == "1 of 4 task(s) failed; first: task 2 (items): RuntimeError: item 1 broke"
        assert failing.instance_id not in reduced  # reduce did not run
        assert REDUCE_TASK_NAME not in _names(report)
        # The same processor reduces when nothing failed: the skip above is the failure's doing.
        clean = map_spec("b.reducer_strict", workers, params=json.dumps({"n": 3}))
        report = await _run(endpoint, workers[0], clean)
        assert report.status == InstanceStatus.SUCCESS and report.result == "reduced 4"
        assert clean.instance_id in reduced
    finally:
        await _stop(workers)


async def test_reduce_on_failure_true_sees_the_failed_statuses(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec("b.reducer", workers, params=json.dumps({"n": 3, "fail": [1]}))
        report = await _run(endpoint, workers[0], instance)
        results, statuses = reduced[instance.instance_id]
        assert statuses == {
            0: TaskStatus.SUCCESS,
            1: TaskStatus.SUCCESS,
            2: TaskStatus.FAILED,
            3: TaskStatus.SUCCESS,
        }
        assert results == {0: "root", 1: "r0", 2: "RuntimeError: item 1 broke", 3: "r2"}
        # The instance stays failed whatever reduce returned.
        assert report.status == InstanceStatus.FAILED
        assert report.result == "1 of 4 task(s) failed; first: task 2 (items): RuntimeError: item 1 broke"
        assert _names(report)[REDUCE_TASK_NAME]["success"] == 1
    finally:
        await _stop(workers)


async def test_a_reduce_failing_after_failed_subtasks_is_named_too(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    workers = await _workers(endpoint, 1, tmp_path)
    try:
        params = json.dumps({"n": 3, "fail": [1], "reduce": "raise"})
        instance = map_spec("b.reducer", workers, params=params)
        report = await _run(endpoint, workers[0], instance)
        assert report.status == InstanceStatus.FAILED
        assert report.result == (
            "1 of 4 task(s) failed; first: task 2 (items): RuntimeError: item 1 broke; "
            "reduce failed: ValueError: cannot reduce"
        )
    finally:
        await _stop(workers)


# -- 3. results kept on the master only for reduce -------------------------------------------------


def _kept_in_file(path: Path) -> tuple[int, int]:
    """(finished tasks, tasks with a stored result) in a batch task file."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (finished,) = db.execute("SELECT COUNT(*) FROM tasks WHERE status = 4").fetchone()
        (kept,) = db.execute("SELECT COUNT(*) FROM tasks WHERE result IS NOT NULL").fetchone()
    return int(finished), int(kept)


@pytest.mark.parametrize("mode", ["grid", "batch"])
@pytest.mark.parametrize(("name", "keeps"), [("b.gated", False), ("b.gated_reduce", True)])
async def test_only_jobs_that_reduce_keep_results_on_the_master(
    endpoint: Endpoint, tmp_path: Path, mode: str, name: str, keeps: bool
) -> None:
    workers = await _workers(endpoint, 1, tmp_path)
    n = 6
    try:
        instance = map_spec(name, workers, mode=mode, params=json.dumps({"n": n, "gated": [n - 1]}))
        gate = gates[instance.instance_id] = asyncio.Event()
        endpoint.scheduler.submit(workers[0].worker_id, instance)
        master = await eventually(lambda: _master_of(workers[0], instance.instance_id), what="the master")
        # The root and every item but the gated last one finished; the instance is still running.
        await eventually(lambda: master.progress.success == n, what="all but one task finished")
        assert master.store.keep_results is keeps
        if mode == "grid":
            results, statuses = master.store.results()
            if keeps:
                assert results == {0: "root", **{k + 1: f"r{k}" for k in range(n - 1)}}
                assert set(statuses.values()) == {TaskStatus.SUCCESS} and len(statuses) == n
            else:
                assert results == {} and statuses == {}
        else:
            finished, kept = _kept_in_file(task_file_path(tmp_path, instance.instance_id))
            assert finished == n
            assert kept == (n if keeps else 0)
        gate.set()
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id), what="the end")
        assert report.status == InstanceStatus.SUCCESS, report.result
        assert report.result == ("reduced" if keeps else f"{n + 1} task(s) succeeded")
    finally:
        await _stop(workers)


# -- 4. subtask retries ----------------------------------------------------------------------------


async def test_a_failed_subtask_is_retried_after_the_attempt_interval(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    workers = await _workers(endpoint, 1, tmp_path)
    try:
        instance = map_spec(
            "b.retry",
            workers,
            params=json.dumps({"n": 2, "fail_first": 1}),
            task_max_attempt=3,
            task_attempt_interval_s=1,
        )
        report = await _run(endpoint, workers[0], instance)
        assert report.status == InstanceStatus.SUCCESS, report.result
        by_task = _runs_by_task(instance.instance_id)
        assert sorted(by_task) == [0, 1, 2]
        assert [r.attempt for r in by_task[0]] == [0]
        for task_id in (1, 2):
            first, retry = by_task[task_id]  # failed once, then succeeded: no further attempt
            assert (first.attempt, retry.attempt) == (0, 1)
            assert first.failed_at is not None and retry.failed_at is None
            # A lower bound only (1 ms for the clock's resolution): the retry waited the interval.
            assert retry.started - first.failed_at >= 1.0 - 1e-3, (task_id, retry.started - first.failed_at)
        assert _names(report)["items"]["success"] == 2
    finally:
        await _stop(workers)


@pytest.mark.parametrize("max_attempt", [0, 2])
async def test_task_max_attempt_bounds_the_runs_of_a_failing_subtask(
    endpoint: Endpoint, tmp_path: Path, max_attempt: int
) -> None:
    workers = await _workers(endpoint, 2, tmp_path)
    try:
        instance = map_spec(
            "b.retry",
            workers,
            params=json.dumps({"n": 3, "fail_first": 99}),
            task_max_attempt=max_attempt,
        )
        report = await _run(endpoint, workers[0], instance)
        assert report.status == InstanceStatus.FAILED
        by_task = _runs_by_task(instance.instance_id)
        assert sorted(by_task) == [0, 1, 2, 3]
        for task_id in (1, 2, 3):
            assert [r.attempt for r in by_task[task_id]] == list(range(max_attempt + 1)), task_id
        last = f"RuntimeError: attempt {max_attempt} failed"
        pattern = rf"3 of 4 task\(s\) failed; first: task [123] \(items\): {last}"
        assert re.fullmatch(pattern, report.result), report.result
        names = _names(report)
        assert names["items"]["failed"] == 3 and names["items"]["total"] == 3  # once per task, not attempt
    finally:
        await _stop(workers)


async def test_the_root_task_is_never_retried(endpoint: Endpoint, tmp_path: Path) -> None:
    workers = await _workers(endpoint, 1, tmp_path)
    try:
        instance = map_spec("b.retry", workers, params=json.dumps({"root_fails": True}), task_max_attempt=2)
        report = await _run(endpoint, workers[0], instance)
        assert report.status == InstanceStatus.FAILED
        assert report.result == "root task failed: RuntimeError: root broke"
        assert [(r.task_id, r.attempt) for r in runs[instance.instance_id]] == [(0, 0)]
    finally:
        await _stop(workers)


# -- 5. dispatcher_size ----------------------------------------------------------------------------


@dataclass(eq=False)
class _StartProbe:
    gate: asyncio.Event
    now: int = 0
    peak: int = 0


def _dispatchers(instance_id: int) -> int:
    prefix = f"sx-map-dispatch-{instance_id}-"
    return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done())


@pytest.mark.parametrize(("dispatcher_size", "expected"), [(1, 1), (3, 3), (0, 5)])
async def test_dispatcher_size_is_the_number_of_concurrent_start_tasks_calls(
    endpoint: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dispatcher_size: int, expected: int
) -> None:
    # Each dispatcher sends one page at a time and waits for its StartTasks reply. With StartTasks held
    # (for every page but the root's) and room for far more pages on the worker (page 1, window 12),
    # exactly dispatcher_size calls are in flight at once; 0 means the default, 5.
    probes: dict[int, _StartProbe] = {}
    original = PeerService.StartTasks

    async def held(
        self: PeerService, request: peer_pb2.StartTasksRequest, context: Any
    ) -> peer_pb2.StartTasksReply:
        probe = probes.get(request.instance.instance_id)
        if probe is None or any(t.task_id == 0 for t in request.tasks):
            return await original(self, request, context)
        probe.now += 1
        probe.peak = max(probe.peak, probe.now)
        try:
            await probe.gate.wait()
        finally:
            probe.now -= 1
        return await original(self, request, context)

    monkeypatch.setattr(PeerService, "StartTasks", held)
    workers = await _workers(endpoint, 1, tmp_path)
    try:
        n = 30
        instance = map_spec(
            "b.gated",
            workers,
            params=json.dumps({"n": n}),
            page_size=1,
            consumer_size=10,
            dispatcher_size=dispatcher_size,
        )
        probe = probes[instance.instance_id] = _StartProbe(gate=asyncio.Event())
        endpoint.scheduler.submit(workers[0].worker_id, instance)
        master: MapMaster = await eventually(
            lambda: _master_of(workers[0], instance.instance_id), what="the master"
        )
        assert master.dispatcher_size == expected
        assert _dispatchers(instance.instance_id) == expected
        await eventually(lambda: probe.now == expected, what=f"{expected} StartTasks calls in flight")
        await asyncio.sleep(0.3)  # room for a call too many to show up
        assert probe.peak == probe.now == expected
        assert master.store.pending == n - expected  # what waits is not for want of work
        probe.gate.set()
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id), what="the end")
        assert report.status == InstanceStatus.SUCCESS, report.result
        assert report.result == f"{n + 1} task(s) succeeded"
        assert probe.peak == expected
        assert _dispatchers(instance.instance_id) == 0  # the loops end with the instance
    finally:
        await _stop(workers)


# -- 6. no worker left -----------------------------------------------------------------------------


@dataclass(eq=False)
class _NoWorkerLeft:
    master_worker: Worker
    other: Worker
    instance_id: int
    report: scheduler_pb2.InstanceReport
    shutdown: asyncio.Task[None]


@contextlib.asynccontextmanager
async def _no_worker_left(ep: Endpoint, tmp_path: Path, n: int) -> AsyncIterator[_NoWorkerLeft]:
    """Run a grid instance until no worker is left for it; yields once its final report arrived.

    The master always counts itself as a worker of the instance, so "no worker left" needs the master
    to refuse tasks too: the other worker is gone (its StartTasks cannot connect) and the master's
    worker shuts down gracefully (it refuses new tasks but lets the running instance go on).
    """
    master_worker, other = await _workers(ep, 2, tmp_path)
    shutdown: asyncio.Task[None] | None = None
    try:
        await other.shutdown(grace=0)
        instance = map_spec(
            "b.gated",
            [master_worker, other],
            params=json.dumps({"n": n, "gated": list(range(n))}),
            page_size=1,
            consumer_size=2,
        )
        gate = gates[instance.instance_id] = asyncio.Event()
        ep.scheduler.submit(master_worker.worker_id, instance)
        master: MapMaster = await eventually(
            lambda: _master_of(master_worker, instance.instance_id), what="the master"
        )
        targets = master.dispatch.targets
        await eventually(lambda: not targets[other.address].alive, what="the other worker dropped")
        assert targets[master_worker.address].alive
        shutdown = asyncio.create_task(master_worker.shutdown(grace=20))
        await eventually(lambda: master_worker._stopping, what="the master's worker shutting down")
        gate.set()  # its running tasks finish; the next page it is sent is refused
        report = await eventually(lambda: ep.scheduler.final_of(instance.instance_id), what="the end")
        yield _NoWorkerLeft(master_worker, other, instance.instance_id, report, shutdown)
        await asyncio.wait_for(shutdown, 20)
    finally:
        if shutdown is not None and not shutdown.done():
            await shutdown
        await _stop([master_worker, other])


async def test_no_worker_left_fails_the_instance_naming_every_worker(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    n = 8
    async with _no_worker_left(endpoint, tmp_path, n) as run:
        report, master_worker, other = run.report, run.master_worker, run.other
        assert report.status == InstanceStatus.FAILED
        assert report.result.startswith("no worker left to run the tasks: "), report.result
        assert f"{other.worker_id} ({other.address}): could not start tasks" in report.result
        assert (
            f"{master_worker.worker_id} ({master_worker.address}): refused tasks: worker is shutting down"
            in report.result
        )
        items = _names(report)["items"]
        assert items["total"] == n and 0 < items["success"] < n and items["failed"] == 0


async def test_no_worker_left_still_destroys_the_instance_on_the_masters_worker(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    async with _no_worker_left(endpoint, tmp_path, 8) as run:
        assert run.report.status == InstanceStatus.FAILED
        # The master destroys the instance on its workers before it reports the end (as it does when
        # nothing was dropped: see test_a_reduce_that_raises_fails_the_instance).
        assert _destroyed_on(run.master_worker, run.instance_id), "the instance is still held there"


# -- 7. progress visible through the OpenAPI while the instance runs -------------------------------


async def test_progress_is_visible_through_get_job_instance_while_running(tmp_path: Path) -> None:
    token = f"progress-{time.monotonic_ns()}"
    gate = gates[token] = asyncio.Event()
    async with LocalScheduler(tmp_path, registry=registry) as sched:
        assert sched.worker is not None
        sched.worker.progress_interval = 0.1
        job_id = await sched.job_id("b.progress")
        instance_id = await sched.start_job("b.progress", token)
        done = PROGRESS_N - len(PROGRESS_GATED)

        async def finished_items() -> dict[str, Any] | None:
            detail = await sched.client.get_instance(job_id, instance_id)
            if not detail.progress:
                return None
            names = {t["name"]: t for t in json.loads(detail.progress)["taskProgress"]}
            items = names.get("items")
            if items is None or items["success"] < done:
                return None
            return {"status": detail.status, "items": items, "root": names[ROOT_TASK_NAME]}

        deadline = time.monotonic() + 20
        seen = await finished_items()
        while seen is None:
            assert time.monotonic() < deadline, "no progress with finished items while running"
            await asyncio.sleep(0.05)
            seen = await finished_items()
        # Read while the gated items still wait: the instance runs, and some of its tasks count finished.
        assert not gate.is_set()
        assert seen["status"] is InstanceStatus.RUNNING
        assert seen["items"]["total"] == PROGRESS_N
        assert seen["items"]["success"] == done and seen["items"]["failed"] == 0
        assert seen["root"]["success"] == 1
        gate.set()
        outcome = await sched.wait_instance(job_id, instance_id, timeout=20)
        assert outcome.ok, outcome.result
        final = {t["name"]: t for t in json.loads(outcome.progress)["taskProgress"]}
        assert final["items"]["success"] == PROGRESS_N
