"""Backfill operations: plan (a dry run), create, read, list and stop the backfills of a job or a
workflow.

What the OpenAPI and the CLI call. A backfill is planned whole when it is created (its fire times are
stored, see ``store.BackfillStore``); the ``BackfillDriver`` loop then starts its instances. The
service checks a job's scope through the job service (a workflow's is checked by the caller, which
gives its timing as a JobSpec), and wakes the driver when there is work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sx.processors import JobSpec, TimeType
from sx.scheduler._errors import BadRequest, Conflict, NotFound
from sx.scheduler.jobs._backfill_plan import MAX_FIRE_TIMES, backfill_fire_times, check_backfillable
from sx.scheduler.jobs._lookup import in_scope, page_offset
from sx.scheduler.jobs._service import JobService
from sx.scheduler.jobs._timing import data_time
from sx.scheduler.store import (
    Backfill,
    BackfillFire,
    BackfillState,
    BackfillStore,
    Calendar,
    CalendarStore,
    InstanceStore,
    Job,
    NewBackfill,
    Page,
    Workflow,
    WorkflowStore,
)
from sx.scheduler.store import NotFoundError as StoreNotFoundError

__all__ = [
    "DEFAULT_MAX_FIRE_TIMES",
    "MAX_BACKFILL_CONCURRENCY",
    "BackfillPlan",
    "BackfillService",
    "BackfillServiceStore",
]

DEFAULT_MAX_FIRE_TIMES = 10_000
MAX_BACKFILL_CONCURRENCY = 1000


class BackfillServiceStore(BackfillStore, InstanceStore, CalendarStore, WorkflowStore, Protocol):
    """What the backfill service reads and writes: backfills, the past instances (to skip the
    successful ones) and the calendar a job names."""


@dataclass(frozen=True, slots=True)
class BackfillPlan:
    """The fire times a backfill runs (schedule times, in order) and the ones it skips."""

    fire_times: list[datetime]
    skipped: frozenset[datetime]


SuccessfulTimes = Callable[[datetime, datetime], Awaitable[set[datetime]]]
"""The data times in a range that already have a successful instance."""


class BackfillService:
    """Backfills of the jobs ``jobs`` serves, and of workflows; ``wake_driver`` tells the driver a
    backfill was created."""

    def __init__(
        self, store: BackfillServiceStore, *, jobs: JobService, wake_driver: Callable[[], None]
    ) -> None:
        self.store = store
        self.jobs = jobs
        self._wake_driver = wake_driver

    async def _walk(
        self,
        spec: JobSpec,
        start: datetime,
        end: datetime,
        *,
        calendar: Calendar | None,
        anchor: datetime | None,
        successful: SuccessfulTimes | None,
        max_fire_times: int,
    ) -> BackfillPlan:
        if start > end:
            raise BadRequest("endDate", end.isoformat(), "must not be before startDate")
        if not 1 <= max_fire_times <= MAX_FIRE_TIMES:
            raise BadRequest("maxFireTimes", max_fire_times, f"must be 1 to {MAX_FIRE_TIMES}")
        if data_time(spec, self.jobs.clock.now()) < end:
            raise BadRequest(
                "endDate", end.isoformat(), "is in the future: a backfill runs past fire times only"
            )
        times = backfill_fire_times(
            spec,
            start,
            end,
            default_tz=self.jobs.default_tz,
            calendar=calendar,
            anchor=anchor,
            limit=max_fire_times,
        )
        skipped: frozenset[datetime] = frozenset()
        if successful is not None and times:
            done = await successful(data_time(spec, times[0]), data_time(spec, times[-1]))
            skipped = frozenset(t for t in times if data_time(spec, t) in done)
        return BackfillPlan(fire_times=times, skipped=skipped)

    async def _plan_job(
        self,
        namespace: str,
        group_id: str,
        job_id: int,
        start: datetime,
        end: datetime,
        skip_successful: bool,
        max_fire_times: int,
    ) -> tuple[Job, BackfillPlan]:
        job = await self.jobs.get_job(namespace, group_id, job_id)
        check_backfillable(job_id, job.spec)
        calendar: Calendar | None = None
        if job.spec.calendar:
            # As the trigger engine does: a job bound to a missing calendar fires on no day.
            calendar = await self.store.get_calendar(job.namespace, job.spec.calendar) or Calendar(
                namespace=job.namespace, name=job.spec.calendar, days=frozenset()
            )

        async def successful(low: datetime, high: datetime) -> set[datetime]:
            return await self.store.successful_data_times(job.id, low, high)

        plan = await self._walk(
            job.spec,
            start,
            end,
            calendar=calendar,
            anchor=job.next_fire_time,
            successful=successful if skip_successful else None,
            max_fire_times=max_fire_times,
        )
        return job, plan

    async def plan(
        self,
        namespace: str,
        group_id: str,
        job_id: int,
        start: datetime,
        end: datetime,
        *,
        skip_successful: bool = False,
        max_fire_times: int = DEFAULT_MAX_FIRE_TIMES,
    ) -> BackfillPlan:
        """The fire times of the job whose data time lies in ``[start, end]`` (nothing is stored)."""
        _, plan = await self._plan_job(
            namespace, group_id, job_id, start, end, skip_successful, max_fire_times
        )
        return plan

    async def create(
        self,
        namespace: str,
        group_id: str,
        job_id: int,
        start: datetime,
        end: datetime,
        *,
        concurrency: int = 1,
        skip_successful: bool = False,
        max_fire_times: int = DEFAULT_MAX_FIRE_TIMES,
        instance_parameters: str = "",
    ) -> Backfill:
        """Plan and store a backfill; the driver starts its instances, ``concurrency`` at a time."""
        _check_concurrency(concurrency)
        job, plan = await self._plan_job(
            namespace, group_id, job_id, start, end, skip_successful, max_fire_times
        )
        return await self._store(
            NewBackfill(
                job_id=job.id,
                namespace=job.namespace,
                group_id=job.group_id,
                start_time=start,
                end_time=end,
                concurrency=concurrency,
                skip_successful=skip_successful,
                fire_times=tuple(plan.fire_times),
                skipped=plan.skipped,
                instance_parameters=instance_parameters,
            )
        )

    async def _plan_workflow(
        self,
        workflow: Workflow,
        timing: JobSpec,
        start: datetime,
        end: datetime,
        skip_successful: bool,
        max_fire_times: int,
    ) -> BackfillPlan:
        if workflow.definition.schedule.time_type not in (TimeType.CRON, TimeType.FIXED_RATE):
            kind = workflow.definition.schedule.time_type.name.lower()
            message = (
                f"workflow {workflow.id} is triggered by {kind}: only cron and fix_rate ones have past fires"
            )
            raise BadRequest("workflowId", workflow.id, message)

        async def successful(low: datetime, high: datetime) -> set[datetime]:
            return await self.store.successful_workflow_times(workflow.id, low, high)

        return await self._walk(
            timing,
            start,
            end,
            calendar=None,
            anchor=workflow.next_fire_time,
            successful=successful if skip_successful else None,
            max_fire_times=max_fire_times,
        )

    async def plan_workflow(
        self,
        workflow: Workflow,
        timing: JobSpec,
        start: datetime,
        end: datetime,
        *,
        skip_successful: bool = False,
        max_fire_times: int = DEFAULT_MAX_FIRE_TIMES,
    ) -> BackfillPlan:
        """The fire times of ``workflow`` (found in the caller's scope; ``timing`` is its schedule and
        zone as a JobSpec) in ``[start, end]``; workflows have no dataOffset. Nothing is stored."""
        return await self._plan_workflow(workflow, timing, start, end, skip_successful, max_fire_times)

    async def create_workflow(
        self,
        workflow: Workflow,
        timing: JobSpec,
        start: datetime,
        end: datetime,
        *,
        concurrency: int = 1,
        skip_successful: bool = False,
        max_fire_times: int = DEFAULT_MAX_FIRE_TIMES,
        instance_parameters: str = "",
    ) -> Backfill:
        """Plan and store a backfill of ``workflow``: a workflow instance per fire time, each running
        its nodes for the data time of its fire."""
        _check_concurrency(concurrency)
        plan = await self._plan_workflow(workflow, timing, start, end, skip_successful, max_fire_times)
        return await self._store(
            NewBackfill(
                job_id=None,
                workflow_id=workflow.id,
                namespace=workflow.namespace,
                group_id=workflow.group_id,
                start_time=start,
                end_time=end,
                concurrency=concurrency,
                skip_successful=skip_successful,
                fire_times=tuple(plan.fire_times),
                skipped=plan.skipped,
                instance_parameters=instance_parameters,
            )
        )

    async def _store(self, new: NewBackfill) -> Backfill:
        try:
            backfill = await self.store.create_backfill(new)
        except StoreNotFoundError as exc:
            field, value = (
                ("workflowId", new.workflow_id) if new.workflow_id is not None else ("jobId", new.job_id)
            )
            raise NotFound(f"{field}={value}: not found", field=field, value=value) from exc
        self._wake_driver()
        return backfill

    async def get(self, namespace: str, group_id: str, backfill_id: int) -> Backfill:
        backfill = await self.store.get_backfill(backfill_id)
        if backfill is None or not in_scope(backfill, namespace, group_id):
            raise NotFound(
                f"backfillId={backfill_id}: no such backfill in {namespace}/{group_id}",
                field="backfillId",
                value=backfill_id,
            )
        return backfill

    async def list(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Backfill]:
        """A group's backfills (one job's when ``job_id`` is given), newest first."""
        if job_id is not None:
            await self.jobs.get_job(namespace, group_id, job_id)
        return await self.store.list_backfills(
            namespace, group_id, job_id=job_id, offset=page_offset(page_num, page_size), limit=page_size
        )

    async def fires(
        self, namespace: str, group_id: str, backfill_id: int, *, page_num: int = 1, page_size: int = 100
    ) -> Page[BackfillFire]:
        """The backfill's fire times in schedule order, with their state and instance."""
        await self.get(namespace, group_id, backfill_id)
        return await self.store.list_backfill_fires(
            backfill_id, offset=page_offset(page_num, page_size), limit=page_size
        )

    async def stop(self, namespace: str, group_id: str, backfill_id: int) -> Backfill:
        """Start no more of its fire times (the instances running go on to their end). Conflict when
        it is not running."""
        backfill = await self.get(namespace, group_id, backfill_id)
        stopped = await self.store.set_backfill_state(
            backfill_id, BackfillState.STOPPED, only_if=BackfillState.RUNNING
        )
        if stopped is None:
            current = await self.store.get_backfill(backfill_id) or backfill
            raise Conflict(
                f"backfillId={backfill_id}: already {current.state.value}",
                field="backfillId",
                value=backfill_id,
            )
        return stopped


def _check_concurrency(concurrency: int) -> None:
    if not 1 <= concurrency <= MAX_BACKFILL_CONCURRENCY:
        raise BadRequest("concurrency", concurrency, f"must be 1 to {MAX_BACKFILL_CONCURRENCY}")
