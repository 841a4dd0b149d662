"""Re-running an instance (RetryJobInstance): a finished instance runs again as a new one.

The new instance has trigger type 4 (manual re-run), the original's instance parameters, schedule and
data time, and ``rerun_of`` pointing back to it; the original's record is left as it was. A map
instance runs whole again: a re-run is not a retry (``retry_of`` stays unset), so a parallel re-run
takes over none of the original's subtasks. The re-run counts against the job's maxConcurrency like an
API trigger, but is refused rather than recorded REJECTED when the job has no room.
"""

from __future__ import annotations

import logging

from sx.processors import InstanceStatus, TriggerType
from sx.scheduler._errors import Conflict
from sx.scheduler.jobs._service import JobService
from sx.scheduler.store import Instance, NewInstance

__all__ = ["rerun_instance"]

log = logging.getLogger("sx.scheduler.service")


async def rerun_instance(
    jobs: JobService, namespace: str | None, group_id: str | None, job_id: int, instance_id: int
) -> Instance:
    """Run a finished instance of the job again; Conflict (naming the field) while it is unfinished or
    the job already runs maxConcurrency instances."""
    job = await jobs.get_job(namespace, group_id, job_id)
    original = await jobs.get_instance(namespace, group_id, job_id, instance_id)
    if not original.status.finished:
        raise Conflict(
            f"instanceId={instance_id}: still unfinished (status {int(original.status)}); only a "
            "finished instance (failed, killed or succeeded) can be re-run",
            field="instanceId",
            value=instance_id,
        )
    limit = job.spec.max_concurrency
    active = await jobs.store.count_active_instances(job_id)
    if active >= limit:
        raise Conflict(
            f"jobId={job_id}: re-run refused: {active} instance(s) of the job are still running and its "
            f"maxConcurrency is {limit}; try again when one has ended",
            field="jobId",
            value=job_id,
        )
    instance = await jobs.store.create_instance(
        NewInstance(
            job_id=job_id,
            namespace=job.namespace,
            group_id=job.group_id,
            status=InstanceStatus.WAITING,
            trigger_type=TriggerType.MANUAL_RERUN,
            time_type=original.time_type,
            schedule_time=original.schedule_time,
            data_time=original.data_time,
            instance_parameters=original.instance_parameters,
            upstream_data=original.upstream_data,
            rerun_of=original.id,
        )
    )
    log.info("instance %d of job %d re-runs instance %d", instance.id, job_id, original.id)
    await jobs.hooks.instance_created(instance)
    return instance
