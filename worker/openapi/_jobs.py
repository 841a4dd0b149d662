"""The OpenAPI's job routes: create, read, change, trigger and list a group's jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from sx.processors import JobSpec
from sx.worker.openapi._models import JobInfo, JobPage
from sx.worker.openapi._transport import MAX_PAGE_SIZE, OpenApiTransport

__all__ = ["JobRoutes"]


class JobRoutes(OpenApiTransport):
    """The job endpoints of ``OpenApiClient``."""

    # -- jobs (the original OpenAPI) ----------------------------------------------------------------

    async def create_job(self, spec: JobSpec, *, managed: bool = False) -> int:
        """CreateJob; the new job's id. ``managed`` marks it as owned by job sync."""
        params = {**spec.to_create_params(), "managed": managed}
        return int(await self.call("/openapi/v1/job/create", params, idempotent=False))

    async def get_job(self, job_id: int) -> JobInfo:
        """GetJobInfo."""
        return JobInfo.from_wire(await self.call("/openapi/v1/job/get", {"jobId": job_id}, idempotent=True))

    async def update_job(
        self, job_id: int, change: JobSpec | Mapping[str, Any], *, managed: bool | None = None
    ) -> None:
        """UpdateJob: a JobSpec replaces every field; a mapping of wire fields changes only those."""
        params = dict(change.to_create_params() if isinstance(change, JobSpec) else change)
        params["jobId"] = job_id
        if managed is not None:
            params["managed"] = managed
        # Sending the same full update twice leaves the same job, so it may be retried.
        await self.call("/openapi/v1/job/update", params, idempotent=True)

    async def delete_job(self, job_id: int) -> None:
        await self.call("/openapi/v1/job/delete", {"jobId": job_id}, idempotent=True)

    async def enable_job(self, job_id: int) -> None:
        await self.call("/openapi/v1/job/enable", {"jobId": job_id}, idempotent=True)

    async def disable_job(self, job_id: int) -> None:
        await self.call("/openapi/v1/job/disable", {"jobId": job_id}, idempotent=True)

    async def execute_job(self, job_id: int, instance_parameters: str = "") -> int:
        """ExecuteJob: trigger once; the new instance's id."""
        params = {"jobId": job_id, "instanceParameters": instance_parameters}
        return int(await self.call("/openapi/v1/job/execute", params, idempotent=False))

    # -- extensions: jobs ---------------------------------------------------------------------------

    async def list_jobs(
        self,
        *,
        name: str | None = None,
        name_contains: str | None = None,
        page_num: int = 1,
        page_size: int = MAX_PAGE_SIZE,
    ) -> JobPage:
        """One page of the group's jobs, by id."""
        params: dict[str, Any] = {"pageNum": page_num, "pageSize": page_size}
        if name is not None:
            params["name"] = name
        if name_contains is not None:
            params["nameContains"] = name_contains
        return JobPage.from_wire(await self.call("/openapi/v1/job/list", params, idempotent=True))

    async def iter_jobs(self, *, name_contains: str | None = None) -> AsyncIterator[JobInfo]:
        """Every job of the group, page by page."""
        page_num = 1
        while True:
            page = await self.list_jobs(name_contains=name_contains, page_num=page_num)
            for job in page.jobs:
                yield job
            if not page.jobs or page_num * page.page_size >= page.total:
                return
            page_num += 1

    async def all_jobs(self) -> list[JobInfo]:
        return [job async for job in self.iter_jobs()]

    async def find_job(self, name: str) -> JobInfo | None:
        """The group's job called ``name``, if any."""
        page = await self.list_jobs(name=name)
        return page.jobs[0] if page.jobs else None
