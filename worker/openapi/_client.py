"""A typed client of the scheduler's job OpenAPI: one method per endpoint, envelope unwrapped.

    async with OpenApiClient("http://127.0.0.1:8080", namespace="ns", group_id="g") as client:
        job_id = await client.create_job(spec, managed=True)
        info = await client.get_job(job_id)

Every request is a POST with a JSON body (the API accepts that for all endpoints, and a JSON body keeps
lists such as ``contactInfo`` intact). With an access key every request is signed (ACS3-HMAC-SHA256,
the same code the scheduler verifies with), with a fresh nonce per attempt. Idempotent calls (reads,
lists, enable/disable, delete, stop) are retried with exponential backoff on connection errors and
5xx answers; creating and executing are retried only when the connection could not be made at all,
since then the request cannot have reached the scheduler. The errors it raises are drawn in
``sx.worker.openapi._errors``; ``SyncOpenApiClient`` (``_blocking``) is the same client for code that is
not async.
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Final

import httpx
import tenacity

from sx.processors import InstanceStatus, JobSpec, TaskStatus, WorkflowSpec
from sx.protos import sign_request
from sx.worker.openapi._errors import (
    ConflictError,
    NotFoundError,
    OpenApiError,
    ServerError,
    UnavailableError,
    error_class,
)
from sx.worker.openapi._models import (
    AccessKeyInfo,
    AlarmPage,
    BackfillFirePage,
    BackfillInfo,
    BackfillPage,
    BackfillPlanInfo,
    CalendarInfo,
    GroupInfo,
    InstanceDetail,
    InstanceLog,
    InstancePage,
    JobInfo,
    JobPage,
    NamespaceInfo,
    TaskPage,
    TaskRetry,
    WorkerPage,
    WorkflowInfo,
    WorkflowInstanceDetail,
    WorkflowInstancePage,
)

__all__ = ["MAX_PAGE_SIZE", "OpenApiClient"]

MAX_PAGE_SIZE: Final = 100


class _Retry(Exception):
    """An attempt that may be repeated; carries the error to raise when no attempt is left."""

    def __init__(self, error: OpenApiError) -> None:
        self.error = error


class OpenApiClient:
    """Async client of one scheduler's OpenAPI, addressing one namespace and group.

    ``retries`` is how many times an idempotent call is repeated; ``backoff`` the first delay in
    seconds, doubled each time. ``transport`` replaces httpx's default (e.g. for a Unix socket).
    """

    def __init__(
        self,
        base_url: str,
        *,
        namespace: str,
        group_id: str,
        namespace_source: str | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r}: must start with http:// or https://")
        if (access_key_id is None) != (access_key_secret is None):
            raise ValueError("access_key_id and access_key_secret must be given together")
        if retries < 0:
            raise ValueError(f"retries={retries!r}: must be at least 0")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout!r}: must be positive")
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self.group_id = group_id
        self.namespace_source = namespace_source
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._key = (access_key_id, access_key_secret) if access_key_id and access_key_secret else None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> OpenApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- transport ----------------------------------------------------------------------------------

    def _address(self) -> dict[str, Any]:
        params: dict[str, Any] = {"namespace": self.namespace, "groupId": self.group_id}
        if self.namespace_source is not None:
            params["namespaceSource"] = self.namespace_source
        return params

    async def call(
        self, path: str, params: Mapping[str, Any] | None = None, *, idempotent: bool, address: bool = True
    ) -> Any:
        """POST ``params`` (plus namespace and group when ``address``) to ``path``; the envelope's data."""
        body_params = {**(self._address() if address else {}), **(params or {})}
        body = json.dumps(body_params, separators=(",", ":")).encode()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self._backoff_wait,
            retry=tenacity.retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(path, body, idempotent=idempotent)
        except _Retry as retry:
            raise retry.error from None
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    def _backoff_wait(self, state: tenacity.RetryCallState) -> float:
        """``backoff`` doubled per attempt, times 0.5 to 1 at random: the jitter spreads retrying clients."""
        delay: float = self.backoff * 2 ** (state.attempt_number - 1)
        return delay * (0.5 + random.random() / 2)

    async def _attempt(self, path: str, body: bytes, *, idempotent: bool) -> Any:
        headers = {"content-type": "application/json", "accept": "application/json"}
        url = self.base_url + path
        if self._key is not None:
            headers.update(
                sign_request(
                    "POST",
                    url,
                    {"content-type": headers["content-type"]},
                    body,
                    self._key[0],
                    self._key[1],
                    datetime.now(UTC),
                    uuid.uuid4().hex,
                )
            )
        try:
            response = await self._http.post(path, content=body, headers=headers)
        except httpx.ConnectError as exc:
            # Never reached the scheduler: safe to repeat even a create.
            raise _Retry(UnavailableError(f"cannot connect to {self.base_url}: {exc}", path=path)) from exc
        except httpx.TransportError as exc:
            error = UnavailableError(f"{type(exc).__name__} talking to {self.base_url}: {exc}", path=path)
            if idempotent:
                raise _Retry(error) from exc
            raise error from exc
        return self._unwrap(path, response, idempotent=idempotent)

    def _unwrap(self, path: str, response: httpx.Response, *, idempotent: bool) -> Any:
        request_id = response.headers.get("x-request-id", "")
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or "code" not in envelope:
            error: OpenApiError = ServerError(
                f"HTTP {response.status_code}, not an OpenAPI answer: {response.text[:200]!r}",
                code=response.status_code,
                request_id=request_id,
                http_status=response.status_code,
                path=path,
            )
        elif envelope.get("success") is True and envelope.get("code") == 200:
            return envelope.get("data")
        else:
            code = int(envelope.get("code") or response.status_code)
            error = error_class(code)(
                str(envelope.get("message") or "(no message)"),
                code=code,
                request_id=str(envelope.get("requestId") or request_id),
                http_status=response.status_code,
                path=path,
            )
        if response.status_code >= 500 and idempotent:
            raise _Retry(error)
        raise error

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

    # -- workflows ----------------------------------------------------------------------------------

    async def execute_workflow(self, workflow_id: int, instance_parameters: str = "") -> int:
        params = {"workflowId": workflow_id, "instanceParameters": instance_parameters}
        return int(await self.call("/openapi/v1/workflow/execute", params, idempotent=False))

    async def enable_workflow(self, workflow_id: int) -> None:
        await self.call("/openapi/v1/workflow/enable", {"workflowId": workflow_id}, idempotent=True)

    async def disable_workflow(self, workflow_id: int) -> None:
        await self.call("/openapi/v1/workflow/disable", {"workflowId": workflow_id}, idempotent=True)

    async def delete_workflow(self, workflow_id: int) -> None:
        await self.call("/openapi/v1/workflow/delete", {"workflowId": workflow_id}, idempotent=True)

    # -- extensions: workflows ----------------------------------------------------------------------

    async def create_workflow(
        self, spec: WorkflowSpec | Mapping[str, Any], *, managed: bool = False, enabled: bool = True
    ) -> int:
        """CreateWorkflow (nodes and edges by job name or id); the new workflow's id."""
        params = dict(spec.to_create_params() if isinstance(spec, WorkflowSpec) else spec)
        params.update(managed=managed, status=1 if enabled else 0)
        return int(await self.call("/openapi/v1/workflow/create", params, idempotent=False))

    async def get_workflow(self, workflow_id: int) -> WorkflowInfo:
        data = await self.call("/openapi/v1/workflow/get", {"workflowId": workflow_id}, idempotent=True)
        return WorkflowInfo.from_wire(data)

    async def update_workflow(
        self, workflow_id: int, change: WorkflowSpec | Mapping[str, Any], *, managed: bool | None = None
    ) -> None:
        """UpdateWorkflow: a WorkflowSpec replaces every field; a mapping changes only those."""
        params = dict(change.to_create_params() if isinstance(change, WorkflowSpec) else change)
        params["workflowId"] = workflow_id
        if managed is not None:
            params["managed"] = managed
        await self.call("/openapi/v1/workflow/update", params, idempotent=True)

    async def list_workflows(
        self, *, name: str | None = None, page_num: int = 1, page_size: int = MAX_PAGE_SIZE
    ) -> tuple[int, list[WorkflowInfo]]:
        """One page of the group's workflows: (total, workflows)."""
        params: dict[str, Any] = {"pageNum": page_num, "pageSize": page_size}
        if name is not None:
            params["name"] = name
        data = await self.call("/openapi/v1/workflow/list", params, idempotent=True)
        return int(data["total"]), [WorkflowInfo.from_wire(item) for item in data.get("workflows", [])]

    async def all_workflows(self) -> list[WorkflowInfo]:
        found: list[WorkflowInfo] = []
        page_num = 1
        while True:
            total, items = await self.list_workflows(page_num=page_num)
            found.extend(items)
            if not items or len(found) >= total:
                return found
            page_num += 1

    async def find_workflow(self, name: str) -> WorkflowInfo | None:
        _, items = await self.list_workflows(name=name)
        return items[0] if items else None

    async def get_workflow_instance(self, wf_instance_id: int) -> WorkflowInstanceDetail:
        """A workflow instance with each node's status."""
        data = await self.call(
            "/openapi/v1/workflow/instance/get", {"wfInstanceId": wf_instance_id}, idempotent=True
        )
        return WorkflowInstanceDetail.model_validate(data)

    async def list_workflow_instances(
        self, workflow_id: int, *, page_num: int = 1, page_size: int = MAX_PAGE_SIZE
    ) -> WorkflowInstancePage:
        params = {"workflowId": workflow_id, "pageNum": page_num, "pageSize": page_size}
        data = await self.call("/openapi/v1/workflow/instance/list", params, idempotent=True)
        return WorkflowInstancePage.model_validate(data)

    async def rerun_workflow_node(self, wf_instance_id: int, job_id: int) -> int:
        """Re-run a failed node; the node's new instance id."""
        params = {"wfInstanceId": wf_instance_id, "jobId": job_id}
        return int(await self.call("/openapi/v1/workflow/instance/rerun", params, idempotent=False))

    async def rerun_workflow_instance(self, wf_instance_id: int) -> int:
        """Run a finished workflow instance again, whole (trigger type 4); the new wfInstanceId."""
        params = {"wfInstanceId": wf_instance_id}
        return int(await self.call("/openapi/v1/workflow/instance/retry", params, idempotent=False))

    async def stop_workflow_instance(self, wf_instance_id: int) -> None:
        await self.call(
            "/openapi/v1/workflow/instance/stop", {"wfInstanceId": wf_instance_id}, idempotent=True
        )

    # -- extensions: jobs and instances -------------------------------------------------------------

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
        params.update(_time_range(start_time, end_time))
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

    # -- extensions: re-runs and backfills ----------------------------------------------------------

    async def rerun_instance(self, job_id: int, instance_id: int) -> int:
        """RetryJobInstance: run a finished instance again (trigger type 4); the new instance's id.
        ConflictError while it is unfinished or the job runs maxConcurrency instances."""
        params = {"jobId": job_id, "jobInstanceId": instance_id}
        return int(await self.call("/openapi/v1/instance/retry", params, idempotent=False))

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
        params.update(_time_range(start_time, end_time))
        return AlarmPage.model_validate(await self.call("/openapi/v1/alarm/list", params, idempotent=True))

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

    # -- extensions: namespaces and groups ----------------------------------------------------------

    async def create_namespace(
        self, namespace: str | None = None, *, name: str = "", description: str = ""
    ) -> NamespaceInfo:
        params = {"namespace": namespace or self.namespace, "name": name, "description": description}
        data = await self.call("/openapi/v1/namespace/create", params, idempotent=False, address=False)
        return NamespaceInfo.model_validate(data)

    async def list_namespaces(self) -> list[NamespaceInfo]:
        data = await self.call("/openapi/v1/namespace/list", idempotent=True, address=False)
        return [NamespaceInfo.model_validate(item) for item in data]

    async def create_group(self, *, app_key: str | None = None, description: str = "") -> GroupInfo:
        """Create this client's group in its namespace."""
        params: dict[str, Any] = {"description": description}
        if app_key is not None:
            params["appKey"] = app_key
        return GroupInfo.model_validate(await self.call("/openapi/v1/group/create", params, idempotent=False))

    async def get_group(self) -> GroupInfo:
        return GroupInfo.model_validate(await self.call("/openapi/v1/group/get", idempotent=True))

    async def list_groups(self) -> list[GroupInfo]:
        data = await self.call(
            "/openapi/v1/group/list", {"namespace": self.namespace}, idempotent=True, address=False
        )
        return [GroupInfo.model_validate(item) for item in data]

    async def ensure_group(self) -> GroupInfo:
        """This client's group, creating its namespace and the group when missing (races are fine:
        whoever loses a create reads what the winner made)."""
        try:
            return await self.get_group()
        except NotFoundError:
            pass
        if self.namespace not in {n.namespace for n in await self.list_namespaces()}:
            with contextlib.suppress(ConflictError):
                await self.create_namespace()
        try:
            return await self.create_group()
        except ConflictError:
            return await self.get_group()

    # -- extensions: calendars and access keys ------------------------------------------------------

    async def put_calendar(self, name: str, days: Iterable[date], *, description: str = "") -> CalendarInfo:
        """Create or replace a calendar of this client's namespace."""
        params = {
            "namespace": self.namespace,
            "name": name,
            "days": [day.isoformat() for day in days],
            "description": description,
        }
        data = await self.call("/openapi/v1/calendar/put", params, idempotent=True, address=False)
        return CalendarInfo.model_validate(data)

    async def get_calendar(self, name: str) -> CalendarInfo:
        params = {"namespace": self.namespace, "name": name}
        data = await self.call("/openapi/v1/calendar/get", params, idempotent=True, address=False)
        return CalendarInfo.model_validate(data)

    async def list_calendars(self) -> list[CalendarInfo]:
        params = {"namespace": self.namespace}
        data = await self.call("/openapi/v1/calendar/list", params, idempotent=True, address=False)
        return [CalendarInfo.model_validate(item) for item in data]

    async def create_access_key(self) -> AccessKeyInfo:
        """A new key of this client's namespace; its secret is only in this answer."""
        params = {"namespace": self.namespace}
        data = await self.call("/openapi/v1/accesskey/create", params, idempotent=False, address=False)
        return AccessKeyInfo.model_validate(data)

    async def list_access_keys(self) -> list[AccessKeyInfo]:
        params = {"namespace": self.namespace}
        data = await self.call("/openapi/v1/accesskey/list", params, idempotent=True, address=False)
        return [AccessKeyInfo.model_validate(item) for item in data]

    async def delete_access_key(self, access_key_id: str) -> None:
        params = {"namespace": self.namespace, "accessKeyId": access_key_id}
        await self.call("/openapi/v1/accesskey/delete", params, idempotent=True, address=False)

    async def health(self) -> dict[str, Any]:
        """The scheduler's liveness answer (``{"status": "ok"}``); needs no signature."""
        data = await self.call("/health", idempotent=True, address=False)
        return dict(data)


def _time_range(start_time: str | datetime | None, end_time: str | datetime | None) -> dict[str, Any]:
    """``startTime`` / ``endTime``: an aware datetime as epoch ms, text as given, None left out."""
    params: dict[str, Any] = {}
    for wire, value in (("startTime", start_time), ("endTime", end_time)):
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError(f"{wire}={value!r}: must be timezone-aware")
            params[wire] = int(value.timestamp() * 1000)
        elif value is not None:
            params[wire] = value
    return params


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
