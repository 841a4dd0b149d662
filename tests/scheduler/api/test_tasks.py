"""Subtask endpoints of parallel instances over real HTTP: list (status filter, paging) and retryTasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import InstanceStatus, TaskStatus
from sx.scheduler.store import InstanceChange, NewInstance, NewTask, TaskStatusChange
from tests.scheduler.api.test_harness import Api, running_api

ADDR = {"namespace": "ns1", "groupId": "g1"}
PARALLEL = {"name": "fan", "className": "app.jobs:Fan", "executeMode": "parallel"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        await api.setup()
        yield api


async def _instance_with_tasks(
    api: Api, *, status: InstanceStatus = InstanceStatus.FAILED
) -> tuple[int, int]:
    """A parallel job's instance with root 0 (SUCCESS), tasks 1-6: 2 and 5 FAILED, the rest SUCCESS."""
    job_id = await api.create_job(**PARALLEL)
    instance_id: int = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id)
    store = api.store
    await store.create_tasks(instance_id, [NewTask(0, "MAP_TASK_ROOT")])
    await store.create_tasks(instance_id, [NewTask(i, "part", f"p{i}".encode(), 0, 1) for i in range(1, 7)])
    await store.update_task_statuses(
        instance_id,
        [
            TaskStatusChange(
                TaskStatus.PULLED, tuple(range(7)), worker_id="w1", worker_addr="127.0.0.1:7001"
            ),
            TaskStatusChange(TaskStatus.SUCCESS, (0, 1, 3, 4, 6), results=("root", "1", "3", "4", "6")),
            TaskStatusChange(TaskStatus.FAILED, (2, 5), results=("boom 2", "boom 5")),
        ],
    )
    await store.update_instance(instance_id, InstanceChange(status=status, result="2 of 7 task(s) failed"))
    return job_id, instance_id


async def test_list_tasks_with_status_filter_and_paging(api: Api) -> None:
    job_id, instance_id = await _instance_with_tasks(api)
    everything = await api.ok("/openapi/v1/instance/tasks", **ADDR, jobId=job_id, instanceId=instance_id)
    assert everything["total"] == 7
    assert [t["taskId"] for t in everything["tasks"]] == list(range(7))
    two = everything["tasks"][2]
    assert two["taskName"] == "part" and two["status"] == 5 and two["result"] == "boom 2"
    assert two["workerAddr"] == "127.0.0.1:7001" and two["attempt"] == 1
    assert two["endDate"] != "" and two["startDate"] == ""
    failed = await api.ok(
        "/openapi/v1/instance/tasks", **ADDR, jobId=job_id, instanceId=instance_id, status="5"
    )
    assert [t["taskId"] for t in failed["tasks"]] == [2, 5]
    page = await api.ok(
        "/openapi/v1/instance/tasks", **ADDR, jobId=job_id, instanceId=instance_id, pageNum=2, pageSize=3
    )
    assert (page["total"], page["pageNum"], page["pageSize"]) == (7, 2, 3)
    assert [t["taskId"] for t in page["tasks"]] == [3, 4, 5]
    message = await api.error(
        "/openapi/v1/instance/tasks", 400, **ADDR, jobId=job_id, instanceId=instance_id, status="9"
    )
    assert "status" in message and "9" in message


async def test_retry_reopens_a_finished_instance_and_resets_only_those_tasks(api: Api) -> None:
    job_id, instance_id = await _instance_with_tasks(api)
    api.hooks.created.clear()
    data = await api.ok(
        "/openapi/v1/instance/retryTasks", **ADDR, jobId=job_id, instanceId=instance_id, taskIds="2,5"
    )
    assert data == {"instanceId": instance_id, "taskIds": [2, 5], "reopened": True, "status": 1}
    assert [i.id for i in api.hooks.created] == [instance_id]  # handed to dispatch again
    instance = await api.store.get_instance(instance_id)
    assert instance is not None and instance.status is InstanceStatus.WAITING and instance.result == ""
    tasks = {t.task_id: t for t in (await api.store.list_tasks(instance_id)).items}
    assert tasks[2].status is TaskStatus.INIT and tasks[2].result == ""
    assert tasks[5].status is TaskStatus.INIT
    assert tasks[3].status is TaskStatus.SUCCESS and tasks[3].result == "3"


async def test_retry_on_a_running_instance_only_resets(api: Api) -> None:
    job_id, instance_id = await _instance_with_tasks(api, status=InstanceStatus.RUNNING)
    api.hooks.created.clear()
    _, body = await api.call(
        "/openapi/v1/instance/retryTasks",
        {**ADDR, "jobId": job_id, "instanceId": instance_id, "taskIds": [5]},
        style="json",
    )
    assert body["data"] == {"instanceId": instance_id, "taskIds": [5], "reopened": False, "status": 3}
    assert api.hooks.created == []  # its master picks the reset task up
    counts = await api.store.count_tasks(instance_id)
    assert counts == {TaskStatus.SUCCESS: 5, TaskStatus.FAILED: 1, TaskStatus.INIT: 1}


async def test_retry_errors_name_the_field(api: Api) -> None:
    job_id, instance_id = await _instance_with_tasks(api)
    base = {**ADDR, "jobId": job_id, "instanceId": instance_id}
    unknown = await api.error("/openapi/v1/instance/retryTasks", 404, **base, taskIds="2,77,78")
    assert "taskIds" in unknown and "77,78" in unknown
    not_failed = await api.error("/openapi/v1/instance/retryTasks", 400, **base, taskIds="3")
    assert "taskIds" in not_failed and "3 (SUCCESS)" in not_failed
    bad = await api.error("/openapi/v1/instance/retryTasks", 400, **base, taskIds="two")
    assert "taskIds" in bad and "two" in bad
    empty = await api.error("/openapi/v1/instance/retryTasks", 400, **base, taskIds="")
    assert "taskIds" in empty
    missing = await api.error(
        "/openapi/v1/instance/retryTasks", 404, **ADDR, jobId=job_id, instanceId=999999, taskIds="2"
    )
    assert "instanceId" in missing and "999999" in missing
    listing = await api.error("/openapi/v1/instance/tasks", 404, **ADDR, jobId=job_id, instanceId=999999)
    assert "999999" in listing
    # Nothing changed by the refused calls.
    assert (await api.store.count_tasks(instance_id))[TaskStatus.FAILED] == 2


async def test_non_parallel_instances_are_refused_naming_the_instance(api: Api) -> None:
    job_id = await api.create_job(name="grid-job", className="app.jobs:Fan", executeMode="grid")
    instance_id = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id)
    message = await api.error("/openapi/v1/instance/tasks", 400, **ADDR, jobId=job_id, instanceId=instance_id)
    assert "instanceId" in message and "'grid'" in message and "parallel" in message
    message = await api.error(
        "/openapi/v1/instance/retryTasks", 400, **ADDR, jobId=job_id, instanceId=instance_id, taskIds="1"
    )
    assert "instanceId" in message


async def test_a_retried_instance_sends_the_caller_to_its_retry(api: Api) -> None:
    job_id, instance_id = await _instance_with_tasks(api)
    first = await api.store.get_instance(instance_id)
    assert first is not None
    retry = await api.store.create_instance(
        NewInstance(
            job_id=job_id,
            namespace="ns1",
            group_id="g1",
            status=InstanceStatus.WAITING,
            trigger_type=first.trigger_type,
            time_type=first.time_type,
            schedule_time=first.schedule_time,
            data_time=first.data_time,
            attempt=1,
            retry_of=instance_id,
        )
    )
    message = await api.error(
        "/openapi/v1/instance/retryTasks", 409, **ADDR, jobId=job_id, instanceId=instance_id, taskIds="2"
    )
    assert str(retry.id) in message
