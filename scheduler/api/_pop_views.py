"""The POP RPC front's names and shapes: SDK (PascalCase) versus native (camelCase) parameter names,
and the ``Data`` shapes the official SDKs' models read.

Each view takes what the native OpenAPI's handlers and views produce (camelCase) and renames it into
the SDK's PascalCase field names and nesting, so the values are computed in one place only.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "app_group_view",
    "dag_view",
    "instance_detail_view",
    "job_config_view",
    "namespace_view",
    "native_name",
    "pascal",
    "pascal_keys",
    "wf_instance_info_view",
    "worker_info_view",
    "workflow_info_view",
]

# Native names whose SDK name is not the plain capitalization, and back.
_PASCAL_NAMES = {"timeZone": "Timezone"}
_NATIVE_NAMES = {sdk: native for native, sdk in _PASCAL_NAMES.items()}
_DETAIL_TIMES = {
    "scheduleDate": "ScheduleTime",
    "dataDate": "DataTime",
    "startDate": "StartTime",
    "endDate": "EndTime",
}


def pascal(name: str) -> str:
    """A native (camelCase, maybe dotted) parameter name as the SDKs spell it."""
    return ".".join(_PASCAL_NAMES.get(part, part[:1].upper() + part[1:]) for part in name.split("."))


def native_name(name: str) -> str:
    """An SDK parameter name as our OpenAPI spells it (each dotted part lower-cased at its start):
    ``ContactInfo.1.UserPhone`` -> ``contactInfo.1.userPhone``."""
    return ".".join(_NATIVE_NAMES.get(part, part[:1].lower() + part[1:]) for part in name.split("."))


def pascal_keys(value: Any) -> Any:
    """``value`` with every object key renamed by :func:`pascal`, recursively."""
    if isinstance(value, dict):
        return {pascal(str(k)): pascal_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [pascal_keys(item) for item in value]
    return value


def job_config_view(info: dict[str, Any]) -> dict[str, Any]:
    """GetJobInfo's JobConfigInfo (and ListJobs' items) from the native job_config_info."""
    data: dict[str, Any] = pascal_keys(info)
    data["MaxConcurrency"] = str(info["maxConcurrency"])  # a string in the SDK's model
    data.setdefault("XAttrs", "")
    return data


def instance_detail_view(detail: dict[str, Any]) -> dict[str, Any]:
    """JobInstanceDetail from the native instance_detail: the four dates are ``...Time`` here."""
    return {_DETAIL_TIMES.get(k, pascal(k)): v for k, v in detail.items()}


def workflow_info_view(view: dict[str, Any], namespace: str, group_id: str) -> dict[str, Any]:
    """GetWorkFlow's WorkFlowInfo (and ListWorkFlows' records) from the native workflow_view."""
    return {
        "WorkflowId": view["workflowId"],
        "Name": view["name"],
        "Description": view["description"],
        "Namespace": namespace,
        "GroupId": group_id,
        # Strings in the SDK's model.
        "Status": str(view["status"]),
        "TimeType": str(view["timeType"]),
        "TimeExpression": view["timeExpression"],
        "MaxConcurrency": "1",
        "Timezone": view["timeZone"],
    }


def dag_view(
    jobs: list[dict[str, Any]],
    edges: list[list[int]],
    nodes: list[dict[str, Any]] | None = None,
    *,
    enabled: dict[int, bool] | None = None,
) -> dict[str, Any]:
    """A workflow's graph: ``Nodes`` (job id, name and status, 1 enabled or 0 disabled, after
    ``enabled``; or the instance's node states when ``nodes`` is given) and ``Edges`` ({Source,
    Target} job ids)."""
    if nodes is None:
        known = enabled or {}
        shown = [
            {"Id": job["jobId"], "Label": job["name"], "Status": 1 if known.get(job["jobId"], True) else 0}
            for job in jobs
        ]
    else:
        shown = [
            {
                "JobId": node["jobId"],
                "JobName": node["name"],
                "JobInstanceId": node["instanceId"],
                "Status": node["status"],
                "Result": node["result"],
            }
            for node in nodes
        ]
    return {"Nodes": shown, "Edges": [{"Source": source, "Target": target} for source, target in edges]}


def wf_instance_info_view(view: dict[str, Any]) -> dict[str, Any]:
    """WfInstanceInfo from the native wf_instance_view (a workflow instance has no data time of its
    own: its schedule time stands for it, and it starts when it is scheduled)."""
    return {
        "WfInstanceId": view["wfInstanceId"],
        "WorkflowId": view["workflowId"],
        "Status": view["status"],
        "ScheduleTime": view["scheduleDate"],
        "DataTime": view["scheduleDate"],
        "StartTime": view["scheduleDate"],
        "EndTime": view["endDate"],
    }


def namespace_view(view: dict[str, Any]) -> dict[str, Any]:
    """ListNamespaces' item from the native namespace_view."""
    return {"UId": view["namespace"], "Name": view["name"], "Description": view["description"]}


def app_group_view(view: dict[str, Any]) -> dict[str, Any]:
    """An application group from the native group_view; a group has no display name of its own, so
    AppName is its id."""
    return {
        "GroupId": view["groupId"],
        "Namespace": view["namespace"],
        "AppName": view["groupId"],
        "AppKey": view["appKey"],
        "Description": view["description"],
    }


def worker_info_view(view: dict[str, Any]) -> dict[str, Any]:
    """GetWorkerList's item from the native worker_view."""
    address: str = view["address"]
    host, _, port = address.rpartition(":")
    return {
        "Ip": host,
        "Port": int(port) if port.isdigit() else 0,
        "WorkerAddress": address,
        "Label": ",".join(f"{k}={v}" for k, v in sorted(view["labels"].items())),
        "Version": view["version"],
        "Starter": "sx-worker",
    }
