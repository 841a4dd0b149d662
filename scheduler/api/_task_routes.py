"""Subtask endpoints of parallel instances (extensions): list an instance's tasks, retry failed ones.

Parallel instances keep every subtask in the scheduler's store (at most 300 per instance), so each can
be seen and retried one by one:

- ``/openapi/v1/instance/tasks`` pages through an instance's tasks, optionally by status.
- ``/openapi/v1/instance/retryTasks`` resets FAILED tasks to INIT. A running instance's master notices
  (it asks the scheduler for the task state while running and before finishing) and runs them again. A
  finished instance is re-opened: it goes back to WAITING, is submitted to a worker again, whose master
  runs only the reset tasks (the others stay finished) and then reduces again over every task.
"""

from __future__ import annotations

from typing import Any

from sx.processors._enums import ExecuteMode, InstanceStatus, TaskStatus
from sx.scheduler.api._call import ADDRESS, JOB_ID, PAGE, Call, Endpoint
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import format_date
from sx.scheduler.jobs._service import BadRequest, Conflict, NotFound
from sx.scheduler.store._store import Instance, InstanceChange, Job, Task

__all__ = ["ENDPOINTS"]

# Ids in one retryTasks call: a parallel instance has at most a few hundred tasks.
MAX_RETRY_IDS = 1000
_REOPENABLE = (InstanceStatus.FAILED, InstanceStatus.SUCCESS)


def _task_view(task: Task, call: Call, job: Job) -> dict[str, Any]:
    tz = call.service.time_zone(job.spec)
    return {
        "taskId": task.task_id,
        "taskName": task.name,
        "status": int(task.status),
        "workerAddr": task.worker_addr,
        "attempt": task.attempt,
        "result": task.result,
        "startDate": format_date(task.start_time, tz),
        "endDate": format_date(task.end_time, tz),
    }


async def _parallel_instance(call: Call) -> tuple[Job, Instance]:
    namespace, group_id = call.namespace(), call.group_id()
    job = await call.service.get_job(namespace, group_id, call.params.required_id("jobId"))
    instance_id = call.params.required_id("instanceId")
    instance = await call.service.get_instance(namespace, group_id, job.id, instance_id)
    mode = job.spec.execute_mode
    if mode is not ExecuteMode.PARALLEL:
        raise BadRequest(
            "instanceId",
            instance_id,
            f"job {job.id} runs in execute mode {mode.value!r}: only parallel instances keep "
            "their subtasks in the scheduler",
        )
    return job, instance


def _statuses(call: Call) -> list[TaskStatus]:
    out: list[TaskStatus] = []
    for item in call.params.text_list("status"):
        try:
            out.append(TaskStatus(int(item)))
        except ValueError as exc:
            raise BadRequest(
                "status", item, "must be task status codes (1 init, 2 pulled, 3 running, 4 success, 5 failed)"
            ) from exc
    return out


def _task_ids(call: Call) -> list[int]:
    value = call.params.values.get("taskIds")
    items: list[Any]
    if isinstance(value, list):
        items = value
    elif isinstance(value, str | int):
        items = str(value).split(",")
    else:
        items = []
    ids: list[int] = []
    for item in items:
        parts = item.split(",") if isinstance(item, str) else [item]
        for part in parts:
            text = str(part).strip()
            if not text:
                continue
            if isinstance(part, bool) or not text.isdigit():
                raise BadRequest("taskIds", part, "must be task ids (non-negative integers)")
            ids.append(int(text))
    if not ids:
        raise BadRequest("taskIds", value, "name at least one task id (a comma list or a list)")
    if len(ids) > MAX_RETRY_IDS:
        raise BadRequest("taskIds", f"{len(ids)} ids", f"at most {MAX_RETRY_IDS} task ids per call")
    return list(dict.fromkeys(ids))


async def list_tasks(call: Call) -> dict[str, Any]:
    job, instance = await _parallel_instance(call)
    page_num, page_size = call.params.page()
    page = await call.service.store.list_tasks(
        instance.id, statuses=_statuses(call) or None, offset=(page_num - 1) * page_size, limit=page_size
    )
    return {
        "total": page.total,
        "pageNum": page_num,
        "pageSize": page_size,
        "tasks": [_task_view(task, call, job) for task in page.items],
    }


async def retry_tasks(call: Call) -> dict[str, Any]:
    _job, instance = await _parallel_instance(call)
    ids = _task_ids(call)
    store = call.service.store
    found = {t.task_id: t for t in (await store.list_tasks(instance.id, task_ids=ids, limit=len(ids))).items}
    unknown = [i for i in ids if i not in found]
    if unknown:
        raise NotFound(
            f"taskIds={','.join(map(str, unknown))}: no such task(s) in instance {instance.id}",
            field="taskIds",
            value=unknown,
        )
    # A finished instance may hold INIT tasks reset just as it ended: those may be retried again.
    allowed = (TaskStatus.FAILED, TaskStatus.INIT) if instance.status.finished else (TaskStatus.FAILED,)
    wrong = [t for t in found.values() if t.status not in allowed]
    if wrong:
        shown = ", ".join(f"{t.task_id} ({t.status.name})" for t in wrong[:10])
        raise BadRequest("taskIds", [t.task_id for t in wrong], f"only FAILED tasks can be retried: {shown}")
    if not instance.status.finished:
        reset = await store.reset_tasks(instance.id, ids, only_if_status=[TaskStatus.FAILED])
        return {
            "instanceId": instance.id,
            "taskIds": reset,
            "reopened": False,
            "status": int(instance.status),
        }
    if instance.status not in _REOPENABLE:
        raise Conflict(
            f"instanceId={instance.id}: status {int(instance.status)} cannot be re-opened",
            field="instanceId",
            value=instance.id,
        )
    retry = await store.find_retry(instance.id)
    if retry is not None:
        raise Conflict(
            f"instanceId={instance.id}: it was retried as instance {retry.id}; retry that one's tasks",
            field="instanceId",
            value=instance.id,
        )
    reset = await store.reset_tasks(instance.id, ids, only_if_status=allowed)
    reopened = await store.update_instance(
        instance.id,
        InstanceChange(status=InstanceStatus.WAITING, result="", worker_id="", worker_addr="", executor=""),
        only_if_status=[instance.status],
    )
    if reopened is None:
        raise Conflict(
            f"instanceId={instance.id}: its status changed meanwhile; try again",
            field="instanceId",
            value=instance.id,
        )
    await call.service.hooks.instance_created(reopened)
    return {"instanceId": instance.id, "taskIds": reset, "reopened": True, "status": int(reopened.status)}


_INSTANCE = ParamDoc("instanceId", "integer", "instance id (of a parallel job)", required=True)

ENDPOINTS = (
    Endpoint(
        "ListInstanceTasks",
        ("/openapi/v1/instance/tasks",),
        "Page through a parallel instance's subtasks",
        list_tasks,
        "Extensions",
        (
            *ADDRESS,
            JOB_ID,
            _INSTANCE,
            ParamDoc("status", "string", "comma-separated task status codes to keep (1-5)"),
            *PAGE,
        ),
        description="Parallel instances keep their subtasks (at most 300) in the scheduler.",
        data="{total, pageNum, pageSize, tasks: [{taskId, taskName, status, workerAddr, attempt, result, "
        "startDate, endDate}]}",
        extension=True,
    ),
    Endpoint(
        "RetryInstanceTasks",
        ("/openapi/v1/instance/retryTasks",),
        "Run failed subtasks of a parallel instance again",
        retry_tasks,
        "Extensions",
        (
            *ADDRESS,
            JOB_ID,
            _INSTANCE,
            ParamDoc("taskIds", "string", "task ids: a comma-separated string or a list", required=True),
        ),
        description=(
            "Resets the FAILED tasks to INIT. A running instance's master runs them again; a finished "
            "instance is re-opened and submitted again, runs only those tasks, then reduces again."
        ),
        data="{instanceId, taskIds (reset), reopened, status}",
        extension=True,
    ),
)
