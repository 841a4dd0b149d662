"""How stored objects look on the wire: JobConfigInfo, JobInstanceDetail and the extensions' shapes."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from sx.scheduler.api._params import DATE_FORMAT
from sx.scheduler.dispatch import WorkerInfo
from sx.scheduler.store import (
    AccessKey,
    Alarm,
    Backfill,
    BackfillFire,
    Calendar,
    Group,
    Instance,
    Job,
    Namespace,
)

__all__ = [
    "access_key_view",
    "alarm_view",
    "backfill_fire_view",
    "backfill_view",
    "calendar_view",
    "format_date",
    "group_view",
    "instance_detail",
    "job_config_info",
    "namespace_view",
    "page_view",
    "worker_view",
]


def format_date(value: datetime | None, tz: tzinfo) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in ``tz``; "" when unset."""
    return value.astimezone(tz).strftime(DATE_FORMAT) if value is not None else ""


def page_view(key: str, items: list[Any], *, total: int, page_num: int, page_size: int) -> dict[str, Any]:
    """A listing's data: ``{total, pageNum, pageSize, <key>: items}``."""
    return {"total": total, "pageNum": page_num, "pageSize": page_size, key: items}


def job_config_info(job: Job) -> dict[str, Any]:
    """GetJobInfo's data: the spec's JobConfigInfo plus status (1 enabled, 0 disabled), jobId, managed."""
    data = job.spec.to_job_config_info()
    data["jobId"] = job.id
    data["status"] = 1 if job.enabled else 0
    data["managed"] = job.managed
    if job.namespace_source is not None:
        data["namespaceSource"] = job.namespace_source
    return data


def instance_detail(instance: Instance, tz: tzinfo) -> dict[str, Any]:
    """JobInstanceDetail, dates in the job's zone; a manual re-run (triggerType 4) also names the
    instance it runs again in ``rerunOf`` (an extension)."""
    detail: dict[str, Any] = {
        "instanceId": instance.id,
        "jobId": instance.job_id,
        "status": int(instance.status),
        "startDate": format_date(instance.start_time, tz),
        "endDate": format_date(instance.end_time, tz),
        "scheduleDate": format_date(instance.schedule_time, tz),
        "dataDate": format_date(instance.data_time, tz),
        "executor": instance.executor,
        "workAddr": instance.worker_addr,
        "result": instance.result,
        "progress": instance.progress,
        "timeType": int(instance.time_type),
        "triggerType": int(instance.trigger_type),
    }
    if instance.rerun_of is not None:
        detail["rerunOf"] = instance.rerun_of
    return detail


def backfill_view(backfill: Backfill, tz: tzinfo) -> dict[str, Any]:
    """A backfill with its progress (RerunJob, GetBackfill), dates in the job's zone."""
    progress = backfill.progress
    return {
        "backfillId": backfill.id,
        "jobId": backfill.job_id,
        "workflowId": backfill.workflow_id,
        "state": backfill.state.value,
        "startDate": format_date(backfill.start_time, tz),
        "endDate": format_date(backfill.end_time, tz),
        "concurrency": backfill.concurrency,
        "skipSuccessful": backfill.skip_successful,
        "total": progress.total,
        "pending": progress.pending,
        "running": progress.running,
        "done": progress.done,
        "failed": progress.failed,
        "skipped": progress.skipped,
        "createTime": format_date(backfill.created_at, tz),
        "updateTime": format_date(backfill.updated_at, tz),
    }


def backfill_fire_view(fire: BackfillFire, tz: tzinfo) -> dict[str, Any]:
    """One fire time of a backfill: its schedule date, state and instance."""
    return {
        "scheduleDate": format_date(fire.schedule_time, tz),
        "state": fire.state.value,
        "instanceId": fire.instance_id,
    }


def namespace_view(namespace: Namespace) -> dict[str, Any]:
    return {"namespace": namespace.id, "name": namespace.name, "description": namespace.description}


def group_view(group: Group) -> dict[str, Any]:
    return {
        "namespace": group.namespace,
        "groupId": group.group_id,
        "appKey": group.app_key,
        "description": group.description,
    }


def calendar_view(calendar: Calendar) -> dict[str, Any]:
    return {
        "namespace": calendar.namespace,
        "name": calendar.name,
        "description": calendar.description,
        "days": sorted(day.isoformat() for day in calendar.days),
    }


def access_key_view(key: AccessKey, *, with_secret: bool = False) -> dict[str, Any]:
    """An access key; the secret only in the answer that created it."""
    data: dict[str, Any] = {
        "accessKeyId": key.key_id,
        "namespace": key.namespace,
        "enabled": key.enabled,
    }
    if with_secret:
        data["accessKeySecret"] = key.secret
    return data


def worker_view(worker: WorkerInfo, tz: tzinfo) -> dict[str, Any]:
    """A connected worker (ListWorkers), times in the scheduler's zone."""
    return {
        "workerId": worker.worker_id,
        "address": worker.address,
        "processors": sorted(worker.processors),
        "capacity": worker.capacity,
        "running": worker.running,
        "assigned": worker.assigned,
        "lastHeartbeat": format_date(worker.last_seen, tz),
        "connectedAt": format_date(worker.connected_at, tz),
        "draining": worker.draining,
        "version": worker.version,
        "labels": dict(worker.labels),
    }


def alarm_view(alarm: Alarm, tz: tzinfo) -> dict[str, Any]:
    """One recorded alarm (ListAlarms): ``error`` is why it was not delivered, "" when it was."""
    error = alarm.detail.get("error", "")
    return {
        "alarmId": alarm.id,
        "time": format_date(alarm.created_at, tz),
        "jobId": alarm.job_id,
        "instanceId": alarm.instance_id,
        "kind": alarm.kind,
        "channel": alarm.channel,
        "message": alarm.message,
        "delivered": alarm.delivered,
        "error": "" if alarm.delivered else str(error),
    }
