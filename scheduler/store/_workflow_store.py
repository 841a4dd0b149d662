"""`WorkflowStore`: workflows (DAGs of jobs) with their fires, their instances and the nodes those
started."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sx.processors import InstanceStatus
from sx.scheduler.store._records import (
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

__all__ = ["WorkflowStore"]


class WorkflowStore(Protocol):
    """Workflows (DAGs of jobs) with their fires, their instances and the nodes those started."""

    @abstractmethod
    async def create_workflow(
        self,
        *,
        namespace: str,
        group_id: str,
        definition: WorkflowDef,
        enabled: bool,
        managed: bool,
        next_fire_time: datetime | None,
    ) -> Workflow:
        """Raises DuplicateError when the group has a workflow of that name."""

    @abstractmethod
    async def get_workflow(self, workflow_id: int) -> Workflow | None: ...

    @abstractmethod
    async def find_workflow(self, namespace: str, group_id: str, name: str) -> Workflow | None: ...

    @abstractmethod
    async def list_workflows(
        self, namespace: str, group_id: str, *, offset: int = 0, limit: int = 50
    ) -> Page[Workflow]:
        """Workflows of a group ordered by id."""

    @abstractmethod
    async def update_workflow(
        self,
        workflow_id: int,
        *,
        definition: WorkflowDef | None = None,
        enabled: bool | None = None,
        managed: bool | None = None,
        next_fire_time: datetime | None = None,
        clear_next_fire_time: bool = False,
    ) -> Workflow:
        """Raises NotFoundError, or DuplicateError when a rename collides."""

    @abstractmethod
    async def delete_workflow(self, workflow_id: int) -> bool:
        """Delete a workflow with its instances' records; False when it did not exist."""

    # -- fires -----------------------------------------------------------------------------------------------
    @abstractmethod
    async def next_workflow_due_time(self) -> datetime | None:
        """The earliest next_fire_time among enabled workflows."""

    @abstractmethod
    async def due_workflows(self, now: datetime, limit: int) -> list[Workflow]:
        """Enabled workflows whose next_fire_time <= now, earliest first."""

    @abstractmethod
    async def claim_workflow_fire(self, fire: WorkflowFire) -> WorkflowInstance | None:
        """Atomically move the workflow's next_fire_time from ``due`` on (only if it still is ``due``)
        and create the fire's instance; None when the claim lost or no instance was asked for."""

    # -- workflow instances ----------------------------------------------------------------------------------
    @abstractmethod
    async def create_workflow_instance(self, new: NewWorkflowInstance) -> WorkflowInstance: ...

    @abstractmethod
    async def get_workflow_instance(self, wf_instance_id: int) -> WorkflowInstance | None: ...

    @abstractmethod
    async def list_workflow_instances(
        self,
        workflow_id: int,
        *,
        statuses: Sequence[InstanceStatus] | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Page[WorkflowInstance]:
        """A workflow's instances, newest first."""

    @abstractmethod
    async def active_workflow_instance_ids(self, *, limit: int = 10_000) -> list[int]:
        """Ids of the workflow instances of every workflow still WAITING or RUNNING, oldest first."""

    @abstractmethod
    async def update_workflow_instance(
        self,
        wf_instance_id: int,
        *,
        status: InstanceStatus,
        end_time: datetime | None = None,
        result: str | None = None,
        only_if_status: Sequence[InstanceStatus] | None = None,
    ) -> WorkflowInstance | None:
        """Set the status (compare-and-set with only_if_status); end_time None clears it. None when
        missing or the guard failed."""

    # -- nodes -----------------------------------------------------------------------------------------------
    @abstractmethod
    async def start_workflow_node(
        self, wf_instance_id: int, job_id: int, new: NewInstance, *, rerun: bool = False
    ) -> Instance | None:
        """In one transaction, create the node's instance and record it as the node's current one.
        A first start fails (None) when the node already started; a re-run (``rerun``) only when the
        node is FAILED (None otherwise), so concurrent callers start a node once."""

    @abstractmethod
    async def list_workflow_nodes(self, wf_instance_id: int) -> list[WorkflowNode]:
        """The started nodes of a workflow instance."""

    @abstractmethod
    async def update_workflow_node(
        self,
        wf_instance_id: int,
        job_id: int,
        *,
        only_if_instance: int,
        status: InstanceStatus | None = None,
        result: str | None = None,
        instance_id: int | None = None,
    ) -> WorkflowNode | None:
        """Change a node only while ``only_if_instance`` is its current instance; None otherwise."""
