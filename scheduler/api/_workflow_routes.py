"""Workflow endpoints: the original's execute, enable, disable and delete, and the extensions to
create, read, update and list workflows and to watch, re-run and stop workflow instances."""

from __future__ import annotations

from typing import Any

from sx.processors import InstanceStatus
from sx.scheduler._errors import BadRequest
from sx.scheduler.api._call import ADDRESS, PAGE, Call, Endpoint
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import format_date, page_view
from sx.scheduler.store import Workflow, WorkflowInstance
from sx.scheduler.workflows import WORKFLOW_PARAMETERS_MAX_BYTES, NodeView

__all__ = ["ENDPOINTS", "WORKFLOW_FIELDS", "wf_instance_view", "workflow_view"]

WORKFLOW_ID = ParamDoc("workflowId", "integer", "workflow id", required=True)
WF_INSTANCE_ID = ParamDoc("wfInstanceId", "integer", "workflow instance id", required=True)
WORKFLOW_FIELDS = (
    ParamDoc("name", "string", "workflow name, unique in its group"),
    ParamDoc("description", "string", ""),
    ParamDoc("timeType", "integer", "1 cron, 3 fix_rate, 100 api"),
    ParamDoc("timeExpression", "string", "cron expression, or seconds for fix_rate"),
    ParamDoc("timeZone", "string", "IANA time zone of the schedule (default: the scheduler's)"),
    ParamDoc("nodes", "array", "the jobs of the workflow: job ids or job names of this group"),
    ParamDoc(
        "edges", "array", "[[fromJobId, toJobId], ...]: toJob starts when all its upstream jobs succeeded"
    ),
    ParamDoc("status", "integer", "1 enabled (default), 0 disabled"),
    ParamDoc("managed", "boolean", "the workflow is managed by `sx-worker sync`"),
)


def _status(call: Call) -> bool | None:
    status = call.params.integer("status", minimum=0, maximum=1)
    return None if status is None else status == 1


async def workflow_view(call: Call, workflow: Workflow) -> dict[str, Any]:
    """GetWorkflow's data: the definition (nodes and edges as job ids, plus the jobs' names)."""
    definition = workflow.definition
    node_jobs = await call.services.workflow_service().node_jobs(workflow)
    return {
        "workflowId": workflow.id,
        "name": definition.name,
        "description": definition.description,
        "timeType": int(definition.schedule.time_type),
        "timeExpression": definition.schedule.expression,
        "timeZone": definition.time_zone,
        "status": 1 if workflow.enabled else 0,
        "managed": workflow.managed,
        "nodes": list(definition.nodes),
        "edges": [list(edge) for edge in definition.edges],
        "jobs": [{"jobId": job_id, "name": name} for job_id, name in node_jobs],
    }


def wf_instance_view(
    call: Call, wf_instance: WorkflowInstance, nodes: list[NodeView] | None
) -> dict[str, Any]:
    tz = call.services.jobs.default_tz
    data: dict[str, Any] = {
        "wfInstanceId": wf_instance.id,
        "workflowId": wf_instance.workflow_id,
        "status": int(wf_instance.status),
        "triggerType": int(wf_instance.trigger_type),
        "scheduleDate": format_date(wf_instance.schedule_time, tz),
        "endDate": format_date(wf_instance.end_time, tz),
        "instanceParameters": wf_instance.instance_parameters,
        "result": wf_instance.result,
    }
    if nodes is not None:
        data["nodes"] = [node.to_wire() for node in nodes]
    return data


async def create_workflow(call: Call) -> int:
    namespace, group_id = call.namespace(), call.group_id()
    enabled = _status(call)
    workflow = await call.services.workflow_service().create_workflow(
        namespace,
        group_id,
        call.params.values,
        enabled=True if enabled is None else enabled,
        managed=call.params.boolean("managed", default=False),
    )
    return workflow.id


async def get_workflow(call: Call) -> dict[str, Any]:
    workflows = call.services.workflow_service()
    workflow = await workflows.get_workflow(
        call.namespace(), call.group_id(), call.params.required_id("workflowId")
    )
    return await workflow_view(call, workflow)


async def update_workflow(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.services.workflow_service().update_workflow(
        namespace,
        group_id,
        call.params.required_id("workflowId"),
        call.params.values,
        enabled=_status(call),
        managed=call.params.optional_boolean("managed"),
    )


async def list_workflows(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    page_num, page_size = call.params.page()
    page = await call.services.workflow_service().list_workflows(
        namespace, group_id, name=call.params.optional_text("name"), page_num=page_num, page_size=page_size
    )
    workflows = [await workflow_view(call, workflow) for workflow in page.items]
    return page_view("workflows", workflows, total=page.total, page_num=page_num, page_size=page_size)


async def get_wf_instance(call: Call) -> dict[str, Any]:
    workflows = call.services.workflow_service()
    wf_instance, nodes = await workflows.get_instance(
        call.namespace(), call.group_id(), call.params.required_id("wfInstanceId")
    )
    return wf_instance_view(call, wf_instance, nodes)


async def list_wf_instances(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    page_num, page_size = call.params.page()
    statuses = []
    for text in call.params.text_list("statuses"):
        try:
            statuses.append(InstanceStatus(int(text)))
        except ValueError:
            raise BadRequest("statuses", text, "must be instance status codes (1, 3, 4, 5)") from None
    page = await call.services.workflow_service().list_instances(
        namespace,
        group_id,
        call.params.required_id("workflowId"),
        statuses=statuses,
        page_num=page_num,
        page_size=page_size,
    )
    instances = [wf_instance_view(call, item, None) for item in page.items]
    return page_view("instances", instances, total=page.total, page_num=page_num, page_size=page_size)


async def rerun_wf_node(call: Call) -> int:
    namespace, group_id = call.namespace(), call.group_id()
    instance = await call.services.workflow_service().rerun_node(
        namespace, group_id, call.params.required_id("wfInstanceId"), call.params.required_id("jobId")
    )
    return instance.id


async def stop_wf_instance(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.services.workflow_service().stop_instance(
        namespace, group_id, call.params.required_id("wfInstanceId")
    )


async def execute_workflow(call: Call) -> int:
    namespace, group_id = call.namespace(), call.group_id()
    workflow_id = call.params.required_id("workflowId")
    parameters = call.params.text("instanceParameters")
    if len(parameters.encode()) > WORKFLOW_PARAMETERS_MAX_BYTES:
        raise BadRequest(
            "instanceParameters", parameters, f"must be at most {WORKFLOW_PARAMETERS_MAX_BYTES} bytes"
        )
    started = await call.services.workflow_service(workflow_id).execute(
        namespace, group_id, workflow_id, parameters
    )
    return started.id


async def enable_workflow(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    workflow_id = call.params.required_id("workflowId")
    await call.services.workflow_service(workflow_id).set_enabled(namespace, group_id, workflow_id, True)


async def disable_workflow(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    workflow_id = call.params.required_id("workflowId")
    await call.services.workflow_service(workflow_id).set_enabled(namespace, group_id, workflow_id, False)


async def delete_workflow(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    workflow_id = call.params.required_id("workflowId")
    await call.services.workflow_service(workflow_id).delete_workflow(namespace, group_id, workflow_id)


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
        description="Running instances of the workflow are stopped first.",
    ),
    Endpoint(
        "CreateWorkflow",
        ("/openapi/v1/workflow/create",),
        "Create a workflow: a DAG of jobs of this group",
        create_workflow,
        "Extensions",
        (*ADDRESS, *WORKFLOW_FIELDS),
        description="Cycles, unknown jobs and jobs of another group are refused (code 400).",
        data="Long: the new workflowId",
        extension=True,
    ),
    Endpoint(
        "GetWorkflow",
        ("/openapi/v1/workflow/get",),
        "Get a workflow's definition",
        get_workflow,
        "Extensions",
        (*ADDRESS, WORKFLOW_ID),
        data="{workflowId, name, description, timeType, timeExpression, timeZone, status, managed, "
        "nodes: [jobId], edges: [[fromJobId, toJobId]], jobs: [{jobId, name}]}",
        extension=True,
    ),
    Endpoint(
        "UpdateWorkflow",
        ("/openapi/v1/workflow/update",),
        "Update a workflow: absent fields keep their value",
        update_workflow,
        "Extensions",
        (*ADDRESS, WORKFLOW_ID, *WORKFLOW_FIELDS),
        extension=True,
    ),
    Endpoint(
        "ListWorkflows",
        ("/openapi/v1/workflow/list",),
        "List a group's workflows",
        list_workflows,
        "Extensions",
        (*ADDRESS, ParamDoc("name", "string", "exact workflow name"), *PAGE),
        data="{total, pageNum, pageSize, workflows: [GetWorkflow's data]}",
        extension=True,
    ),
    Endpoint(
        "GetWorkflowInstance",
        ("/openapi/v1/workflow/instance/get",),
        "Get a workflow instance's status and each node's status",
        get_wf_instance,
        "Extensions",
        (*ADDRESS, WF_INSTANCE_ID),
        description="Statuses: 1 waiting, 3 running, 4 success, 5 failed; a node not started yet has 0.",
        data="{wfInstanceId, workflowId, status, triggerType, scheduleDate, endDate, instanceParameters, "
        "result, nodes: [{jobId, name, instanceId, status, result}]}",
        extension=True,
    ),
    Endpoint(
        "ListWorkflowInstances",
        ("/openapi/v1/workflow/instance/list",),
        "List a workflow's instances, newest first",
        list_wf_instances,
        "Extensions",
        (*ADDRESS, WORKFLOW_ID, ParamDoc("statuses", "array", "only these statuses"), *PAGE),
        data="{total, pageNum, pageSize, instances: [GetWorkflowInstance's data without nodes]}",
        extension=True,
    ),
    Endpoint(
        "RerunWorkflowNode",
        ("/openapi/v1/workflow/instance/rerun",),
        "Re-run a failed node; the workflow instance continues from it",
        rerun_wf_node,
        "Extensions",
        (*ADDRESS, WF_INSTANCE_ID, ParamDoc("jobId", "integer", "the failed node's job id", required=True)),
        data="Long: the node's new instanceId",
        extension=True,
    ),
    Endpoint(
        "StopWorkflowInstance",
        ("/openapi/v1/workflow/instance/stop",),
        "Stop a workflow instance: it fails and its running nodes are killed",
        stop_wf_instance,
        "Extensions",
        (*ADDRESS, WF_INSTANCE_ID),
        extension=True,
    ),
)
