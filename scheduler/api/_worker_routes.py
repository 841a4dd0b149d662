"""The ListWorkers extension: the workers of a group connected to this scheduler now."""

from __future__ import annotations

from typing import Any

from sx.scheduler.api._call import ADDRESS, PAGE, Call, Endpoint
from sx.scheduler.api._views import page_view, worker_view

__all__ = ["ENDPOINTS"]


async def list_workers(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    page_num, page_size = call.params.page()
    # An unknown group is an error, not an empty list: a typo should not look like "no workers".
    await call.services.admin.get_group(namespace, group_id)
    workers = call.services.worker_directory().connected_workers(namespace, group_id)
    start = (page_num - 1) * page_size
    tz = call.services.jobs.default_tz
    items = [worker_view(worker, tz) for worker in workers[start : start + page_size]]
    return page_view("workers", items, total=len(workers), page_num=page_num, page_size=page_size)


ENDPOINTS = (
    Endpoint(
        "ListWorkers",
        ("/openapi/v1/worker/list",),
        "Page through a group's connected workers",
        list_workers,
        "Extensions",
        (*ADDRESS, *PAGE),
        description="The workers whose stream to this scheduler is open, in the order they registered "
        "(another replica's workers are not listed). `running` is what the worker's last heartbeat "
        "said it runs (instances and subtasks), `assigned` the instances this scheduler gave it that "
        "have not finished, `capacity` 0 when it declared no limit, `lastHeartbeat` when its last "
        "message arrived (scheduler's zone), and `draining` true once it deregistered to shut down: "
        "it finishes what it runs and gets nothing new.",
        data="{total, pageNum, pageSize, workers: [{workerId, address, processors, capacity, running, "
        "assigned, lastHeartbeat, connectedAt, draining, version, labels}]}",
        extension=True,
    ),
)
