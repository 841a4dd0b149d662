"""The OpenAPI's instance routes: read, stop and re-run a job's instances, their subtasks and logs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

from sx.processors import InstanceStatus, TaskStatus
from sx.worker.openapi._models import InstanceDetail, InstanceLog, InstancePage, TaskPage, TaskRetry
from sx.worker.openapi._params import time_range_params
from sx.worker.openapi._transport import MAX_PAGE_SIZE, OpenApiTransport

__all__ = ["InstanceRoutes"]


class InstanceRoutes(OpenApiTransport):
    """The job instance endpoints of ``OpenApiClient``."""

    # -- instances (the original OpenAPI) -----------------------------------------------------------

    async def stop_instance(self, job_id: int, instance_id: int) -> None:
        await self.call(
            "/openapi/v1/instance/kill", {"jobId": job_id, "instanceId": instance_id}, idempotent=True
        )

    async def get_instance_list(self, job_id: int) -> list[InstanceDetail]:
        """GetJobInstanceList: the job's 10 most recent instances, newest first."""
        data = await self.call("/openapi/v1/instance/getList", {"jobId": job_id}, idempotent=True)
        return [InstanceDetail.model_validate(item) for item in data]

    async def get_instance(self, job_id: int, instance_id: int) -> InstanceDetail:
        params = {"jobId": job_id, "jobInstanceId": instance_id}
        return InstanceDetail.model_validate(
            await self.call("/openapi/v1/instance/get", params, idempotent=True)
        )

    # -- extensions: instances ----------------------------------------------------------------------

    async def list_instances(
        self,
        job_id: int,
        *,
        statuses: Iterable[InstanceStatus | int] = (),
        start_time: str | datetime | None = None,
        end_time: str | datetime | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> InstancePage:
        """A page of the job's instances, filtered by status and schedule time (datetimes or
        ``yyyy-MM-dd HH:mm:ss`` in the job's zone)."""
        params: dict[str, Any] = {"jobId": job_id, "pageNum": page_num, "pageSize": page_size}
        codes = [str(int(s)) for s in statuses]
        if codes:
            params["status"] = ",".join(codes)
        params.update(time_range_params(start_time, end_time))
        return InstancePage.model_validate(
            await self.call("/openapi/v1/instance/list", params, idempotent=True)
        )

    async def list_instance_tasks(
        self,
        job_id: int,
        instance_id: int,
        *,
        statuses: Iterable[TaskStatus | int] = (),
        page_num: int = 1,
        page_size: int = MAX_PAGE_SIZE,
    ) -> TaskPage:
        """A page of a parallel instance's subtasks, optionally only those of ``statuses``."""
        params: dict[str, Any] = {
            "jobId": job_id,
            "instanceId": instance_id,
            "pageNum": page_num,
            "pageSize": page_size,
        }
        codes = [str(int(s)) for s in statuses]
        if codes:
            params["status"] = ",".join(codes)
        return TaskPage.model_validate(await self.call("/openapi/v1/instance/tasks", params, idempotent=True))

    async def retry_instance_tasks(self, job_id: int, instance_id: int, task_ids: Iterable[int]) -> TaskRetry:
        """Reset FAILED subtasks of a parallel instance to run again; a finished instance is re-opened."""
        params = {"jobId": job_id, "instanceId": instance_id, "taskIds": [int(i) for i in task_ids]}
        # Re-opens and re-submits an instance: repeating it after a lost answer is not the same call.
        data = await self.call("/openapi/v1/instance/retryTasks", params, idempotent=False)
        return TaskRetry.model_validate(data)

    # -- extensions: re-runs ------------------------------------------------------------------------

    async def rerun_instance(self, job_id: int, instance_id: int) -> int:
        """RetryJobInstance: run a finished instance again (trigger type 4); the new instance's id.
        ConflictError while it is unfinished or the job runs maxConcurrency instances."""
        params = {"jobId": job_id, "jobInstanceId": instance_id}
        return int(await self.call("/openapi/v1/instance/retry", params, idempotent=False))

    # -- extension: instance logs -------------------------------------------------------------------

    async def get_instance_log(
        self,
        job_id: int,
        instance_id: int,
        *,
        offset: int = 0,
        limit: int = 100,
        level: str | None = None,
        task_id: int | None = None,
        task_name: str | None = None,
        wait: float = 0,
    ) -> InstanceLog:
        """Lines of the instance's online log after ``offset`` (at most ``limit``), optionally at
        ``level`` or above and of one subtask. With ``wait`` > 0 the scheduler waits up to that many
        seconds (kept below this client's timeout) for a line when there is none yet."""
        params: dict[str, Any] = {"jobId": job_id, "instanceId": instance_id}
        params.update(offset=offset, limit=limit)
        if level is not None:
            params["level"] = level
        if task_id is not None:
            params["taskId"] = task_id
        if task_name is not None:
            params["taskName"] = task_name
        seconds = int(min(wait, self.timeout - 2))
        if seconds > 0:
            params.update(follow=True, wait=seconds)
        data = await self.call("/openapi/v1/instance/log", params, idempotent=True)
        return InstanceLog.model_validate(data)

    async def follow_instance_log(
        self,
        job_id: int,
        instance_id: int,
        *,
        offset: int = 0,
        level: str | None = None,
        task_id: int | None = None,
        task_name: str | None = None,
        wait: float = 20,
    ) -> AsyncIterator[InstanceLog]:
        """Each answer with new lines of the instance's log as they are stored, from ``offset``, until
        the log is complete (its instance finished and every line was read)."""
        while True:
            log = await self.get_instance_log(
                job_id,
                instance_id,
                offset=offset,
                limit=1000,
                level=level,
                task_id=task_id,
                task_name=task_name,
                wait=wait,
            )
            if log.lines:
                yield log
            offset = log.next_offset
            if log.complete:
                return
