"""Re-run extensions: RetryJobInstance (an instance run again), RetryWorkflowInstance (a workflow instance
run again, whole) and RerunJob (a backfill over a past range of data times), with the backfills' read,
list and stop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from sx.scheduler._errors import BadRequest
from sx.scheduler.api._call import ADDRESS, JOB_ID, PAGE, Call, Endpoint
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import backfill_fire_view, backfill_view, format_date, page_view
from sx.scheduler.jobs import (
    DEFAULT_MAX_FIRE_TIMES,
    MAX_BACKFILL_CONCURRENCY,
    MAX_FIRE_TIMES,
    BackfillPlan,
    rerun_instance,
    zone_or_default,
)
from sx.scheduler.store import Backfill
from sx.scheduler.workflows import workflow_timing_spec

__all__ = ["ENDPOINTS"]

_DRY_RUN_SHOWN = 10_000  # fire times listed in a dry run's answer (the count is always whole)


async def retry_instance(call: Call) -> int:
    namespace, group_id = call.namespace(), call.group_id()
    # GetJobInstance's name for it, or StopInstance's.
    by_instance_id = call.params.has("instanceId") and not call.params.has("jobInstanceId")
    name = "instanceId" if by_instance_id else "jobInstanceId"
    instance = await rerun_instance(
        call.services.jobs,
        namespace,
        group_id,
        call.params.required_id("jobId"),
        call.params.required_id(name),
    )
    return instance.id


async def retry_workflow_instance(call: Call) -> int:
    namespace, group_id = call.namespace(), call.group_id()
    wf_instance_id = call.params.required_id("wfInstanceId")
    service = call.services.workflow_service()
    return (await service.rerun_instance(namespace, group_id, wf_instance_id)).id


async def _job_zone(call: Call, namespace: str, group_id: str, job_id: int) -> tzinfo:
    job = await call.services.jobs.get_job(namespace, group_id, job_id)
    return call.services.jobs.time_zone(job.spec)


async def _zone(call: Call, namespace: str, group_id: str, backfill: Backfill) -> tzinfo:
    """The zone a backfill's dates are shown in: its job's, or its workflow's."""
    if backfill.workflow_id is not None:
        workflow = await call.services.workflow_service().get_workflow(
            namespace, group_id, backfill.workflow_id
        )
        return zone_or_default(workflow_timing_spec(workflow.definition), call.services.jobs.default_tz)
    assert backfill.job_id is not None  # a backfill is of a job or of a workflow
    return await _job_zone(call, namespace, group_id, backfill.job_id)


@dataclass(frozen=True, slots=True)
class _RangeAsked:
    """A RerunJob / RerunWorkflow request's range and options."""

    start: datetime
    end: datetime
    concurrency: int
    max_fire_times: int
    skip_successful: bool
    dry_run: bool


def _range_asked(call: Call, tz: tzinfo) -> _RangeAsked:
    start = call.params.instant("startDate", tz=tz)
    end = call.params.instant("endDate", tz=tz)
    if start is None:
        raise BadRequest("startDate", "", "is required")
    if end is None:
        raise BadRequest("endDate", "", "is required")
    concurrency = call.params.integer("concurrency", default=1, minimum=1, maximum=MAX_BACKFILL_CONCURRENCY)
    limit = call.params.integer(
        "maxFireTimes", default=DEFAULT_MAX_FIRE_TIMES, minimum=1, maximum=MAX_FIRE_TIMES
    )
    assert concurrency is not None and limit is not None
    return _RangeAsked(
        start=start,
        end=end,
        concurrency=concurrency,
        max_fire_times=limit,
        skip_successful=call.params.boolean("skipSuccessful", default=False),
        dry_run=call.params.boolean("dryRun", default=False),
    )


def _plan_view(key: str, target_id: int, plan: BackfillPlan, tz: tzinfo) -> dict[str, Any]:
    return {
        key: target_id,
        "total": len(plan.fire_times),
        "skipped": len(plan.skipped),
        "fireTimes": [
            {"scheduleDate": format_date(t, tz), "skip": t in plan.skipped}
            for t in plan.fire_times[:_DRY_RUN_SHOWN]
        ],
    }


async def rerun_job(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    job_id = call.params.required_id("jobId")
    tz = await _job_zone(call, namespace, group_id, job_id)
    asked = _range_asked(call, tz)
    service = call.services.backfill_service()
    if asked.dry_run:
        plan = await service.plan(
            namespace,
            group_id,
            job_id,
            asked.start,
            asked.end,
            skip_successful=asked.skip_successful,
            max_fire_times=asked.max_fire_times,
        )
        return _plan_view("jobId", job_id, plan, tz)
    backfill = await service.create(
        namespace,
        group_id,
        job_id,
        asked.start,
        asked.end,
        concurrency=asked.concurrency,
        skip_successful=asked.skip_successful,
        max_fire_times=asked.max_fire_times,
        instance_parameters=call.params.text("instanceParameters", max_chars=100_000),
    )
    return backfill_view(backfill, tz)


async def rerun_workflow(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    workflow_id = call.params.required_id("workflowId")
    workflow = await call.services.workflow_service(workflow_id).get_workflow(
        namespace, group_id, workflow_id
    )
    timing = workflow_timing_spec(workflow.definition)
    tz = zone_or_default(timing, call.services.jobs.default_tz)
    asked = _range_asked(call, tz)
    service = call.services.backfill_service()
    if asked.dry_run:
        plan = await service.plan_workflow(
            workflow,
            timing,
            asked.start,
            asked.end,
            skip_successful=asked.skip_successful,
            max_fire_times=asked.max_fire_times,
        )
        return _plan_view("workflowId", workflow_id, plan, tz)
    backfill = await service.create_workflow(
        workflow,
        timing,
        asked.start,
        asked.end,
        concurrency=asked.concurrency,
        skip_successful=asked.skip_successful,
        max_fire_times=asked.max_fire_times,
        instance_parameters=call.params.text("instanceParameters", max_chars=1000),
    )
    return backfill_view(backfill, tz)


async def get_backfill(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    backfill = await call.services.backfill_service().get(
        namespace, group_id, call.params.required_id("backfillId")
    )
    return backfill_view(backfill, await _zone(call, namespace, group_id, backfill))


async def list_backfills(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    job_id = call.params.integer("jobId", minimum=1)
    page_num, page_size = call.params.page()
    page = await call.services.backfill_service().list(
        namespace, group_id, job_id=job_id, page_num=page_num, page_size=page_size
    )
    zones: dict[tuple[int | None, int | None], tzinfo] = {}
    items = []
    for backfill in page.items:
        key = (backfill.job_id, backfill.workflow_id)
        if key not in zones:
            zones[key] = await _zone(call, namespace, group_id, backfill)
        items.append(backfill_view(backfill, zones[key]))
    return page_view("backfills", items, total=page.total, page_num=page_num, page_size=page_size)


async def list_backfill_fires(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    backfill_id = call.params.required_id("backfillId")
    service = call.services.backfill_service()
    backfill = await service.get(namespace, group_id, backfill_id)
    tz = await _zone(call, namespace, group_id, backfill)
    page_num, page_size = call.params.page(max_size=1000, default_size=100)
    page = await service.fires(namespace, group_id, backfill_id, page_num=page_num, page_size=page_size)
    fires = [backfill_fire_view(fire, tz) for fire in page.items]
    return page_view("fires", fires, total=page.total, page_num=page_num, page_size=page_size)


async def stop_backfill(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    backfill = await call.services.backfill_service().stop(
        namespace, group_id, call.params.required_id("backfillId")
    )
    return backfill_view(backfill, await _zone(call, namespace, group_id, backfill))


_BACKFILL_ID = ParamDoc("backfillId", "integer", "backfill id", required=True)
_BACKFILL_DATA = (
    "{backfillId, jobId (null for a workflow's), workflowId (null for a job's), state (running, "
    "stopped, finished), startDate, endDate, concurrency, skipSuccessful, total, pending, running, done, "
    "failed, skipped, createTime, updateTime}"
)

ENDPOINTS = (
    Endpoint(
        "RetryJobInstance",
        ("/openapi/v1/instance/retry",),
        "Run a finished instance again",
        retry_instance,
        "Extensions",
        (
            *ADDRESS,
            JOB_ID,
            ParamDoc("jobInstanceId", "integer", "the finished instance to run again (or instanceId)", True),
        ),
        description="A new instance of the job with trigger type 4 (manual re-run), the original's "
        "instance parameters, schedule and data time, and `rerunOf` naming the original, whose record "
        "stays as it was. A map instance runs whole again. Refused (409) while the instance is "
        "unfinished, or while the job runs maxConcurrency instances.",
        data="Long: the new instance's id",
        extension=True,
    ),
    Endpoint(
        "RetryWorkflowInstance",
        ("/openapi/v1/workflow/instance/retry",),
        "Run a finished workflow instance again, whole",
        retry_workflow_instance,
        "Extensions",
        (
            *ADDRESS,
            ParamDoc("wfInstanceId", "integer", "the finished workflow instance to run again", True),
        ),
        description="A new workflow instance with trigger type 4 (manual re-run), the original's graph, "
        "instance parameters and schedule time; its nodes run with the data time of that schedule. "
        "Refused (409) while the workflow instance is unfinished.",
        data="Long: the new wfInstanceId",
        extension=True,
    ),
    Endpoint(
        "RerunJob",
        ("/openapi/v1/job/rerun",),
        "Backfill: run a job again for every fire time of a past range of data times",
        rerun_job,
        "Extensions",
        (
            *ADDRESS,
            JOB_ID,
            ParamDoc(
                "startDate", "string", "first data time: yyyy-MM-dd HH:mm:ss (job's zone) or epoch ms", True
            ),
            ParamDoc(
                "endDate",
                "string",
                "last data time (inclusive): yyyy-MM-dd HH:mm:ss (job's zone) or epoch ms",
                True,
            ),
            ParamDoc(
                "concurrency",
                "integer",
                f"instances running at once, 1 to {MAX_BACKFILL_CONCURRENCY} (default 1)",
            ),
            ParamDoc(
                "skipSuccessful", "boolean", "skip the data times that already have a successful instance"
            ),
            ParamDoc(
                "maxFireTimes",
                "integer",
                f"refuse a range holding more fire times, 1 to {MAX_FIRE_TIMES} "
                f"(default {DEFAULT_MAX_FIRE_TIMES})",
            ),
            ParamDoc("instanceParameters", "string", "the instances' instance parameters"),
            ParamDoc("dryRun", "boolean", "only list the fire times it would run (nothing is created)"),
        ),
        description="For a cron or fix_rate job: every fire time whose data time (schedule time + "
        "dataOffset) lies in [startDate, endDate], computed as the live schedule does (the job's time "
        "zone and calendar), runs as an instance with trigger type 2 (data re-run) and that schedule and "
        "data time, in schedule order, `concurrency` at a time. Backfill instances do not count against "
        "the job's maxConcurrency, so live fires go on as usual. A range holding more than maxFireTimes "
        "fire times is refused (400 naming maxFireTimes).",
        data=f"the backfill {_BACKFILL_DATA}; with dryRun {{jobId, total, skipped, fireTimes: "
        "[{scheduleDate, skip}]}",
        extension=True,
    ),
    Endpoint(
        "RerunWorkflow",
        ("/openapi/v1/workflow/rerun",),
        "Backfill: run a workflow again for every fire time of a past range",
        rerun_workflow,
        "Extensions",
        (
            *ADDRESS,
            ParamDoc("workflowId", "integer", "workflow id", required=True),
            ParamDoc(
                "startDate",
                "string",
                "first fire time: yyyy-MM-dd HH:mm:ss (workflow's zone) or epoch ms",
                True,
            ),
            ParamDoc("endDate", "string", "last fire time (inclusive), as startDate", True),
            ParamDoc(
                "concurrency",
                "integer",
                f"workflow instances at once, 1 to {MAX_BACKFILL_CONCURRENCY} (default 1)",
            ),
            ParamDoc(
                "skipSuccessful", "boolean", "skip the fire times that already have a successful instance"
            ),
            ParamDoc("maxFireTimes", "integer", f"as RerunJob's (default {DEFAULT_MAX_FIRE_TIMES})"),
            ParamDoc(
                "instanceParameters", "string", "the root nodes' instance parameters (at most 1000 bytes)"
            ),
            ParamDoc("dryRun", "boolean", "only list the fire times it would run (nothing is created)"),
        ),
        description="For a cron or fix_rate workflow: every fire time in [startDate, endDate] (the "
        "workflow's zone) runs as a workflow instance with trigger type 2 (data re-run) and that schedule "
        "time, whose nodes run with the data time of that fire, in schedule order, `concurrency` at a "
        "time.",
        data=f"the backfill {_BACKFILL_DATA}; with dryRun {{workflowId, total, skipped, fireTimes: "
        "[{scheduleDate, skip}]}",
        extension=True,
    ),
    Endpoint(
        "GetBackfill",
        ("/openapi/v1/backfill/get",),
        "A backfill and its progress",
        get_backfill,
        "Extensions",
        (*ADDRESS, _BACKFILL_ID),
        data=_BACKFILL_DATA,
        extension=True,
    ),
    Endpoint(
        "ListBackfills",
        ("/openapi/v1/backfill/list",),
        "Page through a group's backfills, newest first",
        list_backfills,
        "Extensions",
        (*ADDRESS, ParamDoc("jobId", "integer", "only this job's backfills"), *PAGE),
        data=f"{{total, pageNum, pageSize, backfills: [{_BACKFILL_DATA}]}}",
        extension=True,
    ),
    Endpoint(
        "ListBackfillFires",
        ("/openapi/v1/backfill/fires",),
        "A backfill's fire times in schedule order",
        list_backfill_fires,
        "Extensions",
        (
            *ADDRESS,
            _BACKFILL_ID,
            ParamDoc("pageNum", "integer", "page number, from 1 (default 1)"),
            ParamDoc("pageSize", "integer", "fire times per page, at most 1000 (default 100)"),
        ),
        data="{total, pageNum, pageSize, fires: [{scheduleDate, state (pending, running, done, failed, "
        "skipped), instanceId}]}",
        extension=True,
    ),
    Endpoint(
        "StopBackfill",
        ("/openapi/v1/backfill/stop",),
        "Stop a backfill: no more of its fire times start",
        stop_backfill,
        "Extensions",
        (*ADDRESS, _BACKFILL_ID),
        description="Its running instances go on to their end and are counted; its pending fire times "
        "stay pending. 409 when it is not running.",
        data=_BACKFILL_DATA,
        extension=True,
    ),
)
