"""The POP RPC actions: one table from each SchedulerX SDK operation to our OpenAPI's behaviour.

Every action renames the SDK's PascalCase parameters to the native camelCase ones (``JobId`` ->
``jobId``, ``ContactInfo.1.UserPhone`` -> ``contactInfo.1.userPhone``, plus the per-action renames
listed in its entry), runs the native handler (or, where the SDK asks for more, the same services and
views), and reshapes the result into the ``Data`` the SDK's model reads. No behaviour lives here.

SDK parameters that have no counterpart here (``Priority``, ``XAttrs``, ``Template``, ...) are
accepted and have no effect; the ones whose effect would matter if ignored (choosing the workers of
one run, a workflow concurrency above 1) are refused naming the parameter.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sx.scheduler._errors import BadRequest, Conflict, NotFound
from sx.scheduler.api import (
    _admin_routes,
    _instance_routes,
    _job_routes,
    _log_routes,
    _rerun_routes,
    _worker_routes,
    _workflow_routes,
)
from sx.scheduler.api._call import Call, Reply
from sx.scheduler.api._params import Params
from sx.scheduler.api._pop_views import (
    app_group_view,
    dag_view,
    instance_detail_view,
    job_config_view,
    namespace_view,
    native_name,
    pascal,
    wf_instance_info_view,
    worker_info_view,
    workflow_info_view,
)
from sx.scheduler.api._services import Services
from sx.scheduler.api._views import instance_detail, job_config_info
from sx.scheduler.jobs import parse_job_spec
from sx.scheduler.store import AccessKey

__all__ = ["ACTIONS", "API_VERSION", "UNSUPPORTED_ACTIONS", "PopAction", "PopCall"]

API_VERSION = "2019-04-30"

# How many instances GetJobInstanceList returns when the SDK asks for no page size (the original: 10).
_RECENT = 10


@dataclass(frozen=True, slots=True)
class PopCall:
    """One POP request as an action sees it: the SDK's parameters (PascalCase, without the common
    and signature ones), the signing key and the request id."""

    services: Services
    params: Mapping[str, Any]
    key: AccessKey | None
    request_id: str
    renames: Mapping[str, str] = field(default_factory=dict)

    def native(self, **extra: Any) -> Call:
        """The native handlers' Call: parameters renamed, then ``extra`` (native names) added."""
        values = {self.renames.get(k) or native_name(k): v for k, v in self.params.items()}
        values.update(extra)
        return Call(services=self.services, params=Params(values), key=self.key, request_id=self.request_id)


Run = Callable[[PopCall], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class PopAction:
    """An SDK operation: its runner and the SDK parameters named otherwise than native_name says."""

    name: str
    run: Run
    renames: Mapping[str, str] = field(default_factory=dict)

    def sdk_name(self, native: str) -> str:
        """The SDK's name of a native parameter, for error messages."""
        for sdk, renamed in self.renames.items():
            if renamed == native:
                return sdk
        return pascal(native)


def _native(handler: Callable[[Call], Awaitable[Any]], shape: Callable[[Any], Any] | None = None) -> Run:
    """An action that is a native handler, its result reshaped by ``shape`` (no Data without one)."""

    async def run(call: PopCall) -> Reply:
        result = await handler(call.native())
        reply = result if isinstance(result, Reply) else Reply(data=result)
        return Reply(data=shape(reply.data) if shape is not None else None, message=reply.message)

    return run


def _refuse_given(call: PopCall, names: tuple[str, ...], why: str) -> None:
    for name in names:
        value = call.params.get(name)
        if value not in (None, ""):
            raise BadRequest(name, value, why)


# -- jobs -------------------------------------------------------------------------------------------


async def create_job(call: PopCall) -> Reply:
    native = call.native()
    namespace, group_id = native.namespace(), native.group_id()
    spec = parse_job_spec(native.params.values)
    status = native.params.integer("status", default=1, minimum=0, maximum=1)
    job = await call.services.jobs.create_job(
        namespace,
        group_id,
        spec,
        enabled=status == 1,
        namespace_source=native.params.optional_text("namespaceSource", max_chars=200),
    )
    return Reply(data={"JobId": job.id})


async def get_job_info(call: PopCall) -> Reply:
    native = call.native()
    if native.params.has("jobId") or not native.params.has("jobName"):
        info = await _job_routes.get_job(native)
    else:
        job = await call.services.jobs.find_job(
            native.namespace(), native.group_id(), native.params.text("jobName", max_chars=200)
        )
        info = job_config_info(job)
    return Reply(data={"JobConfigInfo": job_config_view(info)})


async def list_jobs(call: PopCall) -> Reply:
    native = call.native()
    status = native.params.integer("status", minimum=0, maximum=1)
    page_num, page_size = native.params.page()
    data = await _job_routes.list_jobs(call.native(nameContains=native.params.optional_text("jobName")))
    jobs = [job_config_view(info) for info in data["jobs"] if status is None or info["status"] == status]
    return Reply(data={"Jobs": jobs, "Total": data["total"], "PageNumber": page_num, "PageSize": page_size})


async def execute_job(call: PopCall) -> Reply:
    _refuse_given(
        call,
        ("Worker", "Label", "DesignateType"),
        "choosing the workers of one run is not supported: an instance goes to any worker of the group",
    )
    native = call.native()
    if native.params.boolean("checkJobStatus", default=False):
        job = await call.services.jobs.get_job(
            native.namespace(), native.group_id(), native.params.required_id("jobId")
        )
        if not job.enabled:
            raise Conflict(f"JobId={job.id}: the job is disabled (CheckJobStatus=True)", field="jobId")
    reply = await _job_routes.execute_job(native)
    return Reply(data={"JobInstanceId": reply.data}, message=reply.message)


def _job_id_list(call: PopCall) -> list[tuple[str, int]]:
    """JobIdList, flattened (JobIdList.1=...) or as one JSON or comma-separated value."""
    flat = sorted(
        (int(k.split(".", 1)[1]), k, v)
        for k, v in call.params.items()
        if k.startswith("JobIdList.") and k.split(".", 1)[1].isdigit()
    )
    pairs: list[tuple[str, Any]] = [(k, v) for _, k, v in flat]
    raw = call.params.get("JobIdList")
    if raw not in (None, ""):
        try:
            items = json.loads(raw) if isinstance(raw, str) and raw.lstrip().startswith("[") else raw
        except ValueError:
            raise BadRequest("JobIdList", raw, "must be a list of job ids") from None
        if isinstance(items, str):
            items = [part for part in items.split(",") if part.strip()]
        if not isinstance(items, list):
            raise BadRequest("JobIdList", raw, "must be a list of job ids")
        pairs += [(f"JobIdList.{i}", item) for i, item in enumerate(items, 1)]
    if not pairs:
        raise BadRequest("JobIdList", "", "is required")
    ids = Params({name: value for name, value in pairs})
    return [(name, ids.required_id(name)) for name, _ in pairs]


def _batch(operation: Callable[[Services, str, str, int], Awaitable[Any]]) -> Run:
    async def run(call: PopCall) -> Reply:
        native = call.native()
        namespace, group_id = native.namespace(), native.group_id()
        job_ids = _job_id_list(call)
        for name, job_id in job_ids:  # every job must exist before any changes
            try:
                await call.services.jobs.get_job(namespace, group_id, job_id)
            except NotFound:
                raise NotFound(f"{name}={job_id}: no such job", field=name, value=job_id) from None
        for _, job_id in job_ids:
            await operation(call.services, namespace, group_id, job_id)
        return Reply()

    return run


# -- instances --------------------------------------------------------------------------------------


async def get_job_instance_list(call: PopCall) -> Reply:
    extra = {} if "PageSize" in call.params else {"pageSize": _RECENT}
    data = await _instance_routes.list_instances(call.native(**extra))
    return Reply(data={"JobInstanceDetails": [instance_detail_view(item) for item in data["instances"]]})


async def get_job_instance(call: PopCall) -> Reply:
    native = call.native()
    namespace, group_id = native.namespace(), native.group_id()
    jobs = call.services.jobs
    job = await jobs.get_job(namespace, group_id, native.params.required_id("jobId"))
    instance = await jobs.get_instance(
        namespace, group_id, job.id, native.params.required_id("jobInstanceId")
    )
    detail = instance_detail_view(instance_detail(instance, jobs.time_zone(job.spec)))
    detail.update(JobName=job.spec.name, Parameters=instance.instance_parameters, TraceId="")
    return Reply(data={"JobInstanceDetail": detail})


async def get_log(call: PopCall) -> Reply:
    native = call.native()
    data = await _log_routes.get_instance_log(native)
    keyword = native.params.optional_text("keyword")
    since = native.params.integer("startTimestamp", minimum=0)
    until = native.params.integer("endTimestamp", minimum=0)
    lines = [
        line
        for line in data["lines"]
        if (keyword is None or keyword in line["message"])
        and (since is None or line["timeMs"] >= since)
        and (until is None or line["timeMs"] <= until)
    ]
    if native.params.boolean("reverse", default=False):
        lines.reverse()
    return Reply(data={"Logs": [f"{line['time']} {line['level']} {line['message']}" for line in lines]})


# -- workflows --------------------------------------------------------------------------------------


def _check_workflow_concurrency(call: PopCall) -> None:
    value = call.params.get("MaxConcurrency")
    if value not in (None, "", "1", 1):
        raise BadRequest("MaxConcurrency", value, "must be 1: a workflow runs one instance at a time here")


def _dag(call: PopCall) -> dict[str, Any]:
    """DagJson ({nodes: [{id}], edges: [{source, target}]}, as GetWorkFlow shows it) as native
    nodes and edges; {} when absent."""
    raw = call.params.get("DagJson")
    if raw in (None, ""):
        return {}
    try:
        dag = json.loads(raw) if isinstance(raw, str) else None
        nodes = [_lower_keys(node)["id"] for node in _lower_keys(dag)["nodes"]]
        edges = [
            [_lower_keys(e)["source"], _lower_keys(e)["target"]] for e in _lower_keys(dag).get("edges", [])
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadRequest(
            "DagJson",
            raw,
            'must be {"nodes": [{"id": jobId}], "edges": [{"source": jobId, "target": jobId}]}',
        ) from None
    return {"nodes": nodes, "edges": edges}


def _lower_keys(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("not an object")
    return {str(k).lower(): v for k, v in value.items()}


async def create_workflow(call: PopCall) -> Reply:
    _check_workflow_concurrency(call)
    if all(call.params.get(name) in (None, "") for name in ("DagJson", "Nodes")):
        # The hosted service creates an empty workflow and takes its graph later (UpdateWorkflowDag);
        # a workflow here always holds its jobs, so the graph comes with the creation.
        raise BadRequest(
            "DagJson",
            "",
            'is required here: a workflow is created with its jobs, {"nodes": [{"id": jobId}], '
            '"edges": [{"source": jobId, "target": jobId}]} (an extension parameter of CreateWorkflow)',
        )
    workflow_id = await _workflow_routes.create_workflow(call.native(**_dag(call)))
    return Reply(data={"WorkflowId": workflow_id})


async def update_workflow(call: PopCall) -> Reply:
    _check_workflow_concurrency(call)
    await _workflow_routes.update_workflow(call.native(**_dag(call)))
    return Reply()


async def update_workflow_dag(call: PopCall) -> Reply:
    if call.params.get("DagJson") in (None, ""):
        raise BadRequest("DagJson", "", "is required")
    await _workflow_routes.update_workflow(call.native(**_dag(call)))
    return Reply()


async def get_workflow(call: PopCall) -> Reply:
    native = call.native()
    namespace, group_id = native.namespace(), native.group_id()
    view = await _workflow_routes.get_workflow(native)
    enabled = {
        job["jobId"]: (await call.services.jobs.get_job(namespace, group_id, job["jobId"])).enabled
        for job in view["jobs"]
    }
    return Reply(
        data={
            "WorkFlowInfo": workflow_info_view(view, namespace, group_id),
            "WorkFlowNodeInfo": dag_view(view["jobs"], view["edges"], enabled=enabled),
        }
    )


async def list_workflows(call: PopCall) -> Reply:
    native = call.native()
    status = native.params.integer("status", minimum=0, maximum=1)
    page_num, page_size = native.params.page()
    data = await _workflow_routes.list_workflows(native)
    namespace, group_id = native.namespace(), native.group_id()
    records = [
        workflow_info_view(view, namespace, group_id)
        for view in data["workflows"]
        if status is None or view["status"] == status
    ]
    return Reply(
        data={"Records": records, "Total": data["total"], "PageNumber": page_num, "PageSize": page_size}
    )


async def get_workflow_instance(call: PopCall) -> Reply:
    native = call.native()
    workflows = call.services.workflow_service()
    wf_instance, nodes = await workflows.get_instance(
        native.namespace(), native.group_id(), native.params.required_id("wfInstanceId")
    )
    workflow_id = native.params.integer("workflowId", minimum=1)
    if workflow_id is not None and workflow_id != wf_instance.workflow_id:
        raise NotFound(
            f"WfInstanceId={wf_instance.id}: not an instance of workflow {workflow_id}", field="wfInstanceId"
        )
    view = _workflow_routes.wf_instance_view(native, wf_instance, nodes)
    edges = [list(edge) for edge in wf_instance.edges]
    return Reply(
        data={
            "WfInstanceInfo": wf_instance_info_view(view),
            "WfInstanceDag": dag_view([], edges, view["nodes"]),
        }
    )


async def list_workflow_instances(call: PopCall) -> Reply:
    data = await _workflow_routes.list_wf_instances(call.native(pageSize=100))
    return Reply(data={"WfInstanceInfos": [wf_instance_info_view(item) for item in data["instances"]]})


# -- namespaces, groups, workers ----------------------------------------------------------------------


async def create_namespace(call: PopCall) -> Reply:
    # The hosted service makes the namespace id (Uid) when none is given; so do we.
    extra = {} if call.params.get("Uid") else {"namespace": f"ns-{uuid.uuid4().hex[:16]}"}
    view = await _admin_routes.create_namespace(call.native(**extra))
    return Reply(data={"NamespaceUid": view["namespace"]})


async def list_namespaces(call: PopCall) -> Reply:
    native = call.native()
    uid = native.params.optional_text("namespace", max_chars=200)
    name = native.params.optional_text("namespaceName", max_chars=200)
    views = await _admin_routes.list_namespaces(native)
    shown = [
        namespace_view(view)
        for view in views
        if (uid is None or view["namespace"] == uid) and (name is None or name in view["name"])
    ]
    return Reply(data={"Namespaces": shown})


async def create_app_group(call: PopCall) -> Reply:
    native = call.native()
    description = native.params.text("description") or native.params.text("appName")
    view = await _admin_routes.create_group(call.native(description=description))
    return Reply(data={"AppKey": view["appKey"]})


async def get_app_group(call: PopCall) -> Reply:
    return Reply(data=app_group_view(await _admin_routes.get_group(call.native())))


async def list_groups(call: PopCall) -> Reply:
    native = call.native()
    contains = native.params.optional_text("appGroupName", max_chars=200)
    views = await _admin_routes.list_groups(native)
    shown = [app_group_view(view) for view in views if contains is None or contains in view["groupId"]]
    return Reply(data={"AppGroups": shown})


async def get_worker_list(call: PopCall) -> Reply:
    data = await _worker_routes.list_workers(call.native(pageSize=100))
    return Reply(data={"WorkerInfos": [worker_info_view(view) for view in data["workers"]]})


def _table(*actions: PopAction) -> dict[str, PopAction]:
    return {action.name: action for action in actions}


ACTIONS: Mapping[str, PopAction] = _table(
    # The 14 operations of the original OpenAPI.
    PopAction("CreateJob", create_job),
    PopAction("GetJobInfo", get_job_info),
    PopAction("UpdateJob", _native(_job_routes.update_job)),
    PopAction("DeleteJob", _native(_job_routes.delete_job)),
    PopAction("EnableJob", _native(_job_routes.enable_job)),
    PopAction("DisableJob", _native(_job_routes.disable_job)),
    PopAction("ExecuteJob", execute_job),
    PopAction("StopInstance", _native(_instance_routes.stop_instance)),
    PopAction(
        "GetJobInstanceList",
        get_job_instance_list,
        {"StartTimestamp": "startTime", "EndTimestamp": "endTime"},
    ),
    PopAction("GetJobInstance", get_job_instance),
    PopAction("RetryJobInstance", _native(_rerun_routes.retry_instance)),
    # Every fire time from StartDate to EndDate (epoch ms); the hosted DataTime has no counterpart.
    PopAction("RerunJob", _native(_rerun_routes.rerun_job)),
    PopAction("GetLog", get_log, {"JobInstanceId": "instanceId", "Line": "limit"}),
    PopAction(
        "ExecuteWorkflow", _native(_workflow_routes.execute_workflow, lambda wf_id: {"WfInstanceId": wf_id})
    ),
    PopAction("EnableWorkflow", _native(_workflow_routes.enable_workflow)),
    PopAction("DisableWorkflow", _native(_workflow_routes.disable_workflow)),
    PopAction("DeleteWorkflow", _native(_workflow_routes.delete_workflow)),
    # Further SDK operations over behaviour we have.
    PopAction("ListJobs", list_jobs),
    PopAction("BatchEnableJobs", _batch(lambda s, ns, g, job_id: s.jobs.set_enabled(ns, g, job_id, True))),
    PopAction("BatchDisableJobs", _batch(lambda s, ns, g, job_id: s.jobs.set_enabled(ns, g, job_id, False))),
    PopAction("BatchDeleteJobs", _batch(lambda s, ns, g, job_id: s.jobs.delete_job(ns, g, job_id))),
    PopAction("CreateWorkflow", create_workflow),
    PopAction("UpdateWorkflow", update_workflow),
    PopAction("UpdateWorkflowDag", update_workflow_dag),
    PopAction("GetWorkFlow", get_workflow),
    PopAction("ListWorkFlows", list_workflows, {"WorkflowName": "name"}),
    PopAction("GetWorkflowInstance", get_workflow_instance),
    PopAction("ListWorkflowInstance", list_workflow_instances),
    PopAction("CreateNamespace", create_namespace, {"Uid": "namespace"}),
    PopAction("ListNamespaces", list_namespaces),
    PopAction("CreateAppGroup", create_app_group),
    PopAction("GetAppGroup", get_app_group),
    PopAction("ListGroups", list_groups),
    PopAction("GetWorkerList", get_worker_list),
)
"""Action name -> what serves it."""

UNSUPPORTED_ACTIONS = frozenset(
    {
        "BatchDeleteRouteStrategy",
        "CreateRouteStrategy",
        "CreateSchedulerxCalendar",
        "CreateSchedulerxNotificationPolicy",
        "DeleteAppGroup",
        "DeleteNamespace",
        "DeleteRouteStrategy",
        "DeleteSchedulerxCalendar",
        "DeleteSchedulerxNotificationPolicy",
        "DescribeRegions",
        "DesignateWorkers",
        "GetOverview",
        "GrantPermission",
        "ListJobScriptHistory",
        "ManageSchedulerxCalendar",
        "ManageSchedulerxJobSync",
        "ManageSchedulerxNotificationPolicy",
        "ReadSchedulerxCalendar",
        "ReadSchedulerxDesignateDetail",
        "ReadSchedulerxDesignateInfo",
        "ReadSchedulerxNotificationPolicy",
        "RevokePermission",
        "SetJobInstanceSuccess",
        "SetWfInstanceSuccess",
        "UpdateAppGroup",
        "UpdateJobScript",
        "UpdateNamespace",
    }
)
"""SchedulerX 2019-04-30 operations the SDKs offer that this scheduler does not serve (yet)."""
