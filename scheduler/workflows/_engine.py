"""The workflow engine: advancing running workflow instances.

A workflow is a DAG of one group's jobs. A workflow instance snapshots the graph when it starts, so
editing the workflow never changes an instance under way. Each node that starts gets a node record
(``sx_wf_nodes``) pointing at its current job instance; creating the record and the instance is one
store call that succeeds once, so two upstream nodes finishing together start their common
downstream node once.

A workflow instance whose advance was cut short (``advance`` raised, or the scheduler stopped between
a node instance's end and its node record) is picked up by ``recover``, run at start and every
``recover_interval`` seconds of the fire loop: node instances finished some time ago whose node
record is not final go through the instance-end path again, then every active instance is advanced.

How an instance advances (``advance``): a node starts when all its upstream nodes succeeded (roots
at once, with the workflow's instance parameters); its job instance carries the upstream jobs' names
and results. The lifecycle retries a failed node instance first (maxAttempt); only a node whose last
attempt failed fails the workflow instance, and then nothing new starts. Re-running the failed node
puts the instance back to running and it continues from there. Stopping an instance fails it and
kills its running nodes (a stopped workflow's nodes are not retried).

The engine hears of node ends on ``InstanceEvents``: ``ended`` (after the lifecycle's retry decision)
advances the workflow, and its retry check refuses retries for the nodes of a stopped instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from sx.processors import InstanceStatus, TriggerType
from sx.processors.engine import ACTIVE_INSTANCE_STATUSES, check_dag
from sx.scheduler._clock import Clock
from sx.scheduler._errors import Conflict, NotFound
from sx.scheduler.jobs import InstanceEvents
from sx.scheduler.store import (
    Instance,
    InstanceStore,
    JobStore,
    NewInstance,
    NewWorkflowInstance,
    Workflow,
    WorkflowInstance,
    WorkflowNode,
    WorkflowStore,
)

__all__ = [
    "ACTIVE_WORKFLOW_STATUSES",
    "STOPPED_PREFIX",
    "EngineStore",
    "WorkflowEngine",
    "new_workflow_instance",
]

log = logging.getLogger("sx.scheduler.workflows")

STOPPED_PREFIX = "stopped: "
"""How a stopped workflow instance's result starts (its nodes are not retried)."""

ACTIVE_WORKFLOW_STATUSES = (InstanceStatus.WAITING, InstanceStatus.RUNNING)
_RERUNS = (TriggerType.MANUAL_RERUN, TriggerType.DATA_RERUN)


class EngineStore(WorkflowStore, JobStore, InstanceStore, Protocol):
    """What the workflow engine reads and writes."""


def new_workflow_instance(
    workflow: Workflow, when: datetime, trigger_type: TriggerType, parameters: str
) -> NewWorkflowInstance:
    """A WAITING workflow instance of ``workflow`` scheduled ``when``, snapshotting its graph."""
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


class WorkflowEngine:
    """Advances workflow instances; ``hand_over`` gives each node instance started to dispatch,
    ``stop_instance`` kills a running node instance (False when no worker could be asked)."""

    def __init__(
        self,
        store: EngineStore,
        *,
        clock: Clock,
        events: InstanceEvents,
        hand_over: Callable[[Instance], Awaitable[None]],
        stop_instance: Callable[[Instance, str], Awaitable[bool]],
        stranded_after: float = 30.0,
    ) -> None:
        if stranded_after < 0:
            raise ValueError(f"stranded_after={stranded_after!r}: must be 0 or more seconds")
        self._store = store
        self._clock = clock
        self._events = events
        self._hand_over = hand_over
        self._stop_instance = stop_instance
        # A node instance finished this long ago without its node record following was left behind
        # (younger ones are most likely still going through the normal end path).
        self._stranded_after = timedelta(seconds=stranded_after)
        # One advance at a time in this process; the store's once-only node start covers replicas.
        self._lock = asyncio.Lock()
        events.add_retry_check(self.may_retry)
        events.on_ended(self.node_finished)

    # -- node ends ------------------------------------------------------------------------------------
    async def may_retry(self, instance: Instance) -> bool:
        """A node instance of a stopped workflow instance is not retried."""
        if instance.wf_instance_id is None:
            return True
        wf_instance = await self._store.get_workflow_instance(instance.wf_instance_id)
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
            await self._store.update_workflow_node(
                wf_instance_id, instance.job_id, only_if_instance=instance.id, instance_id=retry.id
            )
            return
        status = (
            InstanceStatus.SUCCESS if instance.status == InstanceStatus.SUCCESS else InstanceStatus.FAILED
        )
        node = await self._store.update_workflow_node(
            wf_instance_id,
            instance.job_id,
            only_if_instance=instance.id,
            status=status,
            result=instance.result,
        )
        if node is None:
            return  # not the node's current instance (superseded by a re-run)
        await self.advance(wf_instance_id)

    # -- advancing -------------------------------------------------------------------------------------
    async def advance(self, wf_instance_id: int) -> None:
        """Start every node whose upstream nodes all succeeded; finish the workflow instance when all
        nodes succeeded or one failed."""
        async with self._lock:
            started = await self._advance(wf_instance_id)
        for instance in started:
            await self._hand_over(instance)

    async def _upstream(self, wf_instance: WorkflowInstance) -> dict[int, WorkflowNode]:
        return {node.job_id: node for node in await self._store.list_workflow_nodes(wf_instance.id)}

    async def _node_instance(
        self,
        wf_instance: WorkflowInstance,
        job_id: int,
        rows: Mapping[int, WorkflowNode],
        trigger_type: TriggerType,
    ) -> NewInstance | None:
        job = await self._store.get_job(job_id)
        if job is None:
            return None
        upstream: list[tuple[str, str]] = []
        for source, target in wf_instance.edges:
            if target == job_id:
                source_job = await self._store.get_job(source)
                row = rows.get(source)
                upstream.append((source_job.name if source_job else str(source), row.result if row else ""))
        now = self._clock.now()
        # A re-run workflow instance runs its nodes for the data time of the instance it repeats.
        data_base = wf_instance.schedule_time if wf_instance.trigger_type in _RERUNS else now
        return NewInstance(
            job_id=job.id,
            namespace=job.namespace,
            group_id=job.group_id,
            status=InstanceStatus.WAITING,
            trigger_type=trigger_type,
            time_type=job.spec.schedule.time_type,
            schedule_time=now,
            data_time=data_base + timedelta(seconds=job.spec.data_offset),
            instance_parameters=wf_instance.instance_parameters if not upstream else "",
            wf_instance_id=wf_instance.id,
            upstream_data=tuple(upstream),
        )

    async def _advance(self, wf_instance_id: int) -> list[Instance]:
        store = self._store
        wf_instance = await store.get_workflow_instance(wf_instance_id)
        if wf_instance is None or wf_instance.status.finished:
            return []
        rows = await self._upstream(wf_instance)
        now = self._clock.now()
        failed = [row for row in rows.values() if row.status == InstanceStatus.FAILED]
        if failed:
            row = failed[0]
            await store.update_workflow_instance(
                wf_instance_id,
                status=InstanceStatus.FAILED,
                end_time=now,
                result=f"job {row.job_id} failed (instance {row.instance_id}): {row.result}",
                only_if_status=ACTIVE_WORKFLOW_STATUSES,
            )
            log.info("workflow instance %d failed at job %d", wf_instance_id, row.job_id)
            return []
        if all(
            job_id in rows and rows[job_id].status == InstanceStatus.SUCCESS for job_id in wf_instance.nodes
        ):
            await store.update_workflow_instance(
                wf_instance_id,
                status=InstanceStatus.SUCCESS,
                end_time=now,
                only_if_status=ACTIVE_WORKFLOW_STATUSES,
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
                await store.update_workflow_instance(
                    wf_instance_id,
                    status=InstanceStatus.FAILED,
                    end_time=now,
                    result=f"job {job_id} no longer exists",
                    only_if_status=ACTIVE_WORKFLOW_STATUSES,
                )
                return started
            instance = await store.start_workflow_node(wf_instance_id, job_id, new)
            if instance is not None:
                started.append(instance)
        if wf_instance.status == InstanceStatus.WAITING:
            await store.update_workflow_instance(
                wf_instance_id, status=InstanceStatus.RUNNING, only_if_status=[InstanceStatus.WAITING]
            )
        return started

    # -- re-running and stopping --------------------------------------------------------------------
    async def rerun(self, wf_instance: WorkflowInstance, job_id: int) -> Instance:
        """Start node ``job_id`` (a failed one) again; the workflow instance is running again. NotFound
        when the job is gone, Conflict when the node was re-run meanwhile."""
        wf_instance_id = wf_instance.id
        async with self._lock:
            await self._store.update_workflow_instance(
                wf_instance_id, status=InstanceStatus.RUNNING, end_time=None, result=""
            )
            new = await self._node_instance(
                wf_instance, job_id, await self._upstream(wf_instance), TriggerType.MANUAL_RERUN
            )
            if new is None:
                raise NotFound(f"jobId={job_id}: no such job", field="jobId", value=job_id)
            instance = await self._store.start_workflow_node(wf_instance_id, job_id, new, rerun=True)
        if instance is None:
            raise Conflict(f"jobId={job_id}: the node was re-run meanwhile", field="jobId", value=job_id)
        log.info("workflow instance %d: node %d re-run as instance %d", wf_instance_id, job_id, instance.id)
        await self._hand_over(instance)
        return instance

    async def stop(self, wf_instance: WorkflowInstance, reason: str) -> None:
        """Fail the workflow instance (its result says it was stopped) and kill its running nodes."""
        await self._store.update_workflow_instance(
            wf_instance.id,
            status=InstanceStatus.FAILED,
            end_time=self._clock.now(),
            result=STOPPED_PREFIX + reason,
            only_if_status=ACTIVE_WORKFLOW_STATUSES,
        )
        for node in await self._store.list_workflow_nodes(wf_instance.id):
            instance = await self._store.get_instance(node.instance_id)
            if instance is None or instance.status not in ACTIVE_INSTANCE_STATUSES:
                continue
            asked = await self._stop_instance(instance, f"workflow instance {reason}")
            if not asked:
                log.warning(
                    "node instance %d of workflow instance %d not stopped", instance.id, wf_instance.id
                )

    # -- recovery -----------------------------------------------------------------------------------
    async def recover(self, *, limit: int = 10_000) -> int:
        """Advance every active workflow instance, first finishing the node instances that ended long
        enough ago with their node record left unfinal; returns how many instances were looked at.
        Safe to repeat: a node starts once (the store's node record) and node ends are compare-and-set."""
        now = self._clock.now()
        ids = await self._store.active_workflow_instance_ids(limit=limit)
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
        for node in await self._store.list_workflow_nodes(wf_instance_id):
            if node.status.finished:
                continue
            instance = await self._store.get_instance(node.instance_id)
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
            # The same end path as a node instance the dispatcher finishes (lifecycle, then back here).
            await self._events.finished(instance)
