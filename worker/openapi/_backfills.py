"""The OpenAPI's backfill routes: run a job or workflow for every fire time of a past range, and follow it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sx.worker.openapi._models import BackfillFirePage, BackfillInfo, BackfillPage, BackfillPlanInfo
from sx.worker.openapi._transport import OpenApiTransport

__all__ = ["BackfillRoutes"]


class BackfillRoutes(OpenApiTransport):
    """The backfill endpoints of ``OpenApiClient``."""

    # -- extensions: backfills ----------------------------------------------------------------------

    async def backfill_job(
        self,
        job_id: int,
        start_date: str | datetime,
        end_date: str | datetime,
        *,
        concurrency: int = 1,
        skip_successful: bool = False,
        max_fire_times: int | None = None,
        instance_parameters: str = "",
    ) -> BackfillInfo:
        """RerunJob: run the job for every fire time whose data time lies in [start_date, end_date]
        (datetimes, or ``yyyy-MM-dd HH:mm:ss`` in the job's zone), ``concurrency`` at a time."""
        params = _backfill_params(start_date, end_date, skip_successful, max_fire_times)
        params["jobId"] = job_id
        params.update(concurrency=concurrency, instanceParameters=instance_parameters)
        return BackfillInfo.model_validate(await self.call("/openapi/v1/job/rerun", params, idempotent=False))

    async def plan_backfill(
        self,
        job_id: int,
        start_date: str | datetime,
        end_date: str | datetime,
        *,
        skip_successful: bool = False,
        max_fire_times: int | None = None,
    ) -> BackfillPlanInfo:
        """RerunJob's dry run: the fire times a backfill would run; nothing is created."""
        params = _backfill_params(start_date, end_date, skip_successful, max_fire_times)
        params["jobId"] = job_id
        params["dryRun"] = True
        data = await self.call("/openapi/v1/job/rerun", params, idempotent=True)
        return BackfillPlanInfo.model_validate(data)

    async def backfill_workflow(
        self,
        workflow_id: int,
        start_date: str | datetime,
        end_date: str | datetime,
        *,
        concurrency: int = 1,
        skip_successful: bool = False,
        max_fire_times: int | None = None,
        instance_parameters: str = "",
    ) -> BackfillInfo:
        """RerunWorkflow: a workflow instance for every fire time in [start_date, end_date], its nodes
        run for the data time of its fire, ``concurrency`` at a time."""
        params = _backfill_params(start_date, end_date, skip_successful, max_fire_times)
        params.update(workflowId=workflow_id, concurrency=concurrency, instanceParameters=instance_parameters)
        data = await self.call("/openapi/v1/workflow/rerun", params, idempotent=False)
        return BackfillInfo.model_validate(data)

    async def plan_workflow_backfill(
        self,
        workflow_id: int,
        start_date: str | datetime,
        end_date: str | datetime,
        *,
        skip_successful: bool = False,
        max_fire_times: int | None = None,
    ) -> BackfillPlanInfo:
        """RerunWorkflow's dry run: the fire times a workflow backfill would run."""
        params = _backfill_params(start_date, end_date, skip_successful, max_fire_times)
        params.update(workflowId=workflow_id, dryRun=True)
        data = await self.call("/openapi/v1/workflow/rerun", params, idempotent=True)
        return BackfillPlanInfo.model_validate(data)

    async def get_backfill(self, backfill_id: int) -> BackfillInfo:
        data = await self.call("/openapi/v1/backfill/get", {"backfillId": backfill_id}, idempotent=True)
        return BackfillInfo.model_validate(data)

    async def list_backfills(
        self, *, job_id: int | None = None, page_num: int = 1, page_size: int = 20
    ) -> BackfillPage:
        """A page of the group's backfills (one job's when ``job_id`` is given), newest first."""
        params: dict[str, Any] = {"pageNum": page_num, "pageSize": page_size}
        if job_id is not None:
            params["jobId"] = job_id
        data = await self.call("/openapi/v1/backfill/list", params, idempotent=True)
        return BackfillPage.model_validate(data)

    async def list_backfill_fires(
        self, backfill_id: int, *, page_num: int = 1, page_size: int = 100
    ) -> BackfillFirePage:
        """A page of the backfill's fire times in schedule order (``page_size`` up to 1000)."""
        params = {"backfillId": backfill_id, "pageNum": page_num, "pageSize": page_size}
        data = await self.call("/openapi/v1/backfill/fires", params, idempotent=True)
        return BackfillFirePage.model_validate(data)

    async def stop_backfill(self, backfill_id: int) -> BackfillInfo:
        """Start no more of its fire times; ConflictError when it is not running."""
        data = await self.call("/openapi/v1/backfill/stop", {"backfillId": backfill_id}, idempotent=False)
        return BackfillInfo.model_validate(data)


def _backfill_params(
    start_date: str | datetime,
    end_date: str | datetime,
    skip_successful: bool,
    max_fire_times: int | None,
) -> dict[str, Any]:
    """A backfill's range and options as RerunJob / RerunWorkflow take them."""
    params: dict[str, Any] = {"skipSuccessful": skip_successful}
    for wire, value in (("startDate", start_date), ("endDate", end_date)):
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError(f"{wire}={value!r}: must be timezone-aware")
            params[wire] = int(value.timestamp() * 1000)
        else:
            params[wire] = value
    if max_fire_times is not None:
        params["maxFireTimes"] = max_fire_times
    return params
