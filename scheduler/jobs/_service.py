"""Job and instance operations: what the OpenAPI, the CLI and job sync call.

The service checks ownership (a job belongs to one namespace and group), keeps a job's persisted next
fire time in step with its schedule, applies maxConcurrency to API triggers, and tells the trigger
engine and the dispatcher about changes through ``SchedulerHooks``. Its errors carry an error code
and an HTTP status that the API puts in the response envelope:

    SxError
    └── ServiceError
        ├── BadRequest      400  a missing or malformed parameter (names the field and value)
        ├── Unauthorized    401  a missing, wrong, expired or replayed signature
        ├── Forbidden       403  an access key used outside its namespace
        ├── NotFound        404  an unknown namespace, group, job, instance, calendar, workflow
        └── Conflict        409  a duplicate name, or an operation the current state forbids
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sx.processors._enums import ACTIVE_INSTANCE_STATUSES, InstanceStatus, TriggerType
from sx.processors._errors import DefinitionError, SxError
from sx.processors._invoke import killed_result
from sx.processors._spec import JobSpec
from sx.scheduler._clock import Clock
from sx.scheduler.jobs._triggers import rejected_result
from sx.scheduler.store._store import (
    Calendar,
    DuplicateError,
    Group,
    Instance,
    InstanceChange,
    Job,
    Namespace,
    NewInstance,
    Page,
    Store,
)
from sx.scheduler.store._store import NotFoundError as StoreNotFoundError

if TYPE_CHECKING:
    from sx.scheduler.workflows._engine import WorkflowEngine

log = logging.getLogger("sx.scheduler.service")

NOT_DISPATCHED_STATUSES = (InstanceStatus.WAITING, InstanceStatus.READY)
WORKFLOW_PARAMETERS_MAX_BYTES = 1000
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
_CALENDAR_NAME_PATTERN = re.compile(r"^[^\x00-\x1f]{1,100}$")
# Fields of a request that address a job rather than describe it.
_ADDRESS_FIELDS = frozenset({"namespace", "namespaceSource", "groupId", "jobId", "managed"})


class ServiceError(SxError):
    """An operation refused; ``code`` is the envelope's error code, ``http_status`` the HTTP status."""

    code: ClassVar[int] = 500
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        self.message = message
        self.field = field
        self.value = value
        super().__init__(message)


class BadRequest(ServiceError):
    code = 400
    http_status = 400

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(f"{field}={_show(value)}: {message}", field=field, value=value)


class Unauthorized(ServiceError):
    code = 401
    http_status = 401


class Forbidden(ServiceError):
    code = 403
    http_status = 403


class NotFound(ServiceError):
    code = 404
    http_status = 404


class Conflict(ServiceError):
    code = 409
    http_status = 409


def _show(value: object) -> str:
    """A value for an error message, cut so a huge input does not make a huge message."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class SchedulerHooks(Protocol):
    """How the service tells the rest of the scheduler about changes (trigger engine, dispatcher)."""

    def wake_triggers(self) -> None:
        """A job's next fire time changed: the trigger engine recomputes when to wake."""

    async def instance_created(self, instance: Instance) -> None:
        """A WAITING instance was created outside the trigger engine: hand it to dispatch."""

    async def stop_instance(self, instance: Instance, reason: str) -> bool:
        """Ask the workers running ``instance`` to kill it; False when none could be asked."""

    async def instance_finished(self, instance: Instance) -> None:
        """The service finished ``instance`` itself (in the store): run what follows an instance's end
        (workflow advance, second_delay re-arm, history pruning), as for one finished by a worker."""


class NoHooks:
    """Hooks that do nothing: a scheduler with no trigger engine or dispatcher (tools, benchmarks)."""

    def wake_triggers(self) -> None:
        return None

    async def instance_created(self, instance: Instance) -> None:
        return None

    async def stop_instance(self, instance: Instance, reason: str) -> bool:
        return False

    async def instance_finished(self, instance: Instance) -> None:
        return None


def parse_job_spec(params: Mapping[str, Any]) -> JobSpec:
    """Build a JobSpec from CreateJob wire parameters; every failure is a BadRequest naming a field."""
    fields = job_fields(params)
    try:
        return JobSpec.from_create_params(fields)
    except DefinitionError as exc:
        raise BadRequest(exc.field, exc.value, exc.message) from exc
    except (ValueError, TypeError) as exc:
        # A parse failure the spec did not attribute to a field is still the caller's input.
        raise BadRequest("job", "", f"invalid job definition: {exc}") from exc


def job_fields(params: Mapping[str, Any]) -> dict[str, Any]:
    """The job-describing part of a request's parameters."""
    return {k: v for k, v in params.items() if k not in _ADDRESS_FIELDS}


def check_identifier(field: str, value: str) -> str:
    """Namespace and group ids: 1..64 characters, letters, digits and ``_ . : -``."""
    if not _ID_PATTERN.match(value):
        raise BadRequest(
            field, value, "must be 1 to 64 letters, digits or _ . : - (starting with a letter or digit)"
        )
    return value


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


class JobService:
    """Job, instance, namespace, group and calendar operations over a Store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        default_tz: tzinfo,
        hooks: SchedulerHooks,
        history_keep: int = 300,
    ) -> None:
        self.store = store
        self.clock = clock
        self.default_tz = default_tz
        self.hooks = hooks
        self.history_keep = history_keep
        self.workflows: WorkflowEngine | None = None
        """The workflow engine (sx.scheduler.workflows._engine), attached by the scheduler's composition."""

    # -- helpers ----------------------------------------------------------------------------------
    def time_zone(self, spec: JobSpec) -> tzinfo:
        """The zone a job's times are shown and computed in: its own, else the scheduler's default."""
        if spec.time_zone:
            try:
                return _zone(spec.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                log.warning(
                    "job %s has an unknown time zone %r; using the default", spec.name, spec.time_zone
                )
        return self.default_tz

    async def _next_fire(self, namespace: str, spec: JobSpec) -> datetime | None:
        from sx.scheduler.jobs._timing import next_fire_time  # the trigger engine's module

        calendar: Calendar | None = None
        if spec.calendar:
            calendar = await self.store.get_calendar(namespace, spec.calendar)
            if calendar is None:
                raise BadRequest("calendar", spec.calendar, f"no such calendar in namespace {namespace!r}")
        try:
            return next_fire_time(spec, self.clock.now(), default_tz=self.time_zone(spec), calendar=calendar)
        except DefinitionError as exc:
            raise BadRequest(exc.field, exc.value, exc.message) from exc

    async def _require_namespace(self, namespace: str) -> Namespace:
        found = await self.store.get_namespace(namespace)
        if found is None:
            raise NotFound(f"namespace={namespace!r}: no such namespace", field="namespace", value=namespace)
        return found

    async def _require_group(self, namespace: str, group_id: str) -> Group:
        found, group = await self.store.get_namespace_and_group(namespace, group_id)
        if found is None:
            raise NotFound(f"namespace={namespace!r}: no such namespace", field="namespace", value=namespace)
        if group is None:
            raise NotFound(
                f"groupId={group_id!r}: no such group in namespace {namespace!r}",
                field="groupId",
                value=group_id,
            )
        return group

    # -- namespaces, groups, calendars ---------------------------------------------------------------
    async def create_namespace(
        self, namespace_id: str, *, name: str = "", description: str = ""
    ) -> Namespace:
        check_identifier("namespace", namespace_id)
        try:
            return await self.store.create_namespace(
                Namespace(id=namespace_id, name=name or namespace_id, description=description)
            )
        except DuplicateError as exc:
            raise Conflict(f"namespace={namespace_id!r}: already exists", field="namespace") from exc

    async def list_namespaces(self) -> list[Namespace]:
        return await self.store.list_namespaces()

    async def create_group(
        self, namespace: str, group_id: str, *, app_key: str | None = None, description: str = ""
    ) -> Group:
        """Create a group; its app key (what workers present to join) is generated unless given."""
        check_identifier("groupId", group_id)
        await self._require_namespace(namespace)
        if app_key is not None and not 8 <= len(app_key) <= 128:
            raise BadRequest("appKey", app_key, "must be 8 to 128 characters")
        group = Group(
            namespace=namespace,
            group_id=group_id,
            app_key=app_key or secrets.token_urlsafe(24),
            description=description,
        )
        try:
            return await self.store.create_group(group)
        except DuplicateError as exc:
            raise Conflict(f"groupId={group_id!r}: already exists in namespace {namespace!r}") from exc

    async def get_group(self, namespace: str, group_id: str) -> Group:
        return await self._require_group(namespace, group_id)

    async def list_groups(self, namespace: str) -> list[Group]:
        await self._require_namespace(namespace)
        return await self.store.list_groups(namespace)

    async def put_calendar(
        self, namespace: str, name: str, days: Iterable[date], *, description: str = ""
    ) -> Calendar:
        """Create or replace a calendar; jobs using it get their next fire time recomputed."""
        if not _CALENDAR_NAME_PATTERN.match(name):
            raise BadRequest("name", name, "must be 1 to 100 printable characters")
        await self._require_namespace(namespace)
        calendar = await self.store.put_calendar(
            Calendar(namespace=namespace, name=name, days=frozenset(days), description=description)
        )
        self.hooks.wake_triggers()
        return calendar

    async def get_calendar(self, namespace: str, name: str) -> Calendar:
        calendar = await self.store.get_calendar(namespace, name)
        if calendar is None:
            raise NotFound(
                f"name={name!r}: no such calendar in namespace {namespace!r}", field="name", value=name
            )
        return calendar

    async def list_calendars(self, namespace: str) -> list[Calendar]:
        return await self.store.list_calendars(namespace)

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
        await self._require_group(namespace, group_id)
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
            raise Conflict(
                f"name={spec.name!r}: a job of that name exists in group {group_id!r}",
                field="name",
                value=spec.name,
            ) from exc
        log.info("job %d %r created in %s/%s", job.id, spec.name, namespace, group_id)
        if next_fire is not None:
            self.hooks.wake_triggers()
        return job

    async def get_job(self, namespace: str | None, group_id: str | None, job_id: int) -> Job:
        """The job, if it exists in that namespace and group (None skips that check)."""
        job = await self.store.get_job(job_id)
        if (
            job is None
            or (namespace is not None and job.namespace != namespace)
            or (group_id is not None and job.group_id != group_id)
        ):
            where = f" in namespace {namespace!r}" if namespace is not None else ""
            where += f", group {group_id!r}" if group_id is not None else ""
            raise NotFound(f"jobId={job_id}: no such job{where}", field="jobId", value=job_id)
        return job

    async def find_job(self, namespace: str, group_id: str, name: str) -> Job:
        job = await self.store.find_job(namespace, group_id, name)
        if job is None:
            raise NotFound(f"name={name!r}: no such job in group {group_id!r}", field="name", value=name)
        return job

    async def list_jobs(
        self,
        namespace: str,
        group_id: str,
        *,
        name: str | None = None,
        name_contains: str | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Job]:
        """A page of a group's jobs by id; ``name`` matches exactly, ``name_contains`` a substring."""
        await self._require_group(namespace, group_id)
        if name is not None:
            job = await self.store.find_job(namespace, group_id, name)
            items = [job] if job is not None else []
            return Page(items=items if page_num == 1 else [], total=len(items))
        return await self.store.list_jobs(
            namespace,
            group_id,
            name_contains=name_contains or None,
            offset=(page_num - 1) * page_size,
            limit=page_size,
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
            raise BadRequest(exc.field, exc.value, exc.message) from exc
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
            raise Conflict(
                f"name={spec.name!r}: a job of that name exists in group {group_id!r}",
                field="name",
                value=spec.name,
            ) from exc
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
        active = await self.store.count_active_instances(job_id)
        limit = job.spec.max_concurrency
        rejected = active >= limit
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
            offset=(page_num - 1) * page_size,
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
                await self.hooks.instance_finished(updated)
            current = updated or await self.store.get_instance(instance.id) or current
        elif not asked and current.status == InstanceStatus.RUNNING:
            raise Conflict(
                f"instanceId={instance.id}: no worker running it could be reached",
                field="instanceId",
                value=instance.id,
            )
        return current

    # -- workflows (filled in when workflows exist) ---------------------------------------------------
    async def execute_workflow(
        self, namespace: str, group_id: str, workflow_id: int, instance_parameters: str = ""
    ) -> int:
        """Trigger a workflow; returns the workflow instance id."""
        if len(instance_parameters.encode()) > WORKFLOW_PARAMETERS_MAX_BYTES:
            raise BadRequest(
                "instanceParameters",
                instance_parameters,
                f"must be at most {WORKFLOW_PARAMETERS_MAX_BYTES} bytes",
            )
        if self.workflows is None:
            raise self._no_workflow(workflow_id)
        started = await self.workflows.execute(namespace, group_id, workflow_id, instance_parameters)
        return started.id

    async def set_workflow_enabled(
        self, namespace: str, group_id: str, workflow_id: int, enabled: bool
    ) -> None:
        if self.workflows is None:
            raise self._no_workflow(workflow_id)
        await self.workflows.set_enabled(namespace, group_id, workflow_id, enabled)

    async def delete_workflow(self, namespace: str, group_id: str, workflow_id: int) -> None:
        if self.workflows is None:
            raise self._no_workflow(workflow_id)
        await self.workflows.delete_workflow(namespace, group_id, workflow_id)

    def workflow_engine(self) -> WorkflowEngine:
        """The attached workflow engine; NotFound when this scheduler has none."""
        if self.workflows is None:
            raise NotFound("workflows are not served by this scheduler", field="workflowId")
        return self.workflows

    @staticmethod
    def _no_workflow(workflow_id: int) -> NotFound:
        return NotFound(f"workflow {workflow_id} not found", field="workflowId", value=workflow_id)
