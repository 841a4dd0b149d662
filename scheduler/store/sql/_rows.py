"""Rows to records and records to column values, and the checks every write applies to its arguments.

Specs and workflow definitions are stored as JSON text; each distinct spec text is parsed once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from sx.processors import InstanceStatus, JobSpec, Schedule, TaskStatus, TimeType, TriggerType
from sx.processors.engine import stored_definitions
from sx.scheduler.store._records import (
    Alarm,
    Calendar,
    GroupLease,
    Instance,
    Job,
    NewInstance,
    SchedulerReplica,
    Task,
    Workflow,
    WorkflowDef,
    WorkflowInstance,
    WorkflowNode,
)

__all__ = [
    "alarm_from_row",
    "calendar_from_row",
    "check_aware",
    "check_new_instance",
    "check_page",
    "created_instance",
    "dump_spec",
    "dump_workflow_def",
    "instance_from_row",
    "job_from_row",
    "lease_from_row",
    "new_instance_values",
    "replica_from_row",
    "task_from_row",
    "utc_now",
    "wf_instance_from_row",
    "wf_node_from_row",
    "workflow_from_row",
]


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_aware(field: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{field}={value.isoformat()!r}: must be timezone-aware (UTC is stored)")


def check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValueError(f"offset={offset!r}: must be >= 0")
    if limit < 0:
        raise ValueError(f"limit={limit!r}: must be >= 0")


# -- rows to records and back -------------------------------------------------------------------------


def dump_spec(spec: JobSpec) -> tuple[str, int]:
    """The spec as JSON text, and its time type for the column."""
    data = spec.model_dump(mode="json")
    schedule = data.get("schedule")
    raw_type = schedule.get("time_type", TimeType.API) if isinstance(schedule, dict) else TimeType.API
    return json.dumps(data, separators=(",", ":"), sort_keys=True), int(raw_type)


@functools.lru_cache(maxsize=8192)
def _load_spec(text: str) -> JobSpec:
    # Specs rarely change and JobSpec is frozen: parse each distinct text once (due_jobs reads
    # thousands of jobs per tick).
    with stored_definitions():
        return JobSpec.model_validate(json.loads(text))


def job_from_row(row: sa.Row[Any]) -> Job:
    return Job(
        id=row.id,
        namespace=row.namespace,
        group_id=row.group_id,
        spec=_load_spec(row.spec),
        enabled=bool(row.enabled),
        managed=bool(row.managed),
        next_fire_time=row.next_fire_time,
        namespace_source=row.namespace_source,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _dump_upstream(data: Sequence[tuple[str, str]]) -> str | None:
    return json.dumps([list(pair) for pair in data], separators=(",", ":")) if data else None


def _load_upstream(text: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(name), str(result)) for name, result in json.loads(text)) if text else ()


def instance_from_row(row: sa.Row[Any]) -> Instance:
    return Instance(
        id=row.id,
        job_id=row.job_id,
        namespace=row.namespace,
        group_id=row.group_id,
        status=InstanceStatus(row.status),
        trigger_type=TriggerType(row.trigger_type),
        time_type=TimeType(row.time_type),
        schedule_time=row.schedule_time,
        data_time=row.data_time,
        created_at=row.created_at,
        attempt=row.attempt,
        instance_parameters=row.instance_parameters,
        wf_instance_id=row.wf_instance_id,
        start_time=row.start_time,
        end_time=row.end_time,
        worker_id=row.worker_id,
        worker_addr=row.worker_addr,
        executor=row.executor,
        result=row.result,
        progress=row.progress,
        retry_of=row.retry_of,
        timeout_alarmed=bool(row.timeout_alarmed),
        upstream_data=_load_upstream(row.upstream_data),
        rerun_of=row.rerun_of,
    )


def new_instance_values(new: NewInstance, created_at: datetime) -> dict[str, Any]:
    return {
        "job_id": new.job_id,
        "namespace": new.namespace,
        "group_id": new.group_id,
        "status": int(new.status),
        "trigger_type": int(new.trigger_type),
        "time_type": int(new.time_type),
        "schedule_time": new.schedule_time,
        "data_time": new.data_time,
        "created_at": created_at,
        "attempt": new.attempt,
        "instance_parameters": new.instance_parameters,
        "wf_instance_id": new.wf_instance_id,
        "start_time": None,
        "end_time": None,
        "worker_id": "",
        "worker_addr": "",
        "executor": "",
        "result": new.result,
        "progress": "",
        "retry_of": new.retry_of,
        "upstream_data": _dump_upstream(new.upstream_data),
        "timeout_alarmed": False,
        "rerun_of": new.rerun_of,
    }


def created_instance(instance_id: int, new: NewInstance, created_at: datetime) -> Instance:
    return Instance(
        id=instance_id,
        job_id=new.job_id,
        namespace=new.namespace,
        group_id=new.group_id,
        status=new.status,
        trigger_type=new.trigger_type,
        time_type=new.time_type,
        schedule_time=new.schedule_time.astimezone(UTC),
        data_time=new.data_time.astimezone(UTC),
        created_at=created_at,
        attempt=new.attempt,
        instance_parameters=new.instance_parameters,
        wf_instance_id=new.wf_instance_id,
        result=new.result,
        retry_of=new.retry_of,
        upstream_data=new.upstream_data,
        rerun_of=new.rerun_of,
    )


def check_new_instance(new: NewInstance, prefix: str = "") -> None:
    check_aware(f"{prefix}schedule_time", new.schedule_time)
    check_aware(f"{prefix}data_time", new.data_time)


def dump_workflow_def(definition: WorkflowDef) -> str:
    return json.dumps(
        {
            "name": definition.name,
            "description": definition.description,
            "schedule": definition.schedule.model_dump(mode="json"),
            "time_zone": definition.time_zone,
            "nodes": list(definition.nodes),
            "edges": [list(edge) for edge in definition.edges],
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def _load_workflow_def(text: str) -> WorkflowDef:
    data = json.loads(text)
    return WorkflowDef(
        name=data["name"],
        description=data.get("description", ""),
        schedule=Schedule.model_validate(data["schedule"]),
        time_zone=data.get("time_zone", ""),
        nodes=tuple(int(node) for node in data["nodes"]),
        edges=tuple((int(a), int(b)) for a, b in data.get("edges", [])),
    )


def workflow_from_row(row: sa.Row[Any]) -> Workflow:
    return Workflow(
        id=row.id,
        namespace=row.namespace,
        group_id=row.group_id,
        definition=_load_workflow_def(row.definition),
        enabled=bool(row.enabled),
        managed=bool(row.managed),
        next_fire_time=row.next_fire_time,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def wf_instance_from_row(row: sa.Row[Any]) -> WorkflowInstance:
    graph = json.loads(row.graph)
    return WorkflowInstance(
        id=row.id,
        workflow_id=row.workflow_id,
        namespace=row.namespace,
        group_id=row.group_id,
        status=InstanceStatus(row.status),
        trigger_type=TriggerType(row.trigger_type),
        schedule_time=row.schedule_time,
        nodes=tuple(int(node) for node in graph["nodes"]),
        edges=tuple((int(a), int(b)) for a, b in graph["edges"]),
        created_at=row.created_at,
        instance_parameters=row.instance_parameters,
        end_time=row.end_time,
        result=row.result,
    )


def wf_node_from_row(row: sa.Row[Any]) -> WorkflowNode:
    return WorkflowNode(
        wf_instance_id=row.wf_instance_id,
        job_id=row.job_id,
        instance_id=row.instance_id,
        status=InstanceStatus(row.status),
        result=row.result,
    )


def task_from_row(row: sa.Row[Any]) -> Task:
    return Task(
        instance_id=row.instance_id,
        task_id=row.task_id,
        name=row.name,
        status=TaskStatus(row.status),
        payload=bytes(row.payload),
        parent_id=row.parent_id,
        batch_seq=row.batch_seq,
        worker_id=row.worker_id,
        worker_addr=row.worker_addr,
        attempt=row.attempt,
        result=row.result,
        start_time=row.start_time,
        end_time=row.end_time,
    )


def calendar_from_row(row: sa.Row[Any]) -> Calendar:
    return Calendar(
        namespace=row.namespace,
        name=row.name,
        days=frozenset(date.fromisoformat(d) for d in json.loads(row.days)),
        description=row.description,
    )


def alarm_from_row(row: sa.Row[Any]) -> Alarm:
    return Alarm(
        id=row.id,
        namespace=row.namespace,
        group_id=row.group_id,
        job_id=row.job_id,
        instance_id=row.instance_id,
        kind=row.kind,
        channel=row.channel,
        message=row.message,
        delivered=bool(row.delivered),
        created_at=row.created_at,
        detail=json.loads(row.detail),
    )


def lease_from_row(row: sa.Row[Any]) -> GroupLease:
    return GroupLease(
        namespace=row.namespace,
        group_id=row.group_id,
        holder=row.holder,
        token=row.token,
        epoch=int(row.epoch),
        expires_at=row.expires_at,
        acquired_at=row.acquired_at,
        workers=row.workers,
        renewed_at=row.renewed_at,
    )


def replica_from_row(row: sa.Row[Any]) -> SchedulerReplica:
    return SchedulerReplica(
        replica_id=row.replica_id,
        grpc_address=row.grpc_address,
        http_url=row.http_url,
        presence_key=int(row.presence_key),
        expires_at=row.expires_at,
    )
