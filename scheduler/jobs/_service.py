"""Job and instance operations: what the OpenAPI, the CLI and job sync call.

The service checks ownership (a job belongs to one namespace and group), keeps a job's persisted next
fire time in step with its schedule, applies maxConcurrency to API triggers, and tells the trigger
engine and the dispatcher about changes through ``SchedulerHooks``. An instance it finishes itself
(stopping one no worker had yet) is announced on ``InstanceEvents``, as the dispatcher announces the
ones it finishes. Its errors are ``sx.scheduler._errors``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sx.processors import DefinitionError, ExecuteMode, InstanceStatus, JobSpec, TimeType, TriggerType
from sx.processors.engine import ACTIVE_INSTANCE_STATUSES, killed_result
from sx.scheduler._clock import Clock
from sx.scheduler._errors import BadRequest, Conflict, NotFound
from sx.scheduler.jobs._events import InstanceEvents
from sx.scheduler.jobs._hooks import SchedulerHooks
from sx.scheduler.jobs._lookup import (
    found_by_name,
    in_scope,
    name_taken,
    page_offset,
    page_or_named,
    require_group,
)
from sx.scheduler.jobs._timing import next_fire_time
from sx.scheduler.jobs._triggers import rejected_result
from sx.scheduler.store import (
    AccessStore,
    Calendar,
    CalendarStore,
    DuplicateError,
    Instance,
    InstanceChange,
    InstanceStore,
    Job,
    JobStore,
    NewInstance,
    Page,
)
from sx.scheduler.store import NotFoundError as StoreNotFoundError

__all__ = ["JobService", "JobServiceStore", "job_fields", "parse_job_spec", "zone_or_default"]


class JobServiceStore(AccessStore, JobStore, InstanceStore, CalendarStore, Protocol):
    """What the job service reads and writes: jobs, their instances, the calendars jobs name, and the
    groups they belong to."""


log = logging.getLogger("sx.scheduler.service")

NOT_DISPATCHED_STATUSES = (InstanceStatus.WAITING, InstanceStatus.READY)
# Fields of a request that address a job rather than describe it.
_ADDRESS_FIELDS = frozenset({"namespace", "namespaceSource", "groupId", "jobId", "managed"})


def parse_job_spec(params: Mapping[str, Any]) -> JobSpec:
    """Build a JobSpec from CreateJob wire parameters; every failure is a BadRequest naming a field."""
    fields = job_fields(params)
    try:
        return JobSpec.from_create_params(fields)
    except DefinitionError as exc:
        raise BadRequest.of(exc) from exc
    except (ValueError, TypeError) as exc:
        # A parse failure the spec did not attribute to a field is still the caller's input.
        raise BadRequest("job", "", f"invalid job definition: {exc}") from exc


def job_fields(params: Mapping[str, Any]) -> dict[str, Any]:
    """The job-describing part of a request's parameters."""
    return {k: v for k, v in params.items() if k not in _ADDRESS_FIELDS}


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def zone_or_default(spec: JobSpec, default_tz: tzinfo) -> tzinfo:
    """The zone a job's times are shown and computed in: its own, else ``default_tz`` (also when its
    own is unknown, with a warning)."""
    if spec.time_zone:
        try:
            return _zone(spec.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("job %s has an unknown time zone %r; using the default", spec.name, spec.time_zone)
    return default_tz


class JobService:
    """Job and instance operations over a Store.

    ``hooks`` reach the trigger engine and the dispatcher; ``events`` hears of the instances this
    service finishes itself (none listens when not given); ``history_keep`` is how many finished
    instances each job keeps (0 keeps all).
    """

    def __init__(
        self,
        store: JobServiceStore,
        *,
        clock: Clock,
        default_tz: tzinfo,
        hooks: SchedulerHooks,
        events: InstanceEvents | None = None,
        history_keep: int = 300,
    ) -> None:
        self.store = store
        self.clock = clock
        self.default_tz = default_tz
        self.hooks = hooks
        self.events = events if events is not None else InstanceEvents()
        self.history_keep = history_keep

    # -- helpers ----------------------------------------------------------------------------------
    def time_zone(self, spec: JobSpec) -> tzinfo:
        """The zone a job's times are shown and computed in: its own, else the scheduler's default."""
        return zone_or_default(spec, self.default_tz)

    async def _next_fire(self, namespace: str, spec: JobSpec) -> datetime | None:
        calendar: Calendar | None = None
        if spec.calendar:
            calendar = await self.store.get_calendar(namespace, spec.calendar)
            if calendar is None:
                raise BadRequest("calendar", spec.calendar, f"no such calendar in namespace {namespace!r}")
        try:
            return next_fire_time(spec, self.clock.now(), default_tz=self.time_zone(spec), calendar=calendar)
        except DefinitionError as exc:
            raise BadRequest.of(exc) from exc

    # -- jobs ---------------------------------------------------------------------------------------
    async def create_job(
        self,
        namespace: str,
        group_id: str,
        spec: JobSpec,
        *,
        enabled: bool = True,
        managed: bool = False,
        namespace_source: str | None = None,
    ) -> Job:
        """Create a job in an existing namespace and group; Conflict when the group has that name."""
        await require_group(self.store, namespace, group_id)
        next_fire = await self._next_fire(namespace, spec) if enabled else None
        try:
            job = await self.store.create_job(
                namespace=namespace,
                group_id=group_id,
                spec=spec,
                enabled=enabled,
                managed=managed,
                next_fire_time=next_fire,
                namespace_source=namespace_source,
            )
        except DuplicateError as exc:
            raise name_taken("job", spec.name, group_id) from exc
        log.info("job %d %r created in %s/%s", job.id, spec.name, namespace, group_id)
        if next_fire is not None:
            self.hooks.wake_triggers()
        return job

    async def get_job(self, namespace: str | None, group_id: str | None, job_id: int) -> Job:
        """The job, if it exists in that namespace and group (None skips that check)."""
        job = await self.store.get_job(job_id)
        if job is None or not in_scope(job, namespace, group_id):
            where = f" in namespace {namespace!r}" if namespace is not None else ""
            where += f", group {group_id!r}" if group_id is not None else ""
            raise NotFound(f"jobId={job_id}: no such job{where}", field="jobId", value=job_id)
        return job

    async def find_job(self, namespace: str, group_id: str, name: str) -> Job:
        return found_by_name(await self.store.find_job(namespace, group_id, name), "job", name, group_id)

    async def list_jobs(
        self,
        namespace: str,
        group_id: str,
        *,
        name: str | None = None,
        name_contains: str | None = None,
        enabled: bool | None = None,
        time_type: TimeType | None = None,
        execute_mode: ExecuteMode | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Job]:
        """A page of a group's jobs by id; ``name`` matches exactly, ``name_contains`` a substring, and
        ``enabled``, ``time_type`` and ``execute_mode`` (when given) must match too (paged in the store)."""
        await require_group(self.store, namespace, group_id)

        async def page(offset: int, limit: int) -> Page[Job]:
            return await self.store.list_jobs(
                namespace,
                group_id,
                name_contains=name_contains or None,
                enabled=enabled,
                time_type=time_type,
                execute_mode=execute_mode,
                offset=offset,
                limit=limit,
            )

        return await page_or_named(
            name,
            find=lambda found: self.store.find_job(namespace, group_id, found),
            page=page,
            page_num=page_num,
            page_size=page_size,
        )

    async def update_job(
        self,
        namespace: str,
        group_id: str,
        job_id: int,
        params: Mapping[str, Any],
        *,
        managed: bool | None = None,
    ) -> Job:
        """Partial update from wire parameters: absent fields keep their value."""
        job = await self.get_job(namespace, group_id, job_id)
        fields = job_fields(params)
        try:
            spec = job.spec.updated(fields) if fields else job.spec
        except DefinitionError as exc:
            raise BadRequest.of(exc) from exc
        except (ValueError, TypeError) as exc:
            raise BadRequest("job", "", f"invalid job definition: {exc}") from exc
        timing_changed = (
            spec.schedule != job.spec.schedule
            or spec.calendar != job.spec.calendar
            or spec.time_zone != job.spec.time_zone
        )
        next_fire: datetime | None = None
        if job.enabled and timing_changed:
            next_fire = await self._next_fire(namespace, spec)
        try:
            updated = await self.store.update_job(
                job_id,
                spec=spec if spec != job.spec else None,
                managed=managed,
                next_fire_time=next_fire,
                clear_next_fire_time=job.enabled and timing_changed and next_fire is None,
            )
        except DuplicateError as exc:
            raise name_taken("job", spec.name, group_id) from exc
        except StoreNotFoundError as exc:
            raise NotFound(f"jobId={job_id}: no such job", field="jobId", value=job_id) from exc
        if job.enabled and timing_changed:
            self.hooks.wake_triggers()
        return updated

    async def delete_job(self, namespace: str, group_id: str, job_id: int) -> None:
        """Stop the job's running instances, then delete it with its history."""
        job = await self.get_job(namespace, group_id, job_id)
        if job.enabled:
            # Disable first so no trigger fires while running instances are being stopped.
            await self.store.update_job(job_id, enabled=False, clear_next_fire_time=True)
        active = await self.store.list_instances(job_id, statuses=ACTIVE_INSTANCE_STATUSES, limit=10_000)
        for instance in active.items:
            try:
                await self._stop(instance, f"job {job_id} deleted")
            except Conflict:
                # Its workers are unreachable; deleting the job must not wait for them.
                log.warning("instance %d of deleted job %d could not be stopped", instance.id, job_id)
        await self.store.delete_job(job_id)
        log.info("job %d %r deleted from %s/%s", job_id, job.name, namespace, group_id)
        self.hooks.wake_triggers()

    async def set_enabled(self, namespace: str, group_id: str, job_id: int, enabled: bool) -> Job:
        """Enable (schedule from now) or disable (never fired by time) a job."""
        job = await self.get_job(namespace, group_id, job_id)
        if enabled:
            next_fire = await self._next_fire(namespace, job.spec)
            job = await self.store.update_job(
                job_id, enabled=True, next_fire_time=next_fire, clear_next_fire_time=next_fire is None
            )
        else:
            job = await self.store.update_job(job_id, enabled=False, clear_next_fire_time=True)
        self.hooks.wake_triggers()
        return job

    # -- instances ----------------------------------------------------------------------------------
    async def execute_job(
        self,
        namespace: str,
        group_id: str,
        job_id: int,
        instance_parameters: str = "",
        *,
        trigger_type: TriggerType = TriggerType.API,
    ) -> Instance:
        """Create an instance now: WAITING and handed to dispatch, or REJECTED (with the reason in its
        result) when maxConcurrency instances are already active."""
        job = await self.get_job(namespace, group_id, job_id)
        now = self.clock.now()
        limit = job.spec.max_concurrency
        rejected = not await self.store.active_instances_below(job_id, limit)
        instance = await self.store.create_instance(
            NewInstance(
                job_id=job_id,
                namespace=job.namespace,
                group_id=job.group_id,
                status=InstanceStatus.REJECTED if rejected else InstanceStatus.WAITING,
                trigger_type=trigger_type,
                time_type=job.spec.schedule.time_type,
                schedule_time=now,
                data_time=now + timedelta(seconds=job.spec.data_offset),
                instance_parameters=instance_parameters,
                result=rejected_result(limit) if rejected else "",
            )
        )
        if rejected:
            if self.history_keep > 0:  # 0 keeps the whole history
                await self.store.prune_instances(job_id, keep=self.history_keep)
        else:
            await self.hooks.instance_created(instance)
        return instance

    async def get_instance(
        self, namespace: str | None, group_id: str | None, job_id: int, instance_id: int
    ) -> Instance:
        await self.get_job(namespace, group_id, job_id)
        instance = await self.store.get_instance(instance_id)
        if instance is None or instance.job_id != job_id:
            raise NotFound(
                f"instanceId={instance_id}: no such instance of job {job_id}",
                field="instanceId",
                value=instance_id,
            )
        return instance

    async def recent_instances(
        self, namespace: str | None, group_id: str | None, job_id: int, *, limit: int = 10
    ) -> list[Instance]:
        """The job's newest instances (GetJobInstanceList: 10)."""
        await self.get_job(namespace, group_id, job_id)
        return (await self.store.list_instances(job_id, limit=limit)).items

    async def list_instances(
        self,
        namespace: str,
        group_id: str,
        job_id: int,
        *,
        statuses: Sequence[InstanceStatus] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Instance]:
        await self.get_job(namespace, group_id, job_id)
        return await self.store.list_instances(
            job_id,
            statuses=statuses or None,
            since=since,
            until=until,
            offset=page_offset(page_num, page_size),
            limit=page_size,
        )

    async def list_group_instances(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        statuses: Sequence[InstanceStatus] | None = None,
        trigger_types: Sequence[TriggerType] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Instance]:
        """A page of a group's instances across its jobs (or of ``job_id``'s), newest first."""
        await require_group(self.store, namespace, group_id)
        if job_id is not None:
            await self.get_job(namespace, group_id, job_id)
        return await self.store.list_group_instances(
            namespace,
            group_id,
            job_id=job_id,
            statuses=statuses or None,
            trigger_types=trigger_types or None,
            since=since,
            until=until,
            offset=page_offset(page_num, page_size),
            limit=page_size,
        )

    async def stop_instance(self, namespace: str, group_id: str, job_id: int, instance_id: int) -> Instance:
        """Stop an unfinished instance. One not yet on a worker fails at once; a running one is killed
        by its workers (the dispatcher records the outcome). Conflict when it already finished."""
        instance = await self.get_instance(namespace, group_id, job_id, instance_id)
        if instance.status.finished:
            raise Conflict(
                f"instanceId={instance_id}: already finished (status {int(instance.status)})",
                field="instanceId",
                value=instance_id,
            )
        return await self._stop(instance, "stopped through the OpenAPI")

    async def _stop(self, instance: Instance, reason: str) -> Instance:
        asked = await self.hooks.stop_instance(instance, reason)
        current = await self.store.get_instance(instance.id) or instance
        if not asked and current.status in NOT_DISPATCHED_STATUSES:
            updated = await self.store.update_instance(
                instance.id,
                InstanceChange(
                    status=InstanceStatus.FAILED, end_time=self.clock.now(), result=killed_result(reason)
                ),
                only_if_status=NOT_DISPATCHED_STATUSES,
            )
            if updated is not None:
                # The same ending as an instance finished by the dispatcher (workflow, re-arm, history).
                await self.events.finished(updated)
            current = updated or await self.store.get_instance(instance.id) or current
        elif not asked and current.status == InstanceStatus.RUNNING:
            raise Conflict(
                f"instanceId={instance.id}: no worker running it could be reached",
                field="instanceId",
                value=instance.id,
            )
        return current
