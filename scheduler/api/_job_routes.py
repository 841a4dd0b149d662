"""Job endpoints: the original's CreateJob ... ExecuteJob, and the job list extension."""

from __future__ import annotations

from typing import Any

from sx.processors import InstanceStatus
from sx.scheduler.api._call import ADDRESS, JOB_ID, PAGE, Call, Endpoint, Reply
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import job_config_info, page_view
from sx.scheduler.jobs import parse_job_spec

__all__ = ["ENDPOINTS", "JOB_FIELDS"]

JOB_FIELDS = (
    ParamDoc("jobType", "string", "java, python, shell or go (lower case)"),
    ParamDoc("className", "string", "java: processor class; python: the registered processor name"),
    ParamDoc("jarUrl", "string", "java only: where the jar was uploaded"),
    ParamDoc("content", "string", "script code (python, shell and go script jobs)"),
    ParamDoc("name", "string", "job name, unique in its group"),
    ParamDoc("description", "string", ""),
    ParamDoc("executeMode", "string", "standalone, broadcatst (or broadcast), parallel, grid, batch"),
    ParamDoc("parameters", "string", "job parameters the processor reads at run time"),
    ParamDoc("maxConcurrency", "integer", "instances that may run at once (default 1)"),
    ParamDoc("maxAttempt", "integer", "retries of a failed instance (default 0)"),
    ParamDoc("attemptInterval", "integer", "seconds between those retries (default 30)"),
    ParamDoc("timeType", "integer", "1 cron, 3 fix_rate, 4 second_delay, 100 api"),
    ParamDoc("timeExpression", "string", "cron expression, or seconds for fix_rate and second_delay"),
    ParamDoc("calendar", "string", "cron only: a custom calendar name"),
    ParamDoc("dataOffset", "integer", "cron only: data time = schedule time + this many seconds"),
    ParamDoc("pageSize", "integer", "map modes: subtasks pulled at a time (default 100)"),
    ParamDoc("consumerSize", "integer", "map modes: subtask threads per worker (default 5)"),
    ParamDoc("queueSize", "integer", "map modes: subtask queue bound (default 10000)"),
    ParamDoc("dispatcherSize", "integer", "map modes: dispatch threads (default 5)"),
    ParamDoc("taskMaxAttempt", "integer", "map modes: retries of a failed subtask (default 0)"),
    ParamDoc("taskAttemptInterval", "integer", "map modes: seconds between subtask retries (default 0)"),
    ParamDoc("timeoutEnable", "boolean", "alarm when an instance runs past timeout (default false)"),
    ParamDoc("timeout", "integer", "seconds (default 7200)"),
    ParamDoc("timeoutKillEnable", "boolean", "kill an instance that runs past timeout (default false)"),
    ParamDoc("failEnable", "boolean", "alarm when an instance fails (default false)"),
    ParamDoc("sendChannel", "string", "how alarms are sent: sms (default), webhook, apprise, ding, log"),
    ParamDoc("alarmUrl", "string", "extension: apprise URL(s) of this job's alarms (apprise channel)"),
    ParamDoc("contactInfo", "array", "who is alarmed: [{userPhone, userName, userMail, ding}]"),
    ParamDoc("timeZone", "string", "extension: IANA time zone of the schedule (default: the scheduler's)"),
    ParamDoc("misfirePolicy", "string", "extension: run_once or skip fires missed while down"),
    ParamDoc("captureLogs", "boolean", "extension: plain logging and print in hooks go to the online log"),
    ParamDoc("managed", "boolean", "extension: the job is managed by `sx-worker sync`"),
)


async def create_job(call: Call) -> int:
    namespace, group_id = call.namespace(), call.group_id()
    spec = parse_job_spec(call.params.values)
    job = await call.services.jobs.create_job(
        namespace,
        group_id,
        spec,
        managed=call.params.boolean("managed", default=False),
        namespace_source=call.params.optional_text("namespaceSource", max_chars=200),
    )
    return job.id


async def get_job(call: Call) -> dict[str, Any]:
    job = await call.services.jobs.get_job(
        call.namespace(), call.group_id(), call.params.required_id("jobId")
    )
    return job_config_info(job)


async def update_job(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.services.jobs.update_job(
        namespace,
        group_id,
        call.params.required_id("jobId"),
        call.params.values,
        managed=call.params.optional_boolean("managed"),
    )


async def delete_job(call: Call) -> None:
    await call.services.jobs.delete_job(call.namespace(), call.group_id(), call.params.required_id("jobId"))


async def enable_job(call: Call) -> None:
    await call.services.jobs.set_enabled(
        call.namespace(), call.group_id(), call.params.required_id("jobId"), True
    )


async def disable_job(call: Call) -> None:
    await call.services.jobs.set_enabled(
        call.namespace(), call.group_id(), call.params.required_id("jobId"), False
    )


async def execute_job(call: Call) -> Reply:
    namespace, group_id = call.namespace(), call.group_id()
    instance = await call.services.jobs.execute_job(
        namespace,
        group_id,
        call.params.required_id("jobId"),
        call.params.text("instanceParameters"),
    )
    message = instance.result if instance.status == InstanceStatus.REJECTED else ""
    return Reply(data=instance.id, message=message)


async def list_jobs(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    page_num, page_size = call.params.page()
    page = await call.services.jobs.list_jobs(
        namespace,
        group_id,
        name=call.params.optional_text("name"),
        name_contains=call.params.optional_text("nameContains"),
        page_num=page_num,
        page_size=page_size,
    )
    jobs = [job_config_info(job) for job in page.items]
    return page_view("jobs", jobs, total=page.total, page_num=page_num, page_size=page_size)


ENDPOINTS = (
    Endpoint(
        "CreateJob",
        ("/openapi/v1/job/create",),
        "Create a job",
        create_job,
        "Jobs",
        (*ADDRESS, *JOB_FIELDS),
        data="Long: the new jobId",
    ),
    Endpoint(
        "GetJobInfo",
        ("/openapi/job/v1/get", "/openapi/v1/job/get"),
        "Get a job's configuration (JobConfigInfo), to change and send back through UpdateJob",
        get_job,
        "Jobs",
        (*ADDRESS, JOB_ID),
        data="JobConfigInfo + status (1 enabled, 0 disabled) + jobId + managed",
    ),
    Endpoint(
        "UpdateJob",
        ("/openapi/v1/job/update",),
        "Update a job: absent fields keep their value",
        update_job,
        "Jobs",
        (*ADDRESS, JOB_ID, *JOB_FIELDS),
    ),
    Endpoint(
        "DeleteJob",
        ("/openapi/v1/job/delete",),
        "Delete a job (its running instances are stopped first)",
        delete_job,
        "Jobs",
        (*ADDRESS, JOB_ID),
    ),
    Endpoint(
        "EnableJob", ("/openapi/v1/job/enable",), "Enable a job", enable_job, "Jobs", (*ADDRESS, JOB_ID)
    ),
    Endpoint(
        "DisableJob",
        ("/openapi/v1/job/disable",),
        "Disable a job: it is never triggered by time",
        disable_job,
        "Jobs",
        (*ADDRESS, JOB_ID),
    ),
    Endpoint(
        "ExecuteJob",
        ("/openapi/v1/job/execute",),
        "Trigger a job once",
        execute_job,
        "Jobs",
        (
            *ADDRESS,
            JOB_ID,
            ParamDoc(
                "instanceParameters", "string", "any string; the processor reads it as instance parameters"
            ),
        ),
        description="When maxConcurrency instances are active the instance is created REJECTED (9) and "
        "the message gives the reason.",
        data="Long: instanceId",
    ),
    Endpoint(
        "ListJobs",
        ("/openapi/v1/job/list",),
        "List a group's jobs",
        list_jobs,
        "Extensions",
        (
            *ADDRESS,
            ParamDoc("name", "string", "exact job name"),
            ParamDoc("nameContains", "string", "part of the job name"),
            *PAGE,
        ),
        data="{total, pageNum, pageSize, jobs: [JobConfigInfo + jobId + status + managed]}",
        extension=True,
    ),
)
