"""The OpenAPI's monitoring routes: a group's connected workers and alarm history, the scheduler's health."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sx.worker.openapi._models import AlarmPage, WorkerPage
from sx.worker.openapi._params import time_range_params
from sx.worker.openapi._transport import MAX_PAGE_SIZE, OpenApiTransport

__all__ = ["MonitoringRoutes"]


class MonitoringRoutes(OpenApiTransport):
    """The worker, alarm and health endpoints of ``OpenApiClient``."""

    # -- extensions: workers and alarms -------------------------------------------------------------

    async def list_workers(self, *, page_num: int = 1, page_size: int = MAX_PAGE_SIZE) -> WorkerPage:
        """A page of the workers of this client's group connected to the scheduler now."""
        params = {"pageNum": page_num, "pageSize": page_size}
        return WorkerPage.model_validate(await self.call("/openapi/v1/worker/list", params, idempotent=True))

    async def list_alarms(
        self,
        *,
        job_id: int | None = None,
        start_time: str | datetime | None = None,
        end_time: str | datetime | None = None,
        delivered: bool | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> AlarmPage:
        """A page of the group's alarm history, newest first, optionally of one job, raised within a
        time range (datetimes or ``yyyy-MM-dd HH:mm:ss`` in the scheduler's zone), and delivered or
        not."""
        params: dict[str, Any] = {"pageNum": page_num, "pageSize": page_size}
        if job_id is not None:
            params["jobId"] = job_id
        if delivered is not None:
            params["delivered"] = delivered
        params.update(time_range_params(start_time, end_time))
        return AlarmPage.model_validate(await self.call("/openapi/v1/alarm/list", params, idempotent=True))

    async def health(self) -> dict[str, Any]:
        """The scheduler's liveness answer (``{"status": "ok"}``); needs no signature."""
        data = await self.call("/health", idempotent=True, address=False)
        return dict(data)
