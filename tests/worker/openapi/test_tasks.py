"""The client's subtask calls (ListInstanceTasks, RetryInstanceTasks) against a real scheduler over HTTP.

The tasks are stored through the scheduler's store, as a parallel instance's master would report them;
no worker runs, so nothing else changes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import assert_type

import pytest

from sx.processors import ExecuteMode, InstanceStatus, JobSpec, TaskStatus
from sx.scheduler import SchedulerServer
from sx.scheduler.store import InstanceChange, NewTask, TaskStatusChange
from sx.worker.openapi import (
    InvalidRequestError,
    NotFoundError,
    OpenApiClient,
    SyncOpenApiClient,
    TaskDetail,
    TaskPage,
    TaskRetry,
)
from sx.worker.testing import LocalScheduler

NS, GROUP = "ns1", "g1"


@pytest.fixture
async def sched(tmp_path: Path) -> AsyncIterator[LocalScheduler]:
    async with LocalScheduler(tmp_path, namespace=NS, group_id=GROUP, start_worker=False) as local:
        yield local


def server_of(sched: LocalScheduler) -> SchedulerServer:
    assert sched.server is not None
    return sched.server


async def parallel_instance(sched: LocalScheduler, *, status: InstanceStatus) -> tuple[int, int]:
    """A parallel job's instance: root 0 and tasks 1-4 SUCCESS, 2 and 4 FAILED; (job id, instance id)."""
    client, store = sched.client, server_of(sched).store
    spec = JobSpec(name="fan", class_name="app.jobs:Fan", execute_mode=ExecuteMode.PARALLEL)
    job_id = await client.create_job(spec)
    instance_id = await client.execute_job(job_id)
    await store.create_tasks(instance_id, [NewTask(0, "MAP_TASK_ROOT")])
    await store.create_tasks(instance_id, [NewTask(i, "part", f"p{i}".encode(), 0, 1) for i in range(1, 5)])
    await store.update_task_statuses(
        instance_id,
        [
            TaskStatusChange(TaskStatus.PULLED, (0, 1, 2, 3, 4), worker_id="w1", worker_addr="10.0.0.1:7001"),
            TaskStatusChange(TaskStatus.SUCCESS, (0, 1, 3), results=("root", "one", "three")),
            TaskStatusChange(TaskStatus.FAILED, (2, 4), results=("boom 2", "boom 4")),
        ],
    )
    await store.update_instance(instance_id, InstanceChange(status=status, result="2 task(s) failed"))
    return job_id, instance_id


async def test_list_tasks_typed_with_status_filter_and_paging(sched: LocalScheduler) -> None:
    job_id, instance_id = await parallel_instance(sched, status=InstanceStatus.FAILED)
    page = await sched.client.list_instance_tasks(job_id, instance_id)
    assert (page.total, page.page_num, [t.task_id for t in page.tasks]) == (5, 1, [0, 1, 2, 3, 4])
    two = page.tasks[2]
    assert two == TaskDetail(
        task_id=2,
        task_name="part",
        status=TaskStatus.FAILED,
        worker_addr="10.0.0.1:7001",
        attempt=1,
        result="boom 2",
        start_date="",
        end_date=two.end_date,
    )
    assert two.status is TaskStatus.FAILED and two.end_date != ""
    failed = await sched.client.list_instance_tasks(job_id, instance_id, statuses=[TaskStatus.FAILED])
    assert [t.task_id for t in failed.tasks] == [2, 4] and failed.total == 2
    second = await sched.client.list_instance_tasks(job_id, instance_id, page_num=2, page_size=2)
    assert (second.page_size, [t.task_id for t in second.tasks]) == (2, [2, 3])


async def test_retry_reopens_a_finished_instance(sched: LocalScheduler) -> None:
    job_id, instance_id = await parallel_instance(sched, status=InstanceStatus.FAILED)
    retry = await sched.client.retry_instance_tasks(job_id, instance_id, [2, 4])
    assert retry == TaskRetry(
        instance_id=instance_id, task_ids=(2, 4), reopened=True, status=InstanceStatus.WAITING
    )
    page = await sched.client.list_instance_tasks(job_id, instance_id, statuses=[TaskStatus.INIT])
    assert [(t.task_id, t.result) for t in page.tasks] == [(2, ""), (4, "")]


async def test_retry_on_a_running_instance_only_resets(sched: LocalScheduler) -> None:
    job_id, instance_id = await parallel_instance(sched, status=InstanceStatus.RUNNING)
    retry = await sched.client.retry_instance_tasks(job_id, instance_id, (4,))
    assert (retry.task_ids, retry.reopened, retry.status) == ((4,), False, InstanceStatus.RUNNING)


async def test_task_errors_name_the_field(sched: LocalScheduler) -> None:
    client: OpenApiClient = sched.client
    job_id, instance_id = await parallel_instance(sched, status=InstanceStatus.FAILED)
    with pytest.raises(InvalidRequestError) as not_failed:
        await client.retry_instance_tasks(job_id, instance_id, [3])
    assert not_failed.value.field == "taskIds" and "3 (SUCCESS)" in not_failed.value.message
    with pytest.raises(NotFoundError) as unknown:
        await client.retry_instance_tasks(job_id, instance_id, [2, 77])
    assert unknown.value.field == "taskIds" and "77" in unknown.value.message
    grid = await client.create_job(JobSpec(name="grid", class_name="a:B", execute_mode=ExecuteMode.GRID))
    grid_instance = await client.execute_job(grid)
    with pytest.raises(InvalidRequestError) as not_parallel:
        await client.list_instance_tasks(grid, grid_instance)
    assert not_parallel.value.field == "instanceId" and "parallel" in not_parallel.value.message


async def test_task_calls_through_the_sync_facade(sched: LocalScheduler) -> None:
    job_id, instance_id = await parallel_instance(sched, status=InstanceStatus.FAILED)
    url = server_of(sched).http_url

    def use() -> tuple[TaskPage, TaskRetry]:
        with SyncOpenApiClient(url, namespace=NS, group_id=GROUP) as blocking:
            page = blocking.list_instance_tasks(job_id, instance_id, statuses=[5])
            retry = blocking.retry_instance_tasks(job_id, instance_id, [t.task_id for t in page.tasks])
            assert_type(page, TaskPage)  # checked by mypy: the facade keeps the answer types
            assert_type(retry, TaskRetry)
            return page, retry

    page, retry = await asyncio.to_thread(use)
    assert [t.task_id for t in page.tasks] == [2, 4] and retry.reopened
