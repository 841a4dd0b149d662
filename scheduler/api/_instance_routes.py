"""Instance endpoints: StopInstance, GetJobInstanceList, GetJobInstance, and the list extension."""

from __future__ import annotations

from typing import Any

from sx.processors import InstanceStatus
from sx.scheduler._errors import BadRequest
from sx.scheduler.api._auth import check_namespace
from sx.scheduler.api._call import (
    ADDRESS,
    GROUP_ID,
    JOB_ID,
    NAMESPACE,
    NAMESPACE_SOURCE,
    PAGE,
    Call,
    Endpoint,
)
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import instance_detail, page_view

__all__ = ["ENDPOINTS", "RECENT_LIMIT"]

RECENT_LIMIT = 10


async def stop_instance(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.services.jobs.stop_instance(
        namespace, group_id, call.params.required_id("jobId"), call.params.required_id("instanceId")
    )


async def recent_instances(call: Call) -> list[dict[str, Any]]:
    # The original names only jobId for this request, so namespace and groupId are optional here.
    namespace = call.optional_namespace()
    group_id = call.params.optional_text("groupId", max_chars=200)
    job = await call.services.jobs.get_job(namespace, group_id, call.params.required_id("jobId"))
    check_namespace(call.key, job.namespace)
    instances = await call.services.jobs.recent_instances(namespace, group_id, job.id, limit=RECENT_LIMIT)
    tz = call.services.jobs.time_zone(job.spec)
    return [instance_detail(instance, tz) for instance in instances]


async def get_instance(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    job = await call.services.jobs.get_job(namespace, group_id, call.params.required_id("jobId"))
    name = (
        "jobInstanceId"
        if call.params.has("jobInstanceId") or not call.params.has("instanceId")
        else "instanceId"
    )
    instance = await call.services.jobs.get_instance(
        namespace, group_id, job.id, call.params.required_id(name)
    )
    return instance_detail(instance, call.services.jobs.time_zone(job.spec))


def _statuses(call: Call) -> list[InstanceStatus]:
    out: list[InstanceStatus] = []
    for item in call.params.text_list("status"):
        try:
            out.append(InstanceStatus(int(item)))
        except ValueError as exc:
            raise BadRequest("status", item, "must be instance status codes (1, 2, 3, 4, 5, 9)") from exc
    return out


async def list_instances(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    job = await call.services.jobs.get_job(namespace, group_id, call.params.required_id("jobId"))
    tz = call.services.jobs.time_zone(job.spec)
    page_num, page_size = call.params.page()
    since = call.params.instant("startTime", tz=tz)
    until = call.params.instant("endTime", tz=tz)
    if since is not None and until is not None and since > until:
        raise BadRequest("endTime", call.params.values.get("endTime"), "must not be before startTime")
    page = await call.services.jobs.list_instances(
        namespace,
        group_id,
        job.id,
        statuses=_statuses(call),
        since=since,
        until=until,
        page_num=page_num,
        page_size=page_size,
    )
    instances = [instance_detail(instance, tz) for instance in page.items]
    return page_view("instances", instances, total=page.total, page_num=page_num, page_size=page_size)


ENDPOINTS = (
    Endpoint(
        "StopInstance",
        ("/openapi/v1/instance/kill",),
        "Stop a running instance",
        stop_instance,
        "Instances",
        (*ADDRESS, ParamDoc("instanceId", "integer", "instance id", required=True), JOB_ID),
    ),
    Endpoint(
        "GetJobInstanceList",
        ("/openapi/v1/instance/getList",),
        "The job's 10 most recent instances",
        recent_instances,
        "Instances",
        (
            JOB_ID,
            ParamDoc(NAMESPACE.name, "string", "namespace id (optional here, checked when given)"),
            NAMESPACE_SOURCE,
            ParamDoc(GROUP_ID.name, "string", "group id (optional here, checked when given)"),
        ),
        data="List of JobInstanceDetail, newest first",
    ),
    Endpoint(
        "GetJobInstance",
        ("/openapi/v1/instance/get",),
        "One instance's details",
        get_instance,
        "Instances",
        (*ADDRESS, JOB_ID, ParamDoc("jobInstanceId", "integer", "instance id", required=True)),
        data="JobInstanceDetail",
    ),
    Endpoint(
        "ListInstances",
        ("/openapi/v1/instance/list",),
        "Page through a job's instances",
        list_instances,
        "Extensions",
        (
            *ADDRESS,
            JOB_ID,
            ParamDoc("status", "string", "comma-separated status codes to keep"),
            ParamDoc(
                "startTime", "string", "schedule time from: yyyy-MM-dd HH:mm:ss (job's zone) or epoch ms"
            ),
            ParamDoc(
                "endTime", "string", "schedule time until: yyyy-MM-dd HH:mm:ss (job's zone) or epoch ms"
            ),
            *PAGE,
        ),
        data="{total, pageNum, pageSize, instances: [JobInstanceDetail]}",
        extension=True,
    ),
)
