"""The ListAlarms extension: a group's alarm history, with whether each alarm was delivered."""

from __future__ import annotations

from typing import Any

from sx.scheduler._errors import BadRequest
from sx.scheduler.api._call import ADDRESS, PAGE, Call, Endpoint
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import alarm_view, page_view

__all__ = ["ENDPOINTS"]


async def list_alarms(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    tz = call.services.jobs.default_tz
    job_id = call.params.integer("jobId", minimum=1)
    since = call.params.instant("startTime", tz=tz)
    until = call.params.instant("endTime", tz=tz)
    if since is not None and until is not None and since > until:
        raise BadRequest("endTime", call.params.values.get("endTime"), "must not be before startTime")
    delivered = call.params.optional_boolean("delivered")
    page_num, page_size = call.params.page()
    page = await call.services.alarm_history().list_alarms(
        namespace,
        group_id,
        job_id=job_id,
        since=since,
        until=until,
        delivered=delivered,
        page_num=page_num,
        page_size=page_size,
    )
    alarms = [alarm_view(alarm, tz) for alarm in page.items]
    return page_view("alarms", alarms, total=page.total, page_num=page_num, page_size=page_size)


ENDPOINTS = (
    Endpoint(
        "ListAlarms",
        ("/openapi/v1/alarm/list",),
        "Page through a group's alarm history",
        list_alarms,
        "Extensions",
        (
            *ADDRESS,
            ParamDoc("jobId", "integer", "only this job's alarms"),
            ParamDoc(
                "startTime", "string", "raised from: yyyy-MM-dd HH:mm:ss (the scheduler's zone) or epoch ms"
            ),
            ParamDoc(
                "endTime", "string", "raised until: yyyy-MM-dd HH:mm:ss (the scheduler's zone) or epoch ms"
            ),
            ParamDoc("delivered", "boolean", "true: only delivered alarms; false: only undelivered ones"),
            *PAGE,
        ),
        description="Every alarm raised for the group's jobs (an instance failed or ran past its "
        "timeout), newest first, whether or not its channel delivered it: `error` says why one was not. "
        "`instanceId` is null for an alarm about no single instance; `time` is in the scheduler's zone.",
        data="{total, pageNum, pageSize, alarms: [{alarmId, time, jobId, instanceId, kind, channel, "
        "message, delivered, error}]}",
        extension=True,
    ),
)
