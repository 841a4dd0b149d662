"""Workflow endpoints: the original's execute, enable, disable and delete, and the extensions to
create, read, update and list workflows and to watch, re-run and stop workflow instances."""

from __future__ import annotations

from typing import Any

from sx.processors._enums import InstanceStatus
from sx.scheduler.api._call import ADDRESS, PAGE, Call, Endpoint
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import format_date
from sx.scheduler.jobs._service import WORKFLOW_PARAMETERS_MAX_BYTES, BadRequest
from sx.scheduler.store._store import Workflow, WorkflowInstance
from sx.scheduler.workflows._engine import NodeView

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
    jobs = []
    for job_id in definition.nodes:
        job = await call.service.store.get_job(job_id)
        jobs.append({"jobId": job_id, "name": job.name if job is not None else ""})
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
        "jobs": jobs,
    }


def wf_instance_view(
    call: Call, wf_instance: WorkflowInstance, nodes: list[NodeView] | None
) -> dict[str, Any]:
    tz = call.service.default_tz
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
    workflow = await call.service.workflow_engine().create_workflow(
        namespace,
        group_id,
        call.params.values,
        enabled=True if enabled is None else enabled,
        managed=call.params.boolean("managed", default=False),
    )
    return workflow.id


async def get_workflow(call: Call) -> dict[str, Any]:
    engine = call.service.workflow_engine()
    workflow = await engine.get_workflow(
        call.namespace(), call.group_id(), call.params.required_id("workflowId")
    )
    return await workflow_view(call, workflow)


async def update_workflow(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.service.workflow_engine().update_workflow(
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
    page = await call.service.workflow_engine().list_workflows(
        namespace, group_id, name=call.params.optional_text("name"), page_num=page_num, page_size=page_size
    )
    return {
        "total": page.total,
        "pageNum": page_num,
        "pageSize": page_size,
        "workflows": [await workflow_view(call, workflow) for workflow in page.items],
    }


async def get_wf_instance(call: Call) -> dict[str, Any]:
    engine = call.service.workflow_engine()
    wf_instance, nodes = await engine.get_instance(
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
    page = await call.service.workflow_engine().list_instances(
        namespace,
        group_id,
        call.params.required_id("workflowId"),
        statuses=statuses,
        page_num=page_num,
        page_size=page_size,
    )
    return {
        "total": page.total,
        "pageNum": page_num,
        "pageSize": page_size,
        "instances": [wf_instance_view(call, item, None) for item in page.items],
    }


async def rerun_wf_node(call: Call) -> int:
    namespace, group_id = call.namespace(), call.group_id()
    instance = await call.service.workflow_engine().rerun_node(
        namespace, group_id, call.params.required_id("wfInstanceId"), call.params.required_id("jobId")
    )
    return instance.id


async def stop_wf_instance(call: Call) -> None:
    namespace, group_id = call.namespace(), call.group_id()
    await call.service.workflow_engine().stop_instance(
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
