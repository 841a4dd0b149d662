"""Nested maps never deadlock: any depth, fan-out and ``queueSize`` >= 1, blocking or async hooks.

A property test over small map trees, run through the real engine as ``test_master`` does: real
workers (real gRPC between them) and the test scheduler of ``test_runtime``. The workers are started
once for the module with 1, 2 and 3 hook threads (``concurrency``); each example runs one instance on
one or two of them. A stall fails the example after a generous deadline, naming the master's progress.
Blocking hooks on a worker whose threads may not all wait send their maps on in the background: a
kill stops those too.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from sx.processors import JobContext, MapReduceProcessor, Registry, TaskStatus, processor
from sx.worker import Worker
from tests.worker.map.test_master import _all_forgotten, _master_of, map_spec
from tests.worker.test_runtime import Endpoint, eventually, started
from tests.worker.test_runtime import settings as worker_settings

registry = Registry()
_lock = threading.Lock()
ran: dict[int, set[str]] = {}
"""The tasks that ran, by instance id: each one's path in the tree ("" is the root)."""
reduced: dict[int, dict[int, tuple[TaskStatus, str]]] = {}
"""What reduce saw, by instance id: status and result by task id."""

STALL = 30.0
"""Seconds an instance of at most 200 tasks gets before it counts as stalled (it needs well under one)."""
WORKERS = ((1, None), (2, None), (3, None), (3, 1))
"""The module's workers as (``concurrency``, ``thread_pool_size``): the last runs blocking hooks on one
thread under a higher concurrency."""


def _children(ctx: JobContext) -> tuple[list[str], str, int]:
    """The paths this task maps, their task name and in how many ``ctx.map`` calls."""
    params = json.loads(ctx.job_parameters)
    path: str = "" if ctx.is_root_task else ctx.task
    depth = 0 if not path else path.count("/") + 1
    fans: list[int] = params["fans"]
    if depth == len(fans):
        return [], "", 0
    return (
        [f"{path}/{i}" if path else str(i) for i in range(fans[depth])],
        f"depth{depth + 1}",
        params["calls"],
    )


def _ran(ctx: JobContext, mapped: bool) -> str:
    """Note the run; with ``flaky``, a subtask that mapped fails its first attempt (it runs again)."""
    path = "" if ctx.is_root_task else str(ctx.task)
    with _lock:
        ran.setdefault(ctx.instance_id, set()).add(path)
    if mapped and path and ctx.task_attempt == 0 and json.loads(ctx.job_parameters)["flaky"]:
        raise RuntimeError(f"{path}: the first attempt fails after its maps")
    return path or "root"


class _Tree(MapReduceProcessor):
    """A task maps ``fans[depth]`` children over ``calls`` calls; reduce keeps what it saw."""

    def reduce(self, ctx: JobContext) -> str:
        seen = {task_id: (ctx.task_statuses[task_id], result) for task_id, result in ctx.task_results.items()}
        with _lock:
            reduced[ctx.instance_id] = seen
        return str(len(seen))


@processor(name="n.tree_sync", registry=registry)
class SyncTree(_Tree):
    """Blocking hooks: ``ctx.map`` from a thread of the worker's pool."""

    def process(self, ctx: JobContext) -> str:
        paths, name, calls = _children(ctx)
        for index in range(calls):
            if paths[index::calls]:
                ctx.map(paths[index::calls], name)
        return _ran(ctx, bool(paths))


@processor(name="n.tree_async", registry=registry)
class AsyncTree(_Tree):
    """Async hooks: ``await ctx.map_async`` on the worker's loop."""

    async def process(self, ctx: JobContext) -> str:
        paths, name, calls = _children(ctx)
        for index in range(calls):
            if paths[index::calls]:
                await ctx.map_async(paths[index::calls], name)
        return _ran(ctx, bool(paths))


gates: dict[int, threading.Event] = {}
"""Leaves of ``n.gated_sync`` wait on their instance's event."""


@processor(name="n.gated_sync", registry=registry)
class GatedSync(MapReduceProcessor):
    """Blocking hooks: the root maps ``n`` leaves; each leaf waits for the instance's gate."""

    def process(self, ctx: JobContext) -> None:
        if ctx.is_root_task:
            ctx.map(list(range(int(ctx.job_parameters))), "leaf")
        else:
            gates[ctx.instance_id].wait()

    def reduce(self, ctx: JobContext) -> str:
        return "reduced"


@st.composite
def trees(draw: st.DrawFn, *, most: int = 200) -> list[int]:
    """Fan-outs per level, 1 to 4 levels, at most ``most`` tasks in all."""
    fans: list[int] = []
    width = 1
    for _ in range(draw(st.integers(1, 4))):
        fan = draw(st.integers(1, max(1, min(6, most // (4 * width)))))
        fans.append(fan)
        width *= fan
    return fans


def _paths(fans: list[int]) -> set[str]:
    level = [""]
    every = {""}
    for fan in fans:
        level = [f"{p}/{i}" if p else str(i) for p in level for i in range(fan)]
        every.update(level)
    return every


@dataclass(frozen=True, slots=True)
class Pool:
    endpoint: Endpoint
    workers: list[Worker]
    """One per entry of ``WORKERS``."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pool]:
    """Workers on one test scheduler, shared by the examples (each runs its own instance)."""
    endpoint = Endpoint()
    await endpoint.start()
    data = tmp_path_factory.mktemp("nested")
    workers: list[Worker] = []
    try:
        for concurrency, pool_size in WORKERS:
            options = worker_settings(
                endpoint, data_dir=data, concurrency=concurrency, thread_pool_size=pool_size
            )
            worker = Worker(options, registry=registry)
            worker.alive_interval = 0.5
            workers.append(await started(endpoint, worker))
        yield Pool(endpoint, workers)
    finally:
        await asyncio.gather(*(w.shutdown(grace=1.0) for w in workers))
        await endpoint.stop()


@pytest.mark.asyncio(loop_scope="module")
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    # A stalled example costs the whole STALL deadline: report it as found rather than shrink it.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fans=trees(),
    calls=st.integers(1, 3),
    blocking=st.booleans(),
    flaky=st.booleans(),
    chosen=st.sampled_from([(0,), (1,), (2,), (3,), (0, 1), (1, 2), (2, 0), (3, 1)]),
    queue_size=st.integers(1, 8),
    page_size=st.integers(1, 3),
    consumer_size=st.integers(1, 3),
    dispatcher_size=st.integers(1, 2),
)
# The shape of examples/map_reduce.py in small: ranges that each map squares through a full queue.
@example(
    fans=[40, 5],
    calls=1,
    blocking=True,
    flaky=False,
    chosen=(1,),
    queue_size=4,
    page_size=2,
    consumer_size=2,
    dispatcher_size=1,
)
# One hook thread under concurrency 3: it must never be the one left waiting for room.
@example(
    fans=[40, 5],
    calls=1,
    blocking=True,
    flaky=False,
    chosen=(3,),
    queue_size=4,
    page_size=2,
    consumer_size=2,
    dispatcher_size=1,
)
@example(
    fans=[3, 3, 3, 2],
    calls=2,
    blocking=True,
    flaky=True,
    chosen=(0,),
    queue_size=1,
    page_size=1,
    consumer_size=1,
    dispatcher_size=1,
)
async def test_nested_maps_finish_through_any_queue(
    pool: Pool,
    fans: list[int],
    calls: int,
    blocking: bool,
    flaky: bool,
    chosen: tuple[int, ...],
    queue_size: int,
    page_size: int,
    consumer_size: int,
    dispatcher_size: int,
) -> None:
    endpoint = pool.endpoint
    group = [pool.workers[i] for i in chosen]
    master = group[0]
    instance = map_spec(
        "n.tree_sync" if blocking else "n.tree_async",
        group,
        params=json.dumps({"fans": fans, "calls": calls, "flaky": flaky}),
        task_max_attempt=1 if flaky else 0,
        queue_size=queue_size,
        page_size=page_size,
        consumer_size=consumer_size,
        dispatcher_size=dispatcher_size,
    )
    instance_id = instance.instance_id
    endpoint.scheduler.submit(master.worker_id, instance)
    try:
        report = await eventually(lambda: endpoint.scheduler.final_of(instance_id), within=STALL, what="")
    except AssertionError:
        running = _master_of(master, instance_id)
        progress = running.progress.to_json() if running is not None else "(no master)"
        endpoint.scheduler.kill(master.worker_id, instance_id, "stalled")  # frees the workers for the next
        raise AssertionError(f"instance {instance_id} stalled for {STALL:g}s; progress: {progress}") from None

    expected = _paths(fans)
    assert report.status == 4, report.result
    assert ran.pop(instance_id) == expected  # every task ran (at least once)
    seen = reduced.pop(instance_id)
    assert report.result == str(len(expected))
    assert all(status is TaskStatus.SUCCESS for status, _ in seen.values())
    assert sorted(result for _, result in seen.values()) == sorted(p or "root" for p in expected)


def _backlogs(instance_id: int) -> list[asyncio.Task[object]]:
    prefix = f"sx-map-backlog-{instance_id}-"
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_kill_stops_the_maps_still_sent_in_the_background(pool: Pool) -> None:
    # One hook thread, so none may wait in ctx.map: the root's map goes on in the background, and
    # stays there while the leaves hold the queue full.
    endpoint, worker = pool.endpoint, pool.workers[0]
    instance = map_spec("n.gated_sync", [worker], params="30", queue_size=1, page_size=1, consumer_size=1)
    gates[instance.instance_id] = gate = threading.Event()
    try:
        endpoint.scheduler.submit(worker.worker_id, instance)
        await eventually(lambda: _backlogs(instance.instance_id), what="the root's maps in the background")
        endpoint.scheduler.kill(worker.worker_id, instance.instance_id, "enough")
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id), what="the end")
        assert report.status == 5 and "enough" in report.result
        await eventually(lambda: not _backlogs(instance.instance_id), what="the background maps stopped")
    finally:
        gate.set()  # the leaf running in the thread returns (its report is dropped)
    await _all_forgotten([worker], instance.instance_id)
