"""Every hook kind, sync and async, through the invoker and the worker-side contract."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from sx.processors import (
    BroadcastProcessor,
    InstanceStatus,
    JobContext,
    MapProcessor,
    MapReduceProcessor,
    Processor,
    ProcessResult,
    Registry,
    TaskStatus,
    definition_of,
    invoke,
    processor,
    use_registry,
)
from sx.processors.testing import run_processor

DEADLINE = 60.0
"""Seconds to wait for a hook thread: generous, for a busy machine (the wait ends as soon as it holds)."""


@pytest.fixture
def registry() -> Iterator[Registry]:
    with use_registry() as fresh:
        yield fresh


@pytest.fixture
async def executor() -> AsyncIterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


@pytest.mark.parametrize("use_async", [False, True])
async def test_processor_process_and_kill(
    registry: Registry, use_async: bool, executor: concurrent.futures.Executor
) -> None:
    calls: list[str] = []

    if use_async:

        class Job(Processor):
            async def process(self, ctx: JobContext) -> str:
                calls.append("process")
                return f"ran {ctx.job_parameters}"

            async def kill(self, ctx: JobContext) -> None:
                calls.append("kill")

    else:

        class Job(Processor):  # type: ignore[no-redef]
            def process(self, ctx: JobContext) -> str:
                calls.append("process")
                return f"ran {ctx.job_parameters}"

            def kill(self, ctx: JobContext) -> None:
                calls.append("kill")

    processor(name="job")(Job)
    definition = definition_of(Job)
    assert definition.hooks == {"process": use_async, "kill": use_async}
    result = await run_processor(Job, job_parameters="p")
    assert result == ProcessResult.success("ran p")
    instance = definition.create()
    killed = await invoke(instance.kill, JobContext(), executor=executor)
    assert killed.ok
    assert calls == ["process", "kill"]


@pytest.mark.parametrize("use_async", [False, True])
async def test_broadcast_runs_pre_process_every_shard_and_post_process(
    registry: Registry, use_async: bool
) -> None:
    seen: list[tuple[str, int]] = []

    class Sync(BroadcastProcessor):
        def pre_process(self, ctx: JobContext) -> None:
            seen.append(("pre", ctx.sharding_num))

        def process(self, ctx: JobContext) -> str:
            seen.append(("process", ctx.sharding_id))
            return f"shard {ctx.sharding_id}"

        def post_process(self, ctx: JobContext) -> str:
            seen.append(("post", len(ctx.task_results)))
            assert ctx.task_statuses == {0: TaskStatus.SUCCESS, 1: TaskStatus.SUCCESS, 2: TaskStatus.SUCCESS}
            return ",".join(ctx.task_results[i] for i in sorted(ctx.task_results))

    class Async(BroadcastProcessor):
        async def pre_process(self, ctx: JobContext) -> None:
            seen.append(("pre", ctx.sharding_num))

        async def process(self, ctx: JobContext) -> str:
            seen.append(("process", ctx.sharding_id))
            return f"shard {ctx.sharding_id}"

        async def post_process(self, ctx: JobContext) -> str:
            seen.append(("post", len(ctx.task_results)))
            return ",".join(ctx.task_results[i] for i in sorted(ctx.task_results))

    cls = processor(name="b")(Async if use_async else Sync)
    result = await run_processor(cls, sharding_num=3)
    assert result == ProcessResult.success("shard 0,shard 1,shard 2")
    assert seen == [("pre", 3), ("process", 0), ("process", 1), ("process", 2), ("post", 3)]


async def test_broadcast_pre_process_failure_stops_the_run(registry: Registry) -> None:
    ran: list[int] = []

    @processor(name="b")
    class Job(BroadcastProcessor):
        def pre_process(self, ctx: JobContext) -> None:
            raise RuntimeError("no disk")

        def process(self, ctx: JobContext) -> None:
            ran.append(ctx.sharding_id)

    result = await run_processor(Job, sharding_num=2)
    assert result == ProcessResult.failure("pre_process failed: RuntimeError: no disk")
    assert ran == []


async def test_broadcast_post_process_sees_a_failed_worker(registry: Registry) -> None:
    @processor(name="b")
    class Job(BroadcastProcessor):
        def process(self, ctx: JobContext) -> ProcessResult:
            return ProcessResult.failure("bad") if ctx.sharding_id == 1 else ProcessResult.success()

        def post_process(self, ctx: JobContext) -> None:
            assert ctx.task_statuses[1] is TaskStatus.FAILED

    result = await run_processor(Job, sharding_num=2)
    assert result.status is InstanceStatus.FAILED and result.result == "bad"


class _Tree(MapReduceProcessor):
    """Root maps two groups, each group maps its numbers; reduce adds the leaves."""

    def process(self, ctx: JobContext) -> object:
        if ctx.is_root_task:
            ctx.map([[1, 2], [3, 4, 5]], "Group")
            return None
        if ctx.task_name == "Group":
            ctx.map(ctx.task, "Leaf")
            return None
        if ctx.task == 4:
            raise ValueError("four is bad")
        return ctx.task * 10

    def reduce(self, ctx: JobContext) -> str:
        total = sum(int(r) for r in ctx.task_results.values() if r.isdigit())
        return f"total={total} failed={sum(s is TaskStatus.FAILED for s in ctx.task_statuses.values())}"


class _AsyncTree(MapReduceProcessor):
    async def process(self, ctx: JobContext) -> object:
        if ctx.is_root_task:
            await ctx.map_async([[1, 2], [3]], "Group")
            return None
        if ctx.task_name == "Group":
            await ctx.map_async(ctx.task, "Leaf")
            return None
        return ctx.task * 10

    async def reduce(self, ctx: JobContext) -> str:
        assert sorted(ctx.task_results) == list(range(6))
        return str(sum(int(r) for r in ctx.task_results.values() if r))


async def test_map_reduce_async_tree(registry: Registry) -> None:
    cls: type[Processor] = processor(name="tree")(type("T", (_AsyncTree,), {}))
    assert await run_processor(cls) == ProcessResult.success("60")


async def test_map_reduce_runs_reduce_on_failure_by_default(registry: Registry) -> None:
    cls: type[Processor] = processor(name="tree")(type("T", (_Tree,), {}))
    result = await run_processor(cls)
    # The instance stays FAILED; the reduce result replaces the text.
    assert result == ProcessResult.failure("total=110 failed=1")


async def test_map_reduce_skips_reduce_on_failure_when_told(registry: Registry) -> None:
    cls: type[Processor] = processor(name="tree", reduce_on_failure=False)(type("T", (_Tree,), {}))
    result = await run_processor(cls)
    assert result == ProcessResult.failure("ValueError: four is bad")


async def test_failed_reduce_fails_the_instance(registry: Registry) -> None:
    @processor(name="r")
    class Job(MapReduceProcessor):
        def process(self, ctx: JobContext) -> None:
            return None

        def reduce(self, ctx: JobContext) -> ProcessResult:
            return ProcessResult.failure("totals do not match")

    assert await run_processor(Job) == ProcessResult.failure("totals do not match")


async def test_map_processor_without_reduce(registry: Registry) -> None:
    @processor(name="m", mode="parallel")
    class Job(MapProcessor):
        def process(self, ctx: JobContext) -> str:
            if ctx.is_root_task:
                ctx.map(["a", "b"], "Letter")
                return "root done"
            return str(ctx.task).upper()

    assert await run_processor(Job) == ProcessResult.success("root done")
    assert await run_processor(Job, task="x", task_name="Letter") == ProcessResult.success("X")


async def test_sync_hook_is_cancelled_cooperatively(executor: concurrent.futures.Executor) -> None:
    started = threading.Event()

    def hook(ctx: JobContext) -> str:
        started.set()
        while True:
            ctx.check_cancelled()
            threading.Event().wait(0.01)

    ctx = JobContext()
    running = asyncio.create_task(invoke(hook, ctx, executor=executor))
    assert await asyncio.to_thread(started.wait, DEADLINE)
    ctx.cancel()
    assert await running == ProcessResult.failure("killed")


async def test_async_hook_cancelled_by_the_worker(executor: concurrent.futures.Executor) -> None:
    started = asyncio.Event()

    async def hook(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(100)

    ctx = JobContext()
    running = asyncio.create_task(invoke(hook, ctx, executor=executor))
    await started.wait()
    running.cancel()
    assert await running == ProcessResult.failure("killed")
    assert ctx.is_cancelled


async def test_sync_hook_cancelled_task_marks_the_context(executor: concurrent.futures.Executor) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()

    def hook(ctx: JobContext) -> None:
        started.set()
        while not ctx.is_cancelled:
            threading.Event().wait(0.01)
        saw_cancel.set()

    ctx = JobContext()
    running = asyncio.create_task(invoke(hook, ctx, executor=executor))
    assert await asyncio.to_thread(started.wait, DEADLINE)
    running.cancel()
    assert await running == ProcessResult.failure("killed")
    assert await asyncio.to_thread(saw_cancel.wait, DEADLINE)
