"""Workflow endpoints of the original. Parameters are validated now; the service answers "not found"
until workflows can be created."""

from __future__ import annotations

from sx.scheduler._api_call import ADDRESS, Call, Endpoint
from sx.scheduler._api_params import ParamDoc
from sx.scheduler._service import WORKFLOW_PARAMETERS_MAX_BYTES, BadRequest

WORKFLOW_ID = ParamDoc("workflowId", "integer", "workflow id", required=True)


async def execute_workflow(call: Call) -> int:
    namespace, group_id = call.namespace(), call.group_id()
    workflow_id = call.params.required_id("workflowId")
    parameters = call.params.text("instanceParameters")
    if len(parameters.encode()) > WORKFLOW_PARAMETERS_MAX_BYTES:
        raise BadRequest(
            "instanceParameters", parameters, f"must be at most {WORKFLOW_PARAMETERS_MAX_BYTES} bytes"
        )
    return await call.service.execute_workflow(namespace, group_id, workflow_id, parameters)


async def enable_workflow(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.service.set_workflow_enabled(namespace, group_id, call.params.required_id("workflowId"), True)


async def disable_workflow(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.service.set_workflow_enabled(namespace, group_id, call.params.required_id("workflowId"), False)


async def delete_workflow(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.service.delete_workflow(namespace, group_id, call.params.required_id("workflowId"))


ENDPOINTS = (
    Endpoint(
        "ExecuteWorkflow",
        ("/openapi/v1/workflow/execute",),
        "Trigger a workflow once",
        execute_workflow,
        "Workflows",
        (
            *ADDRESS,
            WORKFLOW_ID,
            ParamDoc("instanceParameters", "string", f"at most {WORKFLOW_PARAMETERS_MAX_BYTES} bytes"),
        ),
        data="Long: wfInstanceId",
    ),
    Endpoint(
        "EnableWorkflow",
        ("/openapi/v1/workflow/enable",),
        "Enable a workflow",
        enable_workflow,
        "Workflows",
        (*ADDRESS, WORKFLOW_ID),
    ),
    Endpoint(
        "DisableWorkflow",
        ("/openapi/v1/workflow/disable",),
        "Disable a workflow",
        disable_workflow,
        "Workflows",
        (*ADDRESS, WORKFLOW_ID),
    ),
    Endpoint(
        "DeleteWorkflow",
        ("/openapi/v1/workflow/delete",),
        "Delete a workflow",
        delete_workflow,
        "Workflows",
        (*ADDRESS, WORKFLOW_ID),
    ),
)
