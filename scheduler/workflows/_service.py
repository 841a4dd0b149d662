"""Workflow operations: what the OpenAPI and job sync call.

Creating, reading, updating, listing, enabling and deleting workflows (a workflow belongs to one
namespace and group, and holds only that group's jobs), and starting, watching, re-running and
stopping their instances. Running instances are the engine's; time triggers are the fire loop's,
which is woken whenever a workflow's next fire time changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import tzinfo
from typing import Any, Protocol

from sx.processors import InstanceStatus, TriggerType
from sx.processors.engine import check_dag
from sx.scheduler._clock import Clock
from sx.scheduler._errors import BadRequest, Conflict, NotFound
from sx.scheduler.jobs import (
    JobService,
    found_by_name,
    in_scope,
    name_taken,
    page_offset,
    page_or_named,
    require_group,
)
from sx.scheduler.store import (
    AccessStore,
    DuplicateError,
    Instance,
    InstanceStore,
    JobStore,
    NewWorkflowInstance,
    Page,
    Workflow,
    WorkflowInstance,
    WorkflowStore,
)
from sx.scheduler.workflows._definition import DefinitionReader, next_workflow_fire
from sx.scheduler.workflows._engine import ACTIVE_WORKFLOW_STATUSES, WorkflowEngine, new_workflow_instance

__all__ = ["WORKFLOW_PARAMETERS_MAX_BYTES", "NodeView", "WorkflowService"]

log = logging.getLogger("sx.scheduler.workflows")

WORKFLOW_PARAMETERS_MAX_BYTES = 1000


class ServiceStore(AccessStore, JobStore, InstanceStore, WorkflowStore, Protocol):
    """What the workflow service reads and writes."""


class NodeView:
    """One node of a workflow instance as GetWorkflowInstance shows it."""

    __slots__ = ("instance_id", "job_id", "name", "result", "status")

    def __init__(
        self, *, job_id: int, name: str, instance_id: int | None, status: InstanceStatus | None, result: str
    ) -> None:
        self.job_id = job_id
        self.name = name
        self.instance_id = instance_id
        self.status = status
        self.result = result

    def to_wire(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "name": self.name,
            "instanceId": self.instance_id,
            # 0: not started (an upstream node has not succeeded yet).
            "status": int(self.status) if self.status is not None else 0,
            "result": self.result,
        }


class WorkflowService:
    """Workflow and workflow instance operations; ``jobs`` finds a node's job, ``engine`` runs the
    instances, ``wake_fire_loop`` is called when a workflow's next fire time changed."""

    def __init__(
        self,
        store: ServiceStore,
        *,
        clock: Clock,
        default_tz: tzinfo,
        jobs: JobService,
        engine: WorkflowEngine,
        wake_fire_loop: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._default_tz = default_tz
        self._jobs = jobs
        self._engine = engine
        self._wake = wake_fire_loop
        self._definitions = DefinitionReader(store)

    # -- workflows ------------------------------------------------------------------------------------
    async def create_workflow(
        self,
        namespace: str,
        group_id: str,
        params: Mapping[str, Any],
        *,
        enabled: bool = True,
        managed: bool = False,
    ) -> Workflow:
        """Create a workflow from wire fields; Conflict when the group has one of that name."""
        await require_group(self._store, namespace, group_id)
        definition = await self._definitions.read(namespace, group_id, params, None)
        next_fire = None
        if enabled:
            next_fire = next_workflow_fire(definition, self._clock.now(), default_tz=self._default_tz)
        try:
            workflow = await self._store.create_workflow(
                namespace=namespace,
                group_id=group_id,
                definition=definition,
                enabled=enabled,
                managed=managed,
                next_fire_time=next_fire,
            )
        except DuplicateError as exc:
            raise name_taken("workflow", definition.name, group_id) from exc
        log.info("workflow %d %r created in %s/%s", workflow.id, definition.name, namespace, group_id)
        self._wake()
        return workflow

    async def get_workflow(self, namespace: str | None, group_id: str | None, workflow_id: int) -> Workflow:
        workflow = await self._store.get_workflow(workflow_id)
        if workflow is None or not in_scope(workflow, namespace, group_id):
            raise NotFound(
                f"workflowId={workflow_id}: no such workflow in group {group_id!r}",
                field="workflowId",
                value=workflow_id,
            )
        return workflow

    async def find_workflow(self, namespace: str, group_id: str, name: str) -> Workflow:
        found = await self._store.find_workflow(namespace, group_id, name)
        return found_by_name(found, "workflow", name, group_id)

    async def list_workflows(
        self,
        namespace: str,
        group_id: str,
        *,
        name: str | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Workflow]:
        await require_group(self._store, namespace, group_id)

        async def page(offset: int, limit: int) -> Page[Workflow]:
            return await self._store.list_workflows(namespace, group_id, offset=offset, limit=limit)

        return await page_or_named(
            name,
            find=lambda found: self._store.find_workflow(namespace, group_id, found),
            page=page,
            page_num=page_num,
            page_size=page_size,
        )

    async def node_jobs(self, workflow: Workflow) -> list[tuple[int, str]]:
        """Each node's job id and job name ("" for a job deleted since)."""
        jobs = []
        for job_id in workflow.definition.nodes:
            job = await self._store.get_job(job_id)
            jobs.append((job_id, job.name if job is not None else ""))
        return jobs

    async def update_workflow(
        self,
        namespace: str,
        group_id: str,
        workflow_id: int,
        params: Mapping[str, Any],
        *,
        enabled: bool | None = None,
        managed: bool | None = None,
    ) -> Workflow:
        """Partial update: absent fields keep their value; ``enabled`` also enables or disables."""
        workflow = await self.get_workflow(namespace, group_id, workflow_id)
        definition = await self._definitions.read(namespace, group_id, params, workflow.definition)
        now_enabled = workflow.enabled if enabled is None else enabled
        timing_changed = (
            definition.schedule != workflow.definition.schedule
            or definition.time_zone != workflow.definition.time_zone
            or now_enabled != workflow.enabled
        )
        next_fire = None
        if now_enabled and timing_changed:
            next_fire = next_workflow_fire(definition, self._clock.now(), default_tz=self._default_tz)
        try:
            updated = await self._store.update_workflow(
                workflow_id,
                definition=definition if definition != workflow.definition else None,
                enabled=enabled,
                managed=managed,
                next_fire_time=next_fire,
                clear_next_fire_time=timing_changed and next_fire is None,
            )
        except DuplicateError as exc:
            raise name_taken("workflow", definition.name, group_id) from exc
        self._wake()
        return updated

    async def set_enabled(self, namespace: str, group_id: str, workflow_id: int, enabled: bool) -> Workflow:
        """Enable (scheduled from now) or disable (never triggered by time) a workflow."""
        workflow = await self.get_workflow(namespace, group_id, workflow_id)
        if enabled:
            next_fire = next_workflow_fire(
                workflow.definition, self._clock.now(), default_tz=self._default_tz
            )
            workflow = await self._store.update_workflow(
                workflow_id, enabled=True, next_fire_time=next_fire, clear_next_fire_time=next_fire is None
            )
        else:
            workflow = await self._store.update_workflow(
                workflow_id, enabled=False, clear_next_fire_time=True
            )
        self._wake()
        return workflow

    async def delete_workflow(self, namespace: str, group_id: str, workflow_id: int) -> None:
        """Disable the workflow, stop its running instances, then delete it with their records."""
        workflow = await self.get_workflow(namespace, group_id, workflow_id)
        if workflow.enabled:
            await self._store.update_workflow(workflow_id, enabled=False, clear_next_fire_time=True)
        active = await self._store.list_workflow_instances(
            workflow_id, statuses=ACTIVE_WORKFLOW_STATUSES, limit=10_000
        )
        for wf_instance in active.items:
            await self._engine.stop(wf_instance, f"workflow {workflow_id} deleted")
        await self._store.delete_workflow(workflow_id)
        log.info("workflow %d %r deleted", workflow_id, workflow.name)
        self._wake()

    # -- workflow instances --------------------------------------------------------------------------
    async def execute(
        self,
        namespace: str,
        group_id: str,
        workflow_id: int,
        instance_parameters: str = "",
        *,
        trigger_type: TriggerType = TriggerType.API,
    ) -> WorkflowInstance:
        """Start a workflow instance now; its root nodes get ``instance_parameters``."""
        if len(instance_parameters.encode()) > WORKFLOW_PARAMETERS_MAX_BYTES:
            raise BadRequest(
                "instanceParameters",
                instance_parameters,
                f"must be at most {WORKFLOW_PARAMETERS_MAX_BYTES} bytes "
                f"(got {len(instance_parameters.encode())})",
            )
        workflow = await self.get_workflow(namespace, group_id, workflow_id)
        wf_instance = await self._store.create_workflow_instance(
            new_workflow_instance(workflow, self._clock.now(), trigger_type, instance_parameters)
        )
        log.info("workflow %d started as workflow instance %d", workflow_id, wf_instance.id)
        await self._engine.advance(wf_instance.id)
        return await self._store.get_workflow_instance(wf_instance.id) or wf_instance

    async def get_instance(
        self, namespace: str | None, group_id: str | None, wf_instance_id: int
    ) -> tuple[WorkflowInstance, list[NodeView]]:
        """A workflow instance and the status of each of its nodes."""
        wf_instance = await self._store.get_workflow_instance(wf_instance_id)
        if wf_instance is None or not in_scope(wf_instance, namespace, group_id):
            raise NotFound(
                f"wfInstanceId={wf_instance_id}: no such workflow instance in group {group_id!r}",
                field="wfInstanceId",
                value=wf_instance_id,
            )
        rows = {node.job_id: node for node in await self._store.list_workflow_nodes(wf_instance_id)}
        views: list[NodeView] = []
        for job_id in check_dag(list(wf_instance.nodes), wf_instance.edges):
            job = await self._store.get_job(job_id)
            name = job.name if job is not None else ""
            row = rows.get(job_id)
            if row is None:
                views.append(NodeView(job_id=job_id, name=name, instance_id=None, status=None, result=""))
                continue
            status, result = row.status, row.result
            if not status.finished:
                # The node record only holds final states; a live one shows its instance's.
                instance = await self._store.get_instance(row.instance_id)
                if instance is not None:
                    status, result = instance.status, instance.result
            views.append(
                NodeView(job_id=job_id, name=name, instance_id=row.instance_id, status=status, result=result)
            )
        return wf_instance, views

    async def list_instances(
        self,
        namespace: str,
        group_id: str,
        workflow_id: int,
        *,
        statuses: Sequence[InstanceStatus] | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[WorkflowInstance]:
        await self.get_workflow(namespace, group_id, workflow_id)
        return await self._store.list_workflow_instances(
            workflow_id, statuses=statuses or None, offset=page_offset(page_num, page_size), limit=page_size
        )

    async def rerun_node(self, namespace: str, group_id: str, wf_instance_id: int, job_id: int) -> Instance:
        """Run a failed node again; the workflow instance is running again and continues from it."""
        wf_instance, views = await self.get_instance(namespace, group_id, wf_instance_id)
        view = next((v for v in views if v.job_id == job_id), None)
        if view is None:
            raise NotFound(
                f"jobId={job_id}: not a node of workflow instance {wf_instance_id}",
                field="jobId",
                value=job_id,
            )
        if view.status is not InstanceStatus.FAILED:
            shown = "not started" if view.status is None else view.status.name
            raise Conflict(
                f"jobId={job_id}: only a failed node can be re-run (it is {shown})",
                field="jobId",
                value=job_id,
            )
        job = await self._jobs.get_job(namespace, group_id, job_id)
        return await self._engine.rerun(wf_instance, job.id)

    async def rerun_instance(self, namespace: str, group_id: str, wf_instance_id: int) -> WorkflowInstance:
        """Run a finished workflow instance again, whole: a new instance with trigger type 4, the same
        graph, instance parameters and schedule time, whose nodes run for that data time. Conflict
        while it is unfinished."""
        original, _ = await self.get_instance(namespace, group_id, wf_instance_id)
        if not original.status.finished:
            raise Conflict(
                f"wfInstanceId={wf_instance_id}: still unfinished (status {int(original.status)}); only "
                "a finished workflow instance can be re-run",
                field="wfInstanceId",
                value=wf_instance_id,
            )
        wf_instance = await self._store.create_workflow_instance(
            NewWorkflowInstance(
                workflow_id=original.workflow_id,
                namespace=original.namespace,
                group_id=original.group_id,
                status=InstanceStatus.WAITING,
                trigger_type=TriggerType.MANUAL_RERUN,
                schedule_time=original.schedule_time,
                nodes=original.nodes,
                edges=original.edges,
                instance_parameters=original.instance_parameters,
            )
        )
        log.info("workflow instance %d re-runs workflow instance %d", wf_instance.id, wf_instance_id)
        await self._engine.advance(wf_instance.id)
        return await self._store.get_workflow_instance(wf_instance.id) or wf_instance

    async def stop_instance(self, namespace: str, group_id: str, wf_instance_id: int) -> WorkflowInstance:
        """Stop a running workflow instance: it fails and its running nodes are killed."""
        wf_instance, _ = await self.get_instance(namespace, group_id, wf_instance_id)
        if wf_instance.status.finished:
            raise Conflict(
                f"wfInstanceId={wf_instance_id}: already finished (status {int(wf_instance.status)})",
                field="wfInstanceId",
                value=wf_instance_id,
            )
        await self._engine.stop(wf_instance, "stopped through the OpenAPI")
        return await self._store.get_workflow_instance(wf_instance_id) or wf_instance
