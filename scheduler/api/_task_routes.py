"""Subtask endpoints of parallel instances (extensions): list an instance's tasks, retry failed ones.

Parallel instances keep every subtask in the scheduler's store (at most 300 per instance), so each can
be seen and retried one by one:

- ``/openapi/v1/instance/tasks`` pages through an instance's tasks, optionally by status.
- ``/openapi/v1/instance/retryTasks`` resets FAILED tasks to INIT. A running instance's master notices
  (it asks the scheduler for the task state while running and before finishing) and runs them again. A
  finished instance is re-opened: it goes back to WAITING, is submitted to a worker again, whose master
  runs only the reset tasks (the others stay finished) and then reduces again over every task.

The work is the task service's (``sx.scheduler.jobs.TaskService``); these read the parameters.
"""

from __future__ import annotations

from typing import Any

from sx.processors import TaskStatus
from sx.scheduler._errors import BadRequest
from sx.scheduler.api._call import ADDRESS, JOB_ID, PAGE, Call, Endpoint
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import format_date, page_view
from sx.scheduler.store import Instance, Job, Task

__all__ = ["ENDPOINTS", "MAX_RETRY_IDS"]

# Ids in one retryTasks call: a parallel instance has at most a few hundred tasks.
MAX_RETRY_IDS = 1000


def _task_view(task: Task, call: Call, job: Job) -> dict[str, Any]:
    tz = call.services.jobs.time_zone(job.spec)
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
    job = await call.services.jobs.get_job(namespace, group_id, call.params.required_id("jobId"))
    instance_id = call.params.required_id("instanceId")
    instance = await call.services.tasks.parallel_instance(namespace, group_id, job, instance_id)
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
    page = await call.services.tasks.list_tasks(
        instance, statuses=_statuses(call), page_num=page_num, page_size=page_size
    )
    tasks = [_task_view(task, call, job) for task in page.items]
    return page_view("tasks", tasks, total=page.total, page_num=page_num, page_size=page_size)


async def retry_tasks(call: Call) -> dict[str, Any]:
    _job, instance = await _parallel_instance(call)
    retried = await call.services.tasks.retry_tasks(instance, _task_ids(call))
    return {
        "instanceId": retried.instance_id,
        "taskIds": retried.task_ids,
        "reopened": retried.reopened,
        "status": int(retried.status),
    }


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
