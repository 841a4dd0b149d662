"""The workflow engine: workflow definitions, their time triggers, and running workflow instances.

A workflow is a DAG of one group's jobs. A workflow instance snapshots the graph when it starts, so
editing the workflow never changes an instance under way. Each node that starts gets a node record
(``sx_wf_nodes``) pointing at its current job instance; creating the record and the instance is one
store call that succeeds once, so two upstream nodes finishing together start their common
downstream node once.

A workflow instance whose advance was cut short (``advance`` raised, or the scheduler stopped between
a node instance's end and its node record) is picked up by ``recover``, run at start and every
``recover_interval`` seconds of the trigger loop: node instances finished some time ago whose node
record is not final go through the instance-end path again, then every active instance is advanced.

How an instance advances (``advance``): a node starts when all its upstream nodes succeeded (roots
at once, with the workflow's instance parameters); its job instance carries the upstream jobs' names
and results. The lifecycle retries a failed node instance first (maxAttempt); only a node whose last
attempt failed fails the workflow instance, and then nothing new starts. Re-running the failed node
puts the instance back to running and it continues from there. Stopping an instance fails it and
kills its running nodes (a stopped workflow's nodes are not retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sx.processors._enums import ACTIVE_INSTANCE_STATUSES, InstanceStatus, TimeType, TriggerType
from sx.processors._errors import DefinitionError
from sx.processors._schedule import Schedule, parse_time_type
from sx.processors._spec import JobSpec
from sx.processors._workflow import MAX_WORKFLOW_NODES, check_dag
from sx.scheduler.jobs._service import (
    WORKFLOW_PARAMETERS_MAX_BYTES,
    BadRequest,
    Conflict,
    JobService,
    NotFound,
)
from sx.scheduler.jobs._timing import next_fire_time
from sx.scheduler.store._store import (
    DuplicateError,
    Instance,
    NewInstance,
    NewWorkflowInstance,
    Page,
    Workflow,
    WorkflowDef,
    WorkflowFire,
    WorkflowInstance,
    WorkflowNode,
)

__all__ = ["STOPPED_PREFIX", "NodeView", "WorkflowEngine", "workflow_timing_spec"]

log = logging.getLogger("sx.scheduler.workflows")

STOPPED_PREFIX = "stopped: "
"""How a stopped workflow instance's result starts (its nodes are not retried)."""

_ACTIVE_WF = (InstanceStatus.WAITING, InstanceStatus.RUNNING)
_FIRE_BATCH = 100
_DEF_FIELDS = ("name", "description", "timeType", "timeExpression", "timeZone", "nodes", "edges")


def workflow_timing_spec(definition: WorkflowDef) -> JobSpec:
    """A JobSpec carrying only the workflow's schedule and zone, for the shared timing functions."""
    return JobSpec(
        name=definition.name,
        class_name="workflow",
        schedule=definition.schedule,
        time_zone=definition.time_zone,
    )


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


def _json_value(field: str, value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise BadRequest(field, value, f"is not valid JSON ({exc})") from exc
    return value


class WorkflowEngine:
    """Workflow operations (over the JobService's store and hooks) and the workflow trigger loop."""

    def __init__(
        self,
        service: JobService,
        *,
        idle_poll: float = 2.0,
        misfire_grace: float = 5.0,
        recover_interval: float = 30.0,
        stranded_after: float = 30.0,
    ) -> None:
        if recover_interval <= 0:
            raise ValueError(f"recover_interval={recover_interval!r}: must be more than 0 seconds")
        if stranded_after < 0:
            raise ValueError(f"stranded_after={stranded_after!r}: must be 0 or more seconds")
        self.service = service
        self.store = service.store
        self.clock = service.clock
        self._idle_poll = timedelta(seconds=idle_poll)
        self._grace = timedelta(seconds=misfire_grace)
        self._recover_interval = timedelta(seconds=recover_interval)
        # A node instance finished this long ago without its node record following was left behind
        # (younger ones are most likely still going through the normal end path).
        self._stranded_after = timedelta(seconds=stranded_after)
        self._next_recover = self.clock.now()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One advance at a time in this process; the store's once-only node start covers replicas.
        self._lock = asyncio.Lock()

    # -- definitions ------------------------------------------------------------------------------
    async def _resolve_node(self, namespace: str, group_id: str, field: str, value: Any) -> int:
        job = None
        if isinstance(value, int) and not isinstance(value, bool):
            job = await self.store.get_job(value)
            label = f"job {value}"
        elif isinstance(value, str) and value.strip():
            text = value.strip()
            if text.isascii() and text.isdigit():
                job = await self.store.get_job(int(text))
                label = f"job {text}"
            else:
                job = await self.store.find_job(namespace, group_id, text)
                label = f"job named {text!r}"
        else:
            raise BadRequest(field, value, "must be a job id or a job name")
        if job is None:
            raise BadRequest(field, value, f"{label} does not exist in group {group_id!r}")
        if job.namespace != namespace or job.group_id != group_id:
            raise BadRequest(
                field,
                value,
                f"{label} belongs to group {job.group_id!r} of namespace {job.namespace!r}; a workflow "
                f"only holds jobs of its own group {group_id!r}",
            )
        return job.id

    async def _definition(
        self, namespace: str, group_id: str, params: Mapping[str, Any], base: WorkflowDef | None
    ) -> WorkflowDef:
        values = {key: params[key] for key in _DEF_FIELDS if key in params and params[key] is not None}
        name = values.get("name", base.name if base else None)
        if not isinstance(name, str) or not name.strip() or len(name) > 100 or name != name.strip():
            raise BadRequest("name", name, "is required: 1 to 100 characters, no surrounding blanks")
        description = values.get("description", base.description if base else "")
        if not isinstance(description, str) or len(description) > 1000:
            raise BadRequest("description", description, "must be a string of at most 1000 characters")
        try:
            if "timeType" in values or base is None:
                time_type = parse_time_type(values.get("timeType", int(TimeType.API)))
                expression = values.get("timeExpression", "")
            else:
                time_type = base.schedule.time_type
                expression = values.get("timeExpression", base.schedule.expression)
            if time_type is TimeType.SECOND_DELAY:
                raise DefinitionError("timeType", int(time_type), "a workflow takes cron, fix_rate or api")
            schedule = Schedule(time_type=time_type, expression=str(expression or ""))
        except DefinitionError as exc:
            raise BadRequest(exc.field, exc.value, exc.message) from exc
        time_zone = values.get("timeZone", base.time_zone if base else "")
        if not isinstance(time_zone, str):
            raise BadRequest("timeZone", time_zone, "must be a string")
        if time_zone:
            try:
                workflow_timing_spec(WorkflowDef(name=name, schedule=schedule, nodes=(), time_zone=time_zone))
            except DefinitionError as exc:
                raise BadRequest(exc.field, exc.value, exc.message) from exc
        if "nodes" in values or "edges" in values or base is None:
            nodes, edges = await self._graph(namespace, group_id, values)
        else:
            nodes, edges = base.nodes, base.edges
        return WorkflowDef(
            name=name,
            schedule=schedule,
            nodes=nodes,
            edges=edges,
            description=description,
            time_zone=time_zone,
        )

    async def _graph(
        self, namespace: str, group_id: str, values: Mapping[str, Any]
    ) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        raw_nodes = _json_value("nodes", values.get("nodes", []))
        if isinstance(raw_nodes, str | int) and not isinstance(raw_nodes, bool):
            raw_nodes = [part for part in str(raw_nodes).split(",") if part.strip()]
        if not isinstance(raw_nodes, list):
            raise BadRequest("nodes", raw_nodes, "must be a list of job ids or names")
        raw_edges = _json_value("edges", values.get("edges", []))
        if raw_edges == "":
            raw_edges = []
        if not isinstance(raw_edges, list):
            raise BadRequest("edges", raw_edges, "must be a list of [fromJobId, toJobId] pairs")
        cache: dict[str, int] = {}

        async def resolve(field: str, value: Any) -> int:
            key = repr(value)
            if key not in cache:
                cache[key] = await self._resolve_node(namespace, group_id, field, value)
            return cache[key]

        nodes: list[int] = []
        for value in raw_nodes:
            job_id = await resolve("nodes", value)
            if job_id in nodes:
                raise BadRequest("nodes", value, "lists a job twice")
            nodes.append(job_id)
        edges: list[tuple[int, int]] = []
        for edge in raw_edges:
            if not isinstance(edge, list) or len(edge) != 2:
                raise BadRequest("edges", edge, "each edge must be a pair [fromJobId, toJobId]")
            pair = (await resolve("edges", edge[0]), await resolve("edges", edge[1]))
            for end in pair:
                if end not in nodes:
                    nodes.append(end)
            edges.append(pair)
        if not nodes:
            raise BadRequest("nodes", raw_nodes, "a workflow needs at least one job")
        if len(nodes) > MAX_WORKFLOW_NODES:
            raise BadRequest("nodes", len(nodes), f"a workflow holds at most {MAX_WORKFLOW_NODES} jobs")
        try:
            check_dag(nodes, edges)
        except DefinitionError as exc:
            raise BadRequest(exc.field, exc.value, exc.message) from exc
        return tuple(nodes), tuple(dict.fromkeys(edges))

    def _next_fire(self, definition: WorkflowDef, after: datetime) -> datetime | None:
        spec = workflow_timing_spec(definition)
        try:
            return next_fire_time(spec, after, default_tz=self.service.time_zone(spec), calendar=None)
        except DefinitionError as exc:
            raise BadRequest(exc.field, exc.value, exc.message) from exc

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
        await self.service.get_group(namespace, group_id)
        definition = await self._definition(namespace, group_id, params, None)
        next_fire = self._next_fire(definition, self.clock.now()) if enabled else None
        try:
            workflow = await self.store.create_workflow(
                namespace=namespace,
                group_id=group_id,
                definition=definition,
                enabled=enabled,
                managed=managed,
                next_fire_time=next_fire,
            )
        except DuplicateError as exc:
            raise Conflict(
                f"name={definition.name!r}: a workflow of that name exists in group {group_id!r}",
                field="name",
                value=definition.name,
            ) from exc
        log.info("workflow %d %r created in %s/%s", workflow.id, definition.name, namespace, group_id)
        self.wake()
        return workflow

    async def get_workflow(self, namespace: str | None, group_id: str | None, workflow_id: int) -> Workflow:
        workflow = await self.store.get_workflow(workflow_id)
        if (
            workflow is None
            or (namespace is not None and workflow.namespace != namespace)
            or (group_id is not None and workflow.group_id != group_id)
        ):
            raise NotFound(
                f"workflowId={workflow_id}: no such workflow in group {group_id!r}",
                field="workflowId",
                value=workflow_id,
            )
        return workflow

    async def find_workflow(self, namespace: str, group_id: str, name: str) -> Workflow:
        workflow = await self.store.find_workflow(namespace, group_id, name)
        if workflow is None:
            raise NotFound(f"name={name!r}: no such workflow in group {group_id!r}", field="name", value=name)
        return workflow

    async def list_workflows(
        self,
        namespace: str,
        group_id: str,
        *,
        name: str | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Workflow]:
        await self.service.get_group(namespace, group_id)
        if name is not None:
            found = await self.store.find_workflow(namespace, group_id, name)
            items = [found] if found is not None else []
            return Page(items=items if page_num == 1 else [], total=len(items))
        return await self.store.list_workflows(
            namespace, group_id, offset=(page_num - 1) * page_size, limit=page_size
        )

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
        definition = await self._definition(namespace, group_id, params, workflow.definition)
        now_enabled = workflow.enabled if enabled is None else enabled
        timing_changed = (
            definition.schedule != workflow.definition.schedule
            or definition.time_zone != workflow.definition.time_zone
            or now_enabled != workflow.enabled
        )
        next_fire = None
        if now_enabled and timing_changed:
            next_fire = self._next_fire(definition, self.clock.now())
        try:
            updated = await self.store.update_workflow(
                workflow_id,
                definition=definition if definition != workflow.definition else None,
                enabled=enabled,
                managed=managed,
                next_fire_time=next_fire,
                clear_next_fire_time=timing_changed and next_fire is None,
            )
        except DuplicateError as exc:
            raise Conflict(
                f"name={definition.name!r}: a workflow of that name exists in group {group_id!r}",
                field="name",
                value=definition.name,
            ) from exc
        self.wake()
        return updated

    async def set_enabled(self, namespace: str, group_id: str, workflow_id: int, enabled: bool) -> Workflow:
        """Enable (scheduled from now) or disable (never triggered by time) a workflow."""
        workflow = await self.get_workflow(namespace, group_id, workflow_id)
        if enabled:
            next_fire = self._next_fire(workflow.definition, self.clock.now())
            workflow = await self.store.update_workflow(
                workflow_id, enabled=True, next_fire_time=next_fire, clear_next_fire_time=next_fire is None
            )
        else:
            workflow = await self.store.update_workflow(workflow_id, enabled=False, clear_next_fire_time=True)
        self.wake()
        return workflow

    async def delete_workflow(self, namespace: str, group_id: str, workflow_id: int) -> None:
        """Disable the workflow, stop its running instances, then delete it with their records."""
        workflow = await self.get_workflow(namespace, group_id, workflow_id)
        if workflow.enabled:
            await self.store.update_workflow(workflow_id, enabled=False, clear_next_fire_time=True)
        active = await self.store.list_workflow_instances(workflow_id, statuses=_ACTIVE_WF, limit=10_000)
        for wf_instance in active.items:
            await self._stop(wf_instance, f"workflow {workflow_id} deleted")
        await self.store.delete_workflow(workflow_id)
        log.info("workflow %d %r deleted", workflow_id, workflow.name)
        self.wake()

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
        wf_instance = await self.store.create_workflow_instance(
            self._new_instance(workflow, self.clock.now(), trigger_type, instance_parameters)
        )
        log.info("workflow %d started as workflow instance %d", workflow_id, wf_instance.id)
        await self.advance(wf_instance.id)
        return await self.store.get_workflow_instance(wf_instance.id) or wf_instance

    @staticmethod
    def _new_instance(
        workflow: Workflow, when: datetime, trigger_type: TriggerType, parameters: str
    ) -> NewWorkflowInstance:
        return NewWorkflowInstance(
            workflow_id=workflow.id,
            namespace=workflow.namespace,
            group_id=workflow.group_id,
            status=InstanceStatus.WAITING,
            trigger_type=trigger_type,
            schedule_time=when,
            nodes=workflow.definition.nodes,
            edges=workflow.definition.edges,
            instance_parameters=parameters,
        )

    async def get_instance(
        self, namespace: str | None, group_id: str | None, wf_instance_id: int
    ) -> tuple[WorkflowInstance, list[NodeView]]:
        """A workflow instance and the status of each of its nodes."""
        wf_instance = await self.store.get_workflow_instance(wf_instance_id)
        if (
            wf_instance is None
            or (namespace is not None and wf_instance.namespace != namespace)
            or (group_id is not None and wf_instance.group_id != group_id)
        ):
            raise NotFound(
                f"wfInstanceId={wf_instance_id}: no such workflow instance in group {group_id!r}",
                field="wfInstanceId",
                value=wf_instance_id,
            )
        rows = {node.job_id: node for node in await self.store.list_workflow_nodes(wf_instance_id)}
        views: list[NodeView] = []
        for job_id in check_dag(list(wf_instance.nodes), wf_instance.edges):
            job = await self.store.get_job(job_id)
            name = job.name if job is not None else ""
            row = rows.get(job_id)
            if row is None:
                views.append(NodeView(job_id=job_id, name=name, instance_id=None, status=None, result=""))
                continue
            status, result = row.status, row.result
            if not status.finished:
                # The node record only holds final states; a live one shows its instance's.
                instance = await self.store.get_instance(row.instance_id)
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
        return await self.store.list_workflow_instances(
            workflow_id, statuses=statuses or None, offset=(page_num - 1) * page_size, limit=page_size
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
        job = await self.service.get_job(namespace, group_id, job_id)
        async with self._lock:
            await self.store.update_workflow_instance(
                wf_instance_id, status=InstanceStatus.RUNNING, end_time=None, result=""
            )
            new = await self._node_instance(
                wf_instance, job.id, await self._upstream(wf_instance), TriggerType.MANUAL_RERUN
            )
            if new is None:
                raise NotFound(f"jobId={job_id}: no such job", field="jobId", value=job_id)
            instance = await self.store.start_workflow_node(wf_instance_id, job_id, new, rerun=True)
        if instance is None:
            raise Conflict(f"jobId={job_id}: the node was re-run meanwhile", field="jobId", value=job_id)
        log.info("workflow instance %d: node %d re-run as instance %d", wf_instance_id, job_id, instance.id)
        await self.service.hooks.instance_created(instance)
        return instance

    async def stop_instance(self, namespace: str, group_id: str, wf_instance_id: int) -> WorkflowInstance:
        """Stop a running workflow instance: it fails and its running nodes are killed."""
        wf_instance, _ = await self.get_instance(namespace, group_id, wf_instance_id)
        if wf_instance.status.finished:
            raise Conflict(
                f"wfInstanceId={wf_instance_id}: already finished (status {int(wf_instance.status)})",
                field="wfInstanceId",
                value=wf_instance_id,
            )
        await self._stop(wf_instance, "stopped through the OpenAPI")
        return await self.store.get_workflow_instance(wf_instance_id) or wf_instance

    async def _stop(self, wf_instance: WorkflowInstance, reason: str) -> None:
        await self.store.update_workflow_instance(
            wf_instance.id,
            status=InstanceStatus.FAILED,
            end_time=self.clock.now(),
            result=STOPPED_PREFIX + reason,
            only_if_status=_ACTIVE_WF,
        )
        for node in await self.store.list_workflow_nodes(wf_instance.id):
            instance = await self.store.get_instance(node.instance_id)
            if instance is None or instance.status not in ACTIVE_INSTANCE_STATUSES:
                continue
            asked = await self.service.hooks.stop_instance(instance, f"workflow instance {reason}")
            if not asked:
                log.warning(
                    "node instance %d of workflow instance %d not stopped", instance.id, wf_instance.id
                )

    # -- advancing -------------------------------------------------------------------------------------
    async def may_retry(self, instance: Instance) -> bool:
        """A node instance of a stopped workflow instance is not retried."""
        if instance.wf_instance_id is None:
            return True
        wf_instance = await self.store.get_workflow_instance(instance.wf_instance_id)
        if wf_instance is None:
            return False
        stopped = wf_instance.status == InstanceStatus.FAILED and wf_instance.result.startswith(
            STOPPED_PREFIX
        )
        return not stopped

    async def node_finished(self, instance: Instance, retry: Instance | None) -> None:
        """Record a node instance's end (or its move to a retry) and advance its workflow instance."""
        wf_instance_id = instance.wf_instance_id
        if wf_instance_id is None:
            return
        if retry is not None:
            await self.store.update_workflow_node(
                wf_instance_id, instance.job_id, only_if_instance=instance.id, instance_id=retry.id
            )
            return
        status = (
            InstanceStatus.SUCCESS if instance.status == InstanceStatus.SUCCESS else InstanceStatus.FAILED
        )
        node = await self.store.update_workflow_node(
            wf_instance_id,
            instance.job_id,
            only_if_instance=instance.id,
            status=status,
            result=instance.result,
        )
        if node is None:
            return  # not the node's current instance (superseded by a re-run)
        await self.advance(wf_instance_id)

    async def _upstream(self, wf_instance: WorkflowInstance) -> dict[int, WorkflowNode]:
        return {node.job_id: node for node in await self.store.list_workflow_nodes(wf_instance.id)}

    async def _node_instance(
        self,
        wf_instance: WorkflowInstance,
        job_id: int,
        rows: Mapping[int, WorkflowNode],
        trigger_type: TriggerType,
    ) -> NewInstance | None:
        job = await self.store.get_job(job_id)
        if job is None:
            return None
        upstream: list[tuple[str, str]] = []
        for source, target in wf_instance.edges:
            if target == job_id:
                source_job = await self.store.get_job(source)
                row = rows.get(source)
                upstream.append((source_job.name if source_job else str(source), row.result if row else ""))
        now = self.clock.now()
        return NewInstance(
            job_id=job.id,
            namespace=job.namespace,
            group_id=job.group_id,
            status=InstanceStatus.WAITING,
            trigger_type=trigger_type,
            time_type=job.spec.schedule.time_type,
            schedule_time=now,
            data_time=now + timedelta(seconds=job.spec.data_offset),
            instance_parameters=wf_instance.instance_parameters if not upstream else "",
            wf_instance_id=wf_instance.id,
            upstream_data=tuple(upstream),
        )

    async def advance(self, wf_instance_id: int) -> None:
        """Start every node whose upstream nodes all succeeded; finish the workflow instance when all
        nodes succeeded or one failed."""
        async with self._lock:
            started = await self._advance(wf_instance_id)
        for instance in started:
            await self.service.hooks.instance_created(instance)

    async def _advance(self, wf_instance_id: int) -> list[Instance]:
        wf_instance = await self.store.get_workflow_instance(wf_instance_id)
        if wf_instance is None or wf_instance.status.finished:
            return []
        rows = await self._upstream(wf_instance)
        now = self.clock.now()
        failed = [row for row in rows.values() if row.status == InstanceStatus.FAILED]
        if failed:
            row = failed[0]
            await self.store.update_workflow_instance(
                wf_instance_id,
                status=InstanceStatus.FAILED,
                end_time=now,
                result=f"job {row.job_id} failed (instance {row.instance_id}): {row.result}",
                only_if_status=_ACTIVE_WF,
            )
            log.info("workflow instance %d failed at job %d", wf_instance_id, row.job_id)
            return []
        if all(
            job_id in rows and rows[job_id].status == InstanceStatus.SUCCESS for job_id in wf_instance.nodes
        ):
            await self.store.update_workflow_instance(
                wf_instance_id, status=InstanceStatus.SUCCESS, end_time=now, only_if_status=_ACTIVE_WF
            )
            log.info("workflow instance %d succeeded", wf_instance_id)
            return []
        upstream: dict[int, list[int]] = {job_id: [] for job_id in wf_instance.nodes}
        for source, target in wf_instance.edges:
            upstream[target].append(source)
        started: list[Instance] = []
        for job_id in check_dag(list(wf_instance.nodes), wf_instance.edges):
            if job_id in rows:
                continue
            if not all(u in rows and rows[u].status == InstanceStatus.SUCCESS for u in upstream[job_id]):
                continue
            new = await self._node_instance(wf_instance, job_id, rows, wf_instance.trigger_type)
            if new is None:
                await self.store.update_workflow_instance(
                    wf_instance_id,
                    status=InstanceStatus.FAILED,
                    end_time=now,
                    result=f"job {job_id} no longer exists",
                    only_if_status=_ACTIVE_WF,
                )
                return started
            instance = await self.store.start_workflow_node(wf_instance_id, job_id, new)
            if instance is not None:
                started.append(instance)
        if wf_instance.status == InstanceStatus.WAITING:
            await self.store.update_workflow_instance(
                wf_instance_id, status=InstanceStatus.RUNNING, only_if_status=[InstanceStatus.WAITING]
            )
        return started

    # -- the time trigger -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """A workflow's next fire time changed: look again now."""
        self._wake.set()

    async def start(self) -> None:
        """Advance the workflow instances left behind, then start the trigger loop (idempotent)."""
        if self.running:
            return
        self._wake.clear()
        try:
            await self.recover()
        except Exception:
            log.exception("workflow recovery failed; the trigger loop tries again")
        self._task = asyncio.create_task(self._run(), name="sx-workflow-trigger")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                now = self.clock.now()
                due = await self.store.next_workflow_due_time()
                if due is not None and due <= now:
                    await self.fire_due(now)
                    continue
                if now >= self._next_recover:
                    await self.recover()
                limit = min(now + self._idle_poll, self._next_recover)
                if due is not None:
                    limit = min(limit, due)
                await self.clock.sleep_until(limit, self._wake)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("workflow trigger cycle failed; retrying")
                await self.clock.sleep_until(self.clock.now() + timedelta(seconds=1), self._wake)

    async def recover(self, *, limit: int = 10_000) -> int:
        """Advance every active workflow instance, first finishing the node instances that ended long
        enough ago with their node record left unfinal; returns how many instances were looked at.
        Safe to repeat: a node starts once (the store's node record) and node ends are compare-and-set."""
        now = self.clock.now()
        self._next_recover = now + self._recover_interval
        ids = await self.store.active_workflow_instance_ids(limit=limit)
        for wf_instance_id in ids:
            try:
                await self._finish_stranded_nodes(wf_instance_id, now)
                await self.advance(wf_instance_id)
            except Exception:
                log.exception(
                    "workflow instance %d could not be advanced; trying again later", wf_instance_id
                )
        return len(ids)

    async def _finish_stranded_nodes(self, wf_instance_id: int, now: datetime) -> None:
        for node in await self.store.list_workflow_nodes(wf_instance_id):
            if node.status.finished:
                continue
            instance = await self.store.get_instance(node.instance_id)
            if instance is None or not instance.status.finished:
                continue
            ended = instance.end_time or instance.created_at
            if now - ended < self._stranded_after:
                continue
            log.warning(
                "workflow instance %d: node instance %d ended (%s) without its node record; finishing it",
                wf_instance_id,
                instance.id,
                instance.status.name,
            )
            await self.service.hooks.instance_finished(instance)

    async def fire_due(self, now: datetime) -> int:
        """Start an instance of every workflow due at ``now``; returns how many were claimed."""
        claimed = 0
        for workflow in await self.store.due_workflows(now, _FIRE_BATCH):
            due = workflow.next_fire_time
            assert due is not None
            # A fire missed by more than the grace (the scheduler was down) runs once, now.
            after = now if now - due > self._grace else due
            try:
                following = self._next_fire(workflow.definition, after)
            except BadRequest:
                log.exception("workflow %d: cannot compute its next fire time; parked", workflow.id)
                following = None
            wf_instance = await self.store.claim_workflow_fire(
                WorkflowFire(
                    workflow_id=workflow.id,
                    due=due,
                    next_fire_time=following,
                    instance=self._new_instance(workflow, due, TriggerType.SCHEDULED, ""),
                )
            )
            if wf_instance is None:
                continue
            claimed += 1
            log.info("workflow %d fired: workflow instance %d", workflow.id, wf_instance.id)
            try:
                await self.advance(wf_instance.id)
            except Exception:
                log.exception("workflow instance %d could not start its nodes", wf_instance.id)
        return claimed
