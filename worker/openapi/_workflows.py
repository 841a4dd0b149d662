"""The OpenAPI's workflow routes: define, trigger and list workflows, and steer their instances."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sx.processors import WorkflowSpec
from sx.worker.openapi._models import WorkflowInfo, WorkflowInstanceDetail, WorkflowInstancePage
from sx.worker.openapi._transport import MAX_PAGE_SIZE, OpenApiTransport

__all__ = ["WorkflowRoutes"]


class WorkflowRoutes(OpenApiTransport):
    """The workflow endpoints of ``OpenApiClient``."""

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
