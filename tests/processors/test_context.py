"""JobContext: fields, SchedulerX aliases, the current-context var, logging, map fan-out."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from sx.processors import (
    MAX_PAYLOAD_BYTES,
    REDUCE_TASK_NAME,
    ROOT_TASK_NAME,
    CancelledError,
    JobContext,
    PayloadError,
    TaskStatus,
    UpstreamData,
    current_context,
    get_current_context,
    invoke,
)
from sx.processors._codec import PICKLE_CODEC


class RecordingMapper:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[bytes]]] = []

    async def map(self, ctx: JobContext, payloads: list[bytes], task_name: str) -> None:
        self.batches.append((task_name, payloads))


@pytest.fixture
async def executor() -> AsyncIterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


def test_aliases_return_the_fields() -> None:
    when = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)
    upstream = [UpstreamData(job_name="extract", data="42")]
    ctx = JobContext(
        job_id=7,
        job_name="etl",
        instance_id=70,
        wf_instance_id=700,
        task_id=3,
        task_name="Chunk",
        task={"n": 1},
        job_parameters="jp",
        instance_parameters="ip",
        schedule_time=when,
        data_time=when - timedelta(days=1),
        attempt=1,
        max_attempt=3,
        task_attempt=2,
        task_max_attempt=5,
        sharding_id=2,
        sharding_num=4,
        sharding_parameter="east",
        upstream_data=upstream,
        task_results={0: "r"},
        task_statuses={0: TaskStatus.SUCCESS},
    )
    assert ctx.getJobId() == 7 and ctx.getJobName() == "etl"
    assert ctx.getJobInstanceId() == 70 and ctx.getWfInstanceId() == 700
    assert ctx.getTaskId() == 3 and ctx.getTaskName() == "Chunk" and ctx.getTask() == {"n": 1}
    assert ctx.getJobParameters() == "jp"
    assert ctx.getInstanceParameters() == ctx.get_instance_parameters() == "ip"
    assert ctx.getScheduleTime() == when and ctx.getDataTime() == when - timedelta(days=1)
    assert (ctx.getAttempt(), ctx.getMaxAttempt()) == (1, 3)
    assert (ctx.getTaskAttempt(), ctx.getTaskMaxAttempt()) == (2, 5)
    assert (ctx.getShardingId(), ctx.getShardingNum(), ctx.getShardingParameter()) == (2, 4, "east")
    assert ctx.getUpstreamData() == upstream
    assert ctx.getTaskResults() == {0: "r"} and ctx.getTaskStatuses() == {0: TaskStatus.SUCCESS}
    assert not ctx.is_root_task


def test_defaults_and_time_checks() -> None:
    ctx = JobContext()
    assert ctx.is_root_task and ctx.task_name == ROOT_TASK_NAME
    assert ctx.schedule_time.tzinfo is not None and ctx.data_time == ctx.schedule_time
    with pytest.raises(ValueError, match=r"schedule_time=.*timezone-aware"):
        JobContext(schedule_time=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match=r"data_time=.*timezone-aware"):
        JobContext(data_time=datetime(2024, 1, 1))


async def test_cancel_state_and_wait() -> None:
    ctx = JobContext(instance_id=5)
    assert not ctx.is_cancelled
    ctx.check_cancelled()
    waiter = asyncio.create_task(ctx.wait_cancelled())
    await asyncio.sleep(0)
    assert not waiter.done()
    await asyncio.to_thread(ctx.cancel)
    await asyncio.wait_for(waiter, 60)
    assert ctx.is_cancelled
    with pytest.raises(CancelledError, match="instance 5"):
        ctx.check_cancelled()
    await ctx.wait_cancelled()  # already cancelled: returns at once


@pytest.mark.parametrize("use_async", [False, True])
async def test_current_context_inside_hooks(use_async: bool, executor: concurrent.futures.Executor) -> None:
    ctx = JobContext(job_name="cv")

    def deep_helper() -> str:
        return current_context().job_name

    def sync_hook(c: JobContext) -> str:
        assert current_context() is c
        return deep_helper()

    async def async_hook(c: JobContext) -> str:
        assert current_context() is c
        return deep_helper()

    hook = async_hook if use_async else sync_hook
    result = await invoke(hook, ctx, executor=executor)
    assert result.result == "cv"
    assert get_current_context() is None
    with pytest.raises(RuntimeError, match="outside a processor hook"):
        current_context()


def test_logger_tags_lines_with_ids(caplog: pytest.LogCaptureFixture) -> None:
    ctx = JobContext(job_id=1, instance_id=2, task_id=3, task_name="T")
    with caplog.at_level(logging.INFO, logger="sx.job"):
        ctx.logger.info("hello %s", "there")
    record = caplog.records[-1]
    assert record.name == "sx.job"
    assert record.getMessage() == "[job=1 instance=2 task=3] hello there"
    assert (record.sx_job_id, record.sx_instance_id, record.sx_task_name) == (1, 2, "T")  # type: ignore[attr-defined]


def test_logger_of_a_workflow_node_names_its_workflow_instance(caplog: pytest.LogCaptureFixture) -> None:
    ctx = JobContext(job_id=1, instance_id=2, wf_instance_id=9)
    with caplog.at_level(logging.INFO, logger="sx.job"):
        ctx.logger.info("step")
    assert caplog.records[-1].getMessage() == "[job=1 instance=2 task=0 wf_instance=9] step"


async def test_map_async_encodes_with_the_codec() -> None:
    mapper = RecordingMapper()
    ctx = JobContext(mapper=mapper)
    await ctx.map_async([{"a": 1}, b"\x00"], "Items")
    assert mapper.batches == [("Items", [b'{"a":1}', b'{"__sx__":"bytes","b64":"AA=="}'])]
    pickled = JobContext(mapper=mapper, codec=PICKLE_CODEC)
    await pickled.map_async([{1, 2}], "Sets")
    assert PICKLE_CODEC.decode(mapper.batches[-1][1][0]) == {1, 2}


async def test_blocking_map_from_a_worker_thread() -> None:
    mapper = RecordingMapper()
    ctx = JobContext(mapper=mapper, loop=asyncio.get_running_loop())
    await asyncio.to_thread(ctx.map, [1, 2, 3], "Numbers")
    assert mapper.batches == [("Numbers", [b"1", b"2", b"3"])]


async def test_blocking_map_on_the_loop_thread_is_refused() -> None:
    ctx = JobContext(mapper=RecordingMapper(), loop=asyncio.get_running_loop())
    with pytest.raises(RuntimeError, match=r"use `await ctx.map_async"):
        ctx.map([1], "Numbers")


async def test_map_checks() -> None:
    ctx = JobContext(mapper=RecordingMapper())
    with pytest.raises(PayloadError, match="task list is empty"):
        await ctx.map_async([], "Items")
    for reserved in (ROOT_TASK_NAME, REDUCE_TASK_NAME):
        with pytest.raises(PayloadError, match="reserved"):
            await ctx.map_async([1], reserved)
    with pytest.raises(PayloadError, match="non-empty name"):
        await ctx.map_async([1], " ")
    with pytest.raises(PayloadError, match="items must be a list"):
        await ctx.map_async("abc", "Items")
    big = "x" * MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadError, match=r"ctx.map\('Chunks'\): item 2 encodes to 65538 bytes") as info:
        await ctx.map_async(["a", "b", big], "Chunks")
    assert "65536" in str(info.value)
    with pytest.raises(PayloadError, match=r"item 1: .*set is not JSON-compatible"):
        await ctx.map_async([1, {2}], "Sets")
    # the largest payload that fits goes through
    await ctx.map_async(["x" * (MAX_PAYLOAD_BYTES - 2)], "Chunks")


async def test_map_without_a_mapper_says_why() -> None:
    ctx = JobContext(job_name="solo")
    with pytest.raises(RuntimeError, match="subclass MapProcessor"):
        await ctx.map_async([1], "Items")
